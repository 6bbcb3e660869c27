"""Webhook deliveries have a queue (and threads) of their own: a dead receiver
and its retries never slow a sweep down."""

import time

import pytest

from runs.models import ResponseCache, Sweep, SweepStatus
from runs.queue import wait_for_in_process_jobs
from runs.sweeps import SweepRequest, launch_sweep
from tests.factories import make_endpoint, make_experiment, team_project
from tests.runs.sweep_helpers import wait_for_sweep
from tests.webhook_receiver import WebhookReceiver
from webhooks.models import DeliveryStatus, Webhook, WebhookDelivery, forget_subscriptions

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def webhook_settings(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_RETRY_BASE_S = 1
    forget_subscriptions()
    yield
    forget_subscriptions()


def timed_sweep(experiment) -> tuple[float, Sweep]:
    """Wall time of a fresh sweep (nothing in the cache) from launch to its end, and the sweep."""
    ResponseCache.objects.all().delete()
    started = time.monotonic()
    sweep = wait_for_sweep(launch_sweep(experiment, SweepRequest(type="grid")))
    assert sweep.status == SweepStatus.COMPLETED
    return time.monotonic() - started, sweep


def test_a_dead_receiver_does_not_slow_the_next_sweep(llm_stub, settings):
    llm_stub.latency_ms = 50
    experiment = make_experiment(make_endpoint(base_url=llm_stub.base_url))
    without, _ = timed_sweep(experiment)
    with WebhookReceiver() as gone:
        dead_url = gone.url  # nothing listens there any more
    Webhook.objects.create(project=experiment.project, url=dead_url, events=[])
    timed_sweep(experiment)  # leaves many failing deliveries behind, waiting for retries

    with_dead_receiver, sweep = timed_sweep(experiment)

    # When the sweep ended, its own deliveries had failed once and were still waiting
    # for their retries: the sweep went on without waiting out a single retry pause.
    its_deliveries = WebhookDelivery.objects.filter(payload__sweep_id=sweep.pk)
    waiting = its_deliveries.filter(status=DeliveryStatus.PENDING, attempts__gte=1)
    assert waiting.exists(), list(its_deliveries.values_list("status", "attempts"))
    # Nor did the earlier sweep's retries, meanwhile, hold it up: one pause (1 s) or more
    # inside the sweep would show. A slower first sweep (a cold start) is no matter.
    assert with_dead_receiver < without + settings.WEBHOOK_RETRY_BASE_S, (without, with_dead_receiver)
    assert wait_for_in_process_jobs(timeout=60)
    assert set(WebhookDelivery.objects.values_list("attempts", flat=True)) == {3}


def test_a_delivery_whose_retry_timer_died_with_its_process_is_sent_after_a_restart(settings):
    from webhooks.tasks import recover_deliveries

    with WebhookReceiver() as receiver:
        webhook = Webhook.objects.create(project=team_project(), url=receiver.url, events=[])
        waiting = WebhookDelivery.objects.create(webhook=webhook, event="sweep.completed", attempts=1)
        sent = WebhookDelivery.objects.create(webhook=webhook, event="sweep.completed", status="succeeded")

        assert recover_deliveries() == 0  # not yet overdue: its timer may still be alive
        assert recover_deliveries(startup=True) == 1
        assert wait_for_in_process_jobs(timeout=30)

    waiting.refresh_from_db()
    assert waiting.status == DeliveryStatus.SUCCEEDED and waiting.attempts == 2
    # The receiver got the waiting delivery once, and the one already sent not again.
    assert [r.headers["x-promptlooper-delivery"] for r in receiver.received] == [str(waiting.pk)]
    sent.refresh_from_db()
    assert sent.status == DeliveryStatus.SUCCEEDED and sent.attempts == 0
