"""Webhook jobs: create deliveries for an event, then send each one (safe to run twice)."""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime, timedelta

from django.utils import timezone

from engine.events import Event
from runs.queue import RetryJob, distributed, enqueue
from webhooks.delivery import MAX_ATTEMPTS, Attempt, attempt_delivery, backoff_s, lease_s
from webhooks.models import DeliveryStatus, Webhook, WebhookDelivery

logger = logging.getLogger(__name__)
# Claims made before this moment belong to an earlier process (apps import this module at start).
PROCESS_STARTED = timezone.now()


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
        enqueue_delivery(delivery.pk)
    return len(deliveries)


def enqueue_delivery(delivery_id: int) -> None:
    """On the webhooks queue, never a sweep's: retries wait on a timer (in-process)
    or rq's scheduler, not in a sleeping worker."""
    retry_in = [backoff_s(n, jitter=random.random()) for n in range(MAX_ATTEMPTS - 1)]
    enqueue(send_delivery, delivery_id, queue="webhooks", retry_in=retry_in)


def send_delivery(delivery_id: int) -> str:
    """One attempt at POSTing a delivery, logged. A failed attempt that may be
    retried hands the delivery back and raises RetryJob: the queue runs the job
    again after the next backoff interval."""
    if not WebhookDelivery.claim(delivery_id):
        return "skipped: not pending"
    delivery = WebhookDelivery.objects.select_related("webhook").get(pk=delivery_id)
    if not delivery.webhook.active:
        delivery.finish(False, "Not sent: the webhook was deactivated before this delivery went out.")
        return str(delivery.status)
    attempt = _attempt(delivery)
    delivery.record_attempt(attempt)
    # A delivery taken over from a dead worker keeps the attempts already made.
    if attempt.ok or attempt.permanent or delivery.attempts >= MAX_ATTEMPTS:
        delivery.finish(attempt.ok, "" if attempt.ok else _final_error(delivery))
        return str(delivery.status)
    delivery.release()
    raise RetryJob(f"Delivery {delivery_id}: attempt {delivery.attempts} failed: {attempt.error}")


def _attempt(delivery: WebhookDelivery) -> Attempt:
    """One attempt; an error nobody foresaw is a failed attempt too (retried like any
    other, counted toward MAX_ATTEMPTS), never a delivery left "sending"."""
    started_at = datetime.now(UTC)
    try:
        body = delivery.body()
        return attempt_delivery(delivery.webhook.url, body, delivery.headers(body))
    except Exception as exc:
        logger.exception("Webhook delivery %s: unexpected error", delivery.pk)
        duration_ms = round((datetime.now(UTC) - started_at).total_seconds() * 1000)
        return Attempt(
            started_at=started_at,
            duration_ms=duration_ms,
            error=(
                f"Unexpected error while sending ({type(exc).__name__}: {exc}). Check the webhook's URL; "
                "if it looks right, the server log has the details."
            ),
        )


def _final_error(delivery: WebhookDelivery) -> str:
    tries = "attempt" if delivery.attempts == 1 else "attempts"
    return f"Failed after {delivery.attempts} {tries}. Last error: {delivery.error}"


def recover_deliveries(startup: bool = False) -> int:
    """Enqueue again the deliveries whose sender died: a retry timer lost with its
    process, a worker killed mid-attempt. At a single-machine server's start every
    unfinished delivery is such a one (claims keep a live sender's from going twice)."""
    unfinished = WebhookDelivery.objects.filter(status__in=(DeliveryStatus.PENDING, DeliveryStatus.SENDING))
    if startup and not distributed():
        # This process is the only sender and has just started: what an earlier process
        # was sending, it will never finish. Hand it back so the claim takes it.
        unfinished.filter(status=DeliveryStatus.SENDING, claimed_at__lt=PROCESS_STARTED).update(
            status=DeliveryStatus.PENDING, claimed_at=None, updated_at=timezone.now()
        )
    else:
        longest_wait = sum(backoff_s(n, jitter=1.0) for n in range(MAX_ATTEMPTS - 1))
        unfinished = unfinished.filter(
            updated_at__lt=timezone.now() - timedelta(seconds=lease_s() + longest_wait)
        )
    ids = list(unfinished.values_list("id", flat=True)[:1000])
    for delivery_id in ids:
        enqueue_delivery(delivery_id)
    return len(ids)
