import asyncio

from django.db.models import ProtectedError
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from endpoints.models import Endpoint
from endpoints.serializers import ConnectionReportSerializer, EndpointSerializer
from engine.adapters import ConnectionReport, create_adapter
from engine.types import EngineError
from projects.api import ProjectScopedMixin
from projects.models import Role

TEST_TIMEOUT_S = 15.0


def test_connection(endpoint: Endpoint) -> ConnectionReport:
    """Ask the endpoint for its models; a failure is a report, never an exception."""
    config = endpoint.engine_config()
    # A button waits for this: never as long as a slow generation may take.
    config.timeout_s = min(config.timeout_s, TEST_TIMEOUT_S)

    async def probe() -> ConnectionReport:
        async with create_adapter(config) as adapter:
            return await adapter.test_connection()

    try:
        # Sync views run outside any event loop (WSGI, or ASGI's worker thread).
        return asyncio.run(probe())
    except EngineError as exc:  # e.g. an adapter that is no longer installed
        return ConnectionReport(ok=False, status=None, models=[], latency_ms=0.0, error=str(exc))


test_connection.__test__ = False  # not a pytest test, whatever its name (endpoints/views.py uses it)


class EndpointViewSet(ProjectScopedMixin, viewsets.ModelViewSet):
    """Endpoints of your projects; admins manage them (and their keys), editors may test them."""

    queryset = Endpoint.objects.all()
    serializer_class = EndpointSerializer
    write_role = Role.ADMIN
    action_roles = {"test": Role.EDITOR}

    def destroy(self, request: Request, *args, **kwargs) -> Response:
        endpoint = self.get_object()
        try:
            endpoint.delete()
        except ProtectedError:
            names = ", ".join(sorted(e.name for e in endpoint.experiments.all()[:10]))
            return Response(
                {"detail": f"Experiments use this endpoint ({names}); point them elsewhere first."},
                status=status.HTTP_409_CONFLICT,
            )
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request=None,
        responses={
            200: ConnectionReportSerializer,
            400: OpenApiResponse(description="What is stored cannot be used"),
        },
    )
    @action(detail=True, methods=["post"])
    def test(self, request: Request, pk: str | None = None) -> Response:
        endpoint = self.get_object()
        problems = endpoint.connection_problems()
        if problems:  # the key or a header: no request could even be made
            return Response({field: [message] for field, message in problems.items()}, status=400)
        return Response(ConnectionReportSerializer(test_connection(endpoint)).data)
