from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from projects.api import ProjectScopedMixin
from projects.models import Role
from webhooks.models import Webhook
from webhooks.serializers import WebhookCreatedSerializer, WebhookDeliverySerializer, WebhookSerializer


class WebhookViewSet(ProjectScopedMixin, viewsets.ModelViewSet):
    """Your projects' webhooks: members read them and their deliveries; admins manage them."""

    queryset = Webhook.objects.all()
    serializer_class = WebhookSerializer
    write_role = Role.ADMIN

    @extend_schema(responses={201: WebhookCreatedSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        webhook = serializer.save()
        data = WebhookCreatedSerializer(webhook, context=self.get_serializer_context()).data
        return Response(data, status=status.HTTP_201_CREATED)

    @extend_schema(responses=WebhookDeliverySerializer(many=True))
    @action(detail=True, methods=["get"])
    def deliveries(self, request: Request, pk: str | None = None) -> Response:
        webhook = self.get_object()
        page = self.paginate_queryset(
            webhook.deliveries.select_related("webhook").order_by("-created_at", "-id")
        )
        context = {**self.get_serializer_context(), "member_role": webhook.member_role}
        return self.get_paginated_response(WebhookDeliverySerializer(page, many=True, context=context).data)
