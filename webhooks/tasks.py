"""Webhook jobs: create deliveries for an event, then send each one (safe to run twice)."""

from __future__ import annotations

import random
import time

from engine.events import Event
from runs.queue import enqueue
from webhooks.delivery import MAX_ATTEMPTS, attempt_delivery, backoff_s
from webhooks.models import Webhook, WebhookDelivery


def dispatch_event(event: Event) -> int:
    """One delivery per active webhook that wants `event.type`, each sent by a job.

    Returns how many were created. Without a matching webhook it costs no query
    (beyond one every few seconds). Called from the event publisher's thread
    (runs/events.py), never on an event loop, so it may use the ORM.
    """
    if event.experiment_id is None or not Webhook.anyone_may_want(event.type):
        return 0
    # The cached hint only says whether to look; the table says who gets the event:
    # the webhooks of the experiment's own project, nobody else's.
    candidates = Webhook.objects.filter(active=True, project__experiments=event.experiment_id)
    webhooks = [w for w in candidates.only("id", "events", "active") if w.wants(event.type)]
    if not webhooks:
        return 0
    payload = WebhookDelivery.payload_for(event)
    deliveries = WebhookDelivery.objects.bulk_create(
        [WebhookDelivery(webhook=w, event=str(event.type), payload=payload) for w in webhooks]
    )
    for delivery in deliveries:
        enqueue(send_delivery, delivery.pk, queue="webhooks")
    return len(deliveries)


def send_delivery(delivery_id: int) -> str:
    """POST one delivery: up to MAX_ATTEMPTS tries with backoff, each one logged."""
    if not WebhookDelivery.claim(delivery_id):
        return "skipped: not pending"
    delivery = WebhookDelivery.objects.select_related("webhook").get(pk=delivery_id)
    if not delivery.webhook.active:
        delivery.finish(False, "Not sent: the webhook was deactivated before this delivery went out.")
        return str(delivery.status)
    body, succeeded = delivery.body(), False
    # A delivery taken over from a dead worker keeps the attempts already made.
    while delivery.attempts < MAX_ATTEMPTS and not succeeded:
        if delivery.attempts:
            time.sleep(backoff_s(delivery.attempts - 1, jitter=random.random()))
        attempt = attempt_delivery(delivery.webhook.url, body, delivery.headers(body))
        delivery.record_attempt(attempt)
        succeeded = attempt.ok
        if attempt.permanent:
            break
    delivery.finish(succeeded, _final_error(delivery) if not succeeded else "")
    return str(delivery.status)


def _final_error(delivery: WebhookDelivery) -> str:
    tries = "attempt" if delivery.attempts == 1 else "attempts"
    return f"Failed after {delivery.attempts} {tries}. Last error: {delivery.error}"
