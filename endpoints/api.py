from django.db.models import ProtectedError
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from endpoints.models import Endpoint
from endpoints.serializers import ConnectionReportSerializer, EndpointSerializer
from projects.api import ProjectScopedMixin
from projects.models import Role


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
        report = endpoint.test_connection()
        if report["problems"]:  # the key or a header: no request could even be made
            return Response({field: [message] for field, message in report["problems"].items()}, status=400)
        return Response(ConnectionReportSerializer(report).data)
