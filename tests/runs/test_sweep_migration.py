"""Sweep moved from experiments to runs (runs 0006, experiments 0008): a sweep made
before the move is the same sweep after it, its runs still point at it, and what was
granted on sweeps (permissions hang on the content type row) still holds."""

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("experiments", "0007_experiment_sweep_defaults"), ("runs", "0005_run_aggregates")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def migrate_to_the_end() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    ContentType.objects.clear_cache()


@pytest.mark.django_db(transaction=True)
def test_a_sweep_made_before_the_move_survives_it_with_its_runs_and_permissions():
    old = migrate(BEFORE)
    # Going back put the content type row where an installation from before has it
    # (auth and contenttypes are at their latest: their own models do).
    ContentType.objects.clear_cache()
    sweep_type = ContentType.objects.get(app_label="experiments", model="sweep")
    ann = User.objects.create(username="ann")
    ann.user_permissions.add(Permission.objects.get(content_type=sweep_type, codename="change_sweep"))
    project = old.get_model("projects", "Project").objects.create(name="Team")
    experiment = old.get_model("experiments", "Experiment").objects.create(
        name="Before the move", project=project, pipeline=[{"name": "a", "user": "hi"}]
    )
    sweep = old.get_model("experiments", "Sweep").objects.create(
        experiment=experiment, status="paused", total_runs=1, tokens_used=42, config={"workers": 2}
    )
    run = old.get_model("runs", "Run").objects.create(
        experiment=experiment, sweep_id=sweep.pk, config={}, config_hash="a" * 64
    )

    migrate_to_the_end()

    from runs.models import Run, Sweep, SweepStatus

    moved = Sweep.objects.get(pk=sweep.pk)
    assert (moved.status, moved.tokens_used, moved.config) == (SweepStatus.PAUSED, 42, {"workers": 2})
    assert moved.experiment_id == experiment.pk and list(moved.runs.all()) == [Run.objects.get(pk=run.pk)]
    assert ContentType.objects.get_for_model(Sweep).pk == sweep_type.pk
    assert not ContentType.objects.filter(app_label="experiments", model="sweep").exists()
    assert User.objects.get(username="ann").has_perm("runs.change_sweep")
    assert Permission.objects.filter(content_type=sweep_type, codename="change_sweep").count() == 1
