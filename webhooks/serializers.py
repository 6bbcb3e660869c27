from django.conf import settings
from rest_framework import serializers

from engine.events import EventType
from projects.models import Role
from projects.serializers import ProjectOwnedSerializer
from webhooks import delivery
from webhooks.models import Webhook, WebhookDelivery


class WebhookSerializer(ProjectOwnedSerializer):
    """The secret is write-only here; only the response to a create shows it
    (WebhookCreatedSerializer). Left out, one is generated. A webhook hears the
    events of its own project's experiments only."""

    create_role = Role.ADMIN

    events = serializers.ListField(
        child=serializers.ChoiceField(choices=[e.value for e in EventType]),
        required=False,
        help_text="Event types to deliver; [] = all.",
    )
    secret = serializers.CharField(
        write_only=True, required=False, min_length=16, max_length=128, help_text="HMAC-SHA256 signing key."
    )

    class Meta:
        model = Webhook
        fields = ["id", "project", "name", "url", "events", "secret", "active", "created_at", "updated_at"]

    def validate_url(self, value: str) -> str:
        problem = delivery.url_problem(value, allow_private=settings.WEBHOOK_ALLOW_PRIVATE)
        if problem:
            raise serializers.ValidationError(problem)
        return value


class WebhookCreatedSerializer(WebhookSerializer):
    secret = serializers.CharField(read_only=True, help_text="Shown once: store it to verify signatures.")


class WebhookDeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event",
            "payload",
            "status",
            "attempts",
            "attempt_log",
            "response_status",
            "response_excerpt",
            "error",
            "created_at",
            "finished_at",
        ]
        read_only_fields = fields
