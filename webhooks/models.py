import secrets

from django.db import models


def new_secret() -> str:
    return secrets.token_hex(32)


class Webhook(models.Model):
    """Tells another system about sweep and run events, signed with `secret`."""

    name = models.CharField(max_length=100, blank=True)
    url = models.URLField(max_length=500)
    events = models.JSONField(default=list, help_text='Event types, e.g. ["sweep.completed"]; [] = all.')
    secret = models.CharField(max_length=128, default=new_secret)
    active = models.BooleanField(default=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name or self.url

    def wants(self, event_type: str) -> bool:
        return self.active and (not self.events or event_type in self.events)


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class WebhookDelivery(models.Model):
    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=50)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    response_status = models.PositiveIntegerField(null=True, blank=True)
    response_excerpt = models.TextField(blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"
        indexes = [models.Index(fields=["webhook", "-created_at"]), models.Index(fields=["status"])]

    def __str__(self) -> str:
        return f"{self.event} → {self.webhook} ({self.status})"
