"""The REST API under /api/: one router, the OpenAPI schema and its docs.

Every route, the schema and the docs included, refuses anonymous callers with
401 (token authentication comes first, so the answer carries WWW-Authenticate).
"""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import IsAuthenticated
from rest_framework.routers import DefaultRouter, SimpleRouter
from rest_framework.urlpatterns import format_suffix_patterns

from endpoints.api import EndpointViewSet
from experiments.api import ExperimentViewSet
from projects.api import ProjectViewSet
from runs.api import CacheViewSet, ExperimentRunsViewSet, RunViewSet, SweepViewSet
from webhooks.api import WebhookViewSet

router = DefaultRouter()
router.register("projects", ProjectViewSet, basename="project")
router.register("endpoints", EndpointViewSet, basename="endpoint")
router.register("experiments", ExperimentViewSet, basename="experiment")
router.register("sweeps", SweepViewSet, basename="sweep")
router.register("runs", RunViewSet, basename="run")
router.register("webhooks", WebhookViewSet, basename="webhook")
router.register("cache", CacheViewSet, basename="cache")

# An experiment's sweep and result routes (/experiments/{id}/sweep/, .../report/, ...)
# live with the runs: a router of their own under the same prefix and route names.
experiment_runs = SimpleRouter()
experiment_runs.register("experiments", ExperimentRunsViewSet, basename="experiment")

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(permission_classes=[IsAuthenticated]), name="api-schema"),
    path(
        "docs/",
        SpectacularSwaggerView.as_view(url_name="api-schema", permission_classes=[IsAuthenticated]),
        name="api-docs",
    ),
    *router.urls,
    *format_suffix_patterns(experiment_runs.urls),
]
