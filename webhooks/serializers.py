from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import URLValidator
from rest_framework import serializers

from engine.events import EventType
from projects.models import Role
from projects.serializers import ProjectOwnedSerializer
from webhooks import delivery
from webhooks.models import Webhook, WebhookDelivery


def masked_url(url: str) -> str:
    """What a non-admin sees of a webhook's URL: many (Slack's, Discord's) are secrets
    in themselves, the path being the credential. "https://hooks.slack.com/…"."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "…"
    return f"{parts.scheme}://{host}{port}/…"


def shows_full_url(instance: Any, context: dict[str, Any], webhook: Webhook) -> bool:
    """Only the project's admins (who may change the URL) read it whole."""
    role = getattr(instance, "member_role", None) or context.get("member_role")
    request = context.get("request")
    if role is None and request is not None:
        role = webhook.project.role_of(request.user)
    return role is not None and Role(role).allows(Role.ADMIN)


class WebhookSerializer(ProjectOwnedSerializer):
    """The secret is write-only here; only the response to a create shows it
    (WebhookCreatedSerializer). Left out, one is generated. A webhook hears the
    events of its own project's experiments only. Below admin, `url` is shown as
    scheme://host/… only: a hook's URL is often its credential."""

    create_role = Role.ADMIN

    events = serializers.ListField(
        child=serializers.ChoiceField(choices=[e.value for e in EventType]),
        required=False,
        help_text="Event types to deliver; [] = all.",
    )
    # A CharField checked as a URL in validate_url, so the schema does not promise
    # format "uri" to readers who get the masked form.
    url = serializers.CharField(
        max_length=500,
        help_text="Where deliveries are POSTed. Below admin it reads as scheme://host/… only.",
    )
    secret = serializers.CharField(
        write_only=True, required=False, min_length=16, max_length=128, help_text="HMAC-SHA256 signing key."
    )

    class Meta:
        model = Webhook
        fields = ["id", "project", "name", "url", "events", "secret", "active", "created_at", "updated_at"]

    def validate_url(self, value: str) -> str:
        try:
            URLValidator(schemes=["http", "https"])(value)
        except DjangoValidationError:
            raise serializers.ValidationError("Enter a valid http:// or https:// URL.") from None
        problem = delivery.url_problem(value, allow_private=settings.WEBHOOK_ALLOW_PRIVATE)
        if problem:
            raise serializers.ValidationError(problem)
        return value

    def to_representation(self, instance: Webhook) -> dict[str, Any]:
        data = super().to_representation(instance)
        if not shows_full_url(instance, self.context, instance):
            data["url"] = masked_url(instance.url)
        return data


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

    def to_representation(self, instance: WebhookDelivery) -> dict[str, Any]:
        data = super().to_representation(instance)
        url = instance.webhook.url
        if shows_full_url(None, self.context, instance.webhook) or not url:
            return data
        # Errors quote the URL ("Could not reach https://..."): below admin they quote its mask.
        hidden = masked_url(url)
        data["error"] = data["error"].replace(url, hidden)
        data["attempt_log"] = [
            {**entry, "error": entry["error"].replace(url, hidden)}
            if isinstance(entry, dict) and isinstance(entry.get("error"), str)
            else entry
            for entry in data["attempt_log"] or []
        ]
        return data
