import json
import secrets
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.utils import timezone

from engine.events import Event, EventType
from webhooks import delivery

# How long a process trusts its copy of the active webhooks' subscriptions before
# asking the database again. Saves and deletes in this process clear it at once.
SUBSCRIPTIONS_TTL_S = 5.0
_subscriptions: tuple[float, list[list[str]]] | None = None  # (expires at, events of each active webhook)


def new_secret() -> str:
    return secrets.token_hex(32)


class Webhook(models.Model):
    """Tells another system about sweep and run events, signed with `secret`."""

    PROJECT_PATH = "project"

    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="webhooks")
    name = models.CharField(max_length=100, blank=True)
    url = models.URLField(max_length=500)
    events = models.JSONField(
        default=list, blank=True, help_text='Event types, e.g. ["sweep.completed"]; [] = all.'
    )
    secret = models.CharField(max_length=128, default=new_secret)
    active = models.BooleanField(default=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name or self.url

    def clean(self) -> None:
        # Only what the URL itself says: DNS answers can change, so names are
        # checked again on every delivery (see delivery.resolve_destination).
        errors = {}
        problem = delivery.url_problem(self.url, allow_private=settings.WEBHOOK_ALLOW_PRIVATE)
        if problem:
            errors["url"] = problem
        unknown = self.unknown_events()
        if unknown:
            known = ", ".join(EventType)
            errors["events"] = f"Unknown event type(s): {', '.join(unknown)}. Choose from: {known}; [] = all."
        if errors:
            raise ValidationError(errors)

    def unknown_events(self) -> list[str]:
        if not isinstance(self.events, list):
            return [repr(self.events)]
        return [str(e) for e in self.events if e not in set(EventType)]

    def save(self, *args: Any, **kwargs: Any) -> None:
        super().save(*args, **kwargs)
        forget_subscriptions()

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        result = super().delete(*args, **kwargs)
        forget_subscriptions()
        return result

    def wants(self, event_type: str) -> bool:
        return self.active and (not self.events or event_type in self.events)

    @classmethod
    def anyone_may_want(cls, event_type: str) -> bool:
        """A cached hint, a query every few seconds at most: False means no delivery is needed."""
        global _subscriptions
        known = cls.cached_interest(event_type)
        if known is not None:
            return known
        events = list(cls.objects.filter(active=True).values_list("events", flat=True))
        _subscriptions = (time.monotonic() + SUBSCRIPTIONS_TTL_S, events)
        return cls.cached_interest(event_type) or False

    @staticmethod
    def cached_interest(event_type: str) -> bool | None:
        """The hint without touching the database: None when it has expired."""
        cached = _subscriptions
        if cached is None or cached[0] < time.monotonic():
            return None
        return any(not wanted or event_type in wanted for wanted in cached[1])


def forget_subscriptions() -> None:
    global _subscriptions
    _subscriptions = None


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    SENDING = "sending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class WebhookDelivery(models.Model):
    PROJECT_PATH = "webhook__project"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=50)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    attempt_log = models.JSONField(
        default=list, blank=True, help_text="One entry per attempt: at, status_code, error, duration_ms."
    )
    response_status = models.PositiveIntegerField(null=True, blank=True)
    response_excerpt = models.TextField(blank=True)
    error = models.TextField(blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"
        indexes = [models.Index(fields=["webhook", "-created_at"]), models.Index(fields=["status"])]

    def __str__(self) -> str:
        return f"{self.event} → {self.webhook} ({self.status})"

    @staticmethod
    def payload_for(event: Event) -> dict[str, Any]:
        payload = {
            "event": str(event.type),
            "id": event.id,
            "experiment_id": event.experiment_id,
            "sweep_id": event.sweep_id,
            "run_id": event.run_id,
            "data": event.data,
            "ts": event.ts,
        }
        # UUIDs, decimals and datetimes become the strings the receiver will see.
        return json.loads(json.dumps(payload, cls=DjangoJSONEncoder))

    @classmethod
    def claim(cls, delivery_id: int) -> bool:
        """Take a pending delivery, or one whose sender died; False if it is done or being sent."""
        now = timezone.now()
        stale = now - timedelta(seconds=delivery.lease_s())
        claimable = Q(status=DeliveryStatus.PENDING) | Q(status=DeliveryStatus.SENDING, claimed_at__lt=stale)
        return bool(
            cls.objects.filter(claimable, pk=delivery_id).update(
                # updated_at too: .update() skips auto_now, and the recovery
                # leaves alone what moved within the lease.
                status=DeliveryStatus.SENDING,
                claimed_at=now,
                updated_at=now,
            )
        )

    def body(self) -> bytes:
        return delivery.encode_body(self.payload)

    def headers(self, body: bytes) -> dict[str, str]:
        return delivery.signed_headers(self.webhook.secret, body, event=self.event, delivery_id=self.pk)

    def record_attempt(self, attempt: delivery.Attempt) -> None:
        self.attempts += 1
        self.attempt_log = [*self.attempt_log, attempt.log_entry()]
        self.response_status = attempt.status_code
        self.response_excerpt = attempt.excerpt
        self.error = attempt.error
        self.save(
            update_fields=[
                "attempts",
                "attempt_log",
                "response_status",
                "response_excerpt",
                "error",
                "updated_at",
            ]
        )

    def release(self) -> None:
        """Back to pending, for the retry to claim."""
        WebhookDelivery.objects.filter(pk=self.pk, status=DeliveryStatus.SENDING).update(
            status=DeliveryStatus.PENDING, claimed_at=None, updated_at=timezone.now()
        )
        self.status = DeliveryStatus.PENDING

    def finish(self, succeeded: bool, error: str = "") -> None:
        self.status = DeliveryStatus.SUCCEEDED if succeeded else DeliveryStatus.FAILED
        self.error = "" if succeeded else (error or self.error)
        self.finished_at = timezone.now()
        self.save(update_fields=["status", "error", "finished_at", "updated_at"])
