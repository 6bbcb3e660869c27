"""The server-rendered pages (all behind the login)."""

from django.urls import path

from endpoints import views as endpoints
from experiments import views as experiments
from projects import views as projects
from runs import views as runs

app_name = "ui"

urlpatterns = [
    path("", runs.dashboard, name="dashboard"),
    # projects
    path("projects/", projects.project_list, name="project_list"),
    path("projects/switch/", projects.switch_project, name="switch_project"),
    path("projects/<int:pk>/members/", projects.members, name="members"),
    path("projects/<int:pk>/members/<int:user_id>/", projects.member_change, name="member_change"),
    # endpoints
    path("endpoints/", endpoints.endpoint_list, name="endpoint_list"),
    path("endpoints/new/", endpoints.endpoint_create, name="endpoint_create"),
    path("endpoints/<int:pk>/edit/", endpoints.endpoint_edit, name="endpoint_edit"),
    path("endpoints/<int:pk>/test/", endpoints.endpoint_test, name="endpoint_test"),
    # experiments
    path("experiments/new/", experiments.experiment_create, name="experiment_create"),
    path("experiments/check-template/", experiments.check_template_view, name="check_template"),
    path("experiments/<int:pk>/", runs.experiment_detail, name="experiment_detail"),
    path("experiments/<int:pk>/edit/", experiments.experiment_edit, name="experiment_edit"),
    path("experiments/<int:pk>/dataset/", experiments.dataset, name="dataset"),
    path("experiments/<int:pk>/dataset/import/", experiments.dataset_import, name="dataset_import"),
    path(
        "experiments/<int:pk>/dataset/import/confirm/",
        experiments.dataset_import_confirm,
        name="dataset_import_confirm",
    ),
    path("experiments/<int:pk>/dataset/<int:item_pk>/", experiments.dataset_item_edit, name="dataset_item"),
    path(
        "experiments/<int:pk>/dataset/<int:item_pk>/delete/",
        experiments.dataset_item_delete,
        name="dataset_item_delete",
    ),
    path("experiments/<int:pk>/export.<str:fmt>", runs.export_config, name="export"),
    path("experiments/<int:pk>/report/", runs.report, name="report"),
    # sweeps and runs
    path("experiments/<int:pk>/launch/", runs.launch, name="launch"),
    path("experiments/<int:pk>/leaderboard/", runs.leaderboard_page, name="leaderboard"),
    path("experiments/<int:pk>/charts/", runs.charts, name="charts"),
    path("experiments/<int:pk>/matrix/", runs.matrix, name="matrix"),
    path("sweeps/<int:pk>/", runs.sweep_live, name="sweep"),
    path("sweeps/<int:pk>/runs.json", runs.sweep_runs_json, name="sweep_runs"),
    path("sweeps/<int:pk>/<str:action>/", runs.sweep_control, name="sweep_control"),
    path("runs/compare/", runs.compare, name="compare"),
    path("runs/<int:pk>/", runs.run_detail, name="run"),
    path("runs/<int:pk>/items/<int:item_pk>/rate/", runs.rate_item, name="rate"),
]
