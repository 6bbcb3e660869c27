"""Deliveries: who gets an event, retries with backoff, every attempt logged, jobs safe to run twice."""

import asyncio
import time
from datetime import datetime, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from engine.events import Event
from experiments.models import Experiment
from runs.queue import wait_for_in_process_jobs
from tests.factories import make_experiment, make_project, team_project
from tests.runs.sweep_helpers import wait_until
from tests.webhook_receiver import WebhookReceiver
from webhooks.delivery import verify_signature
from webhooks.models import DeliveryStatus, Webhook, WebhookDelivery, forget_subscriptions
from webhooks.tasks import dispatch_event, enqueue_delivery, send_delivery


@pytest.fixture(autouse=True)
def fast_retries(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_RETRY_BASE_S = 0.01
    forget_subscriptions()  # another test's webhooks were rolled back
    yield
    forget_subscriptions()


@pytest.fixture
def receiver():
    with WebhookReceiver() as receiver:
        yield receiver


def make_webhook(url: str, events: list[str] | None = None, **fields) -> Webhook:
    return Webhook.objects.create(
        project=team_project(), url=url, events=events or [], secret="alices-secret", **fields
    )


def make_delivery(url: str) -> WebhookDelivery:
    return WebhookDelivery.objects.create(
        webhook=make_webhook(url), event="sweep.completed", payload={"id": 1}
    )


def team_experiment_id() -> int:
    """An experiment of the webhooks' project: a webhook hears its own project only."""
    experiment = Experiment.objects.filter(project=team_project()).first()
    return (experiment or make_experiment(project=team_project())).pk


def event(type: str = "sweep.completed", **data) -> Event:
    return Event(42, type, experiment_id=team_experiment_id(), sweep_id=2, data=data, ts=time.time())


def deliver(d: WebhookDelivery) -> WebhookDelivery:
    """Send a delivery as the app does, retries included, and wait until it is done."""
    enqueue_delivery(d.pk)
    assert wait_for_in_process_jobs(timeout=60)
    d.refresh_from_db()
    return d


def wait_until_finished(delivery: WebhookDelivery, timeout: float = 30) -> WebhookDelivery:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        delivery.refresh_from_db()
        if delivery.status in (DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED):
            return delivery
        time.sleep(0.05)
    raise AssertionError(f"delivery {delivery.pk} still {delivery.status}")


# -- sending -------------------------------------------------------------------


def test_a_receiver_that_fails_twice_then_succeeds_gets_it_on_the_third_attempt(receiver, transactional_db):
    receiver.fail_next(2, status=500)

    d = deliver(make_delivery(receiver.url))

    assert d.status == DeliveryStatus.SUCCEEDED
    assert receiver.calls == 3
    assert d.attempts == 3
    assert [a["status_code"] for a in d.attempt_log] == [500, 500, 200]
    assert "HTTP 500" in d.attempt_log[0]["error"] and d.attempt_log[2]["error"] == ""
    assert all(a["duration_ms"] >= 0 and a["at"] for a in d.attempt_log)
    assert d.response_status == 200 and d.response_excerpt == '{"ok": true}'
    assert d.error == "" and d.finished_at is not None


def test_a_receiver_that_always_fails_gets_exactly_three_attempts(receiver, transactional_db):
    receiver.always_fail(503)

    d = deliver(make_delivery(receiver.url))

    assert d.status == DeliveryStatus.FAILED
    assert receiver.calls == 3
    assert d.attempts == 3 and len(d.attempt_log) == 3
    assert [a["status_code"] for a in d.attempt_log] == [503, 503, 503]
    assert d.response_status == 503
    assert d.response_excerpt == '{"error": "scripted failure"}'
    assert d.error.startswith("Failed after 3 attempts. Last error: HTTP 503 from the receiver")
    assert "must answer with a 2xx status" in d.error


def test_retries_wait_longer_each_time(receiver, settings, transactional_db):
    settings.WEBHOOK_RETRY_BASE_S = 0.2
    receiver.always_fail()
    d = deliver(make_delivery(receiver.url))
    at = [datetime.fromisoformat(a["at"]) for a in d.attempt_log]
    assert (at[1] - at[0]).total_seconds() >= 0.2 and (at[2] - at[1]).total_seconds() >= 0.4


def test_a_retry_waits_on_a_timer_not_in_a_webhook_thread(settings, transactional_db):
    settings.WEBHOOK_WORKERS = 1
    settings.WEBHOOK_RETRY_BASE_S = 5  # far longer than sending the second delivery takes
    with WebhookReceiver() as failing, WebhookReceiver() as healthy:
        failing.always_fail()
        first = make_delivery(failing.url)
        enqueue_delivery(first.pk)
        wait_until(lambda: failing.calls == 1)
        second = make_delivery(healthy.url)
        enqueue_delivery(second.pk)
        # The only webhook thread is free while the first delivery waits for its retry:
        # the second goes out before that retry (a thread asleep in it would send the
        # second only after the first's last attempt, 15 s on).
        assert wait_until_finished(second, timeout=30).status == DeliveryStatus.SUCCEEDED
        first.refresh_from_db()
        assert first.status == DeliveryStatus.PENDING and first.attempts == 1 and failing.calls == 1
        # Its retry then finds the webhook switched off and ends it: one pause, not two.
        Webhook.objects.filter(pk=first.webhook_id).update(active=False)
        assert wait_for_in_process_jobs(timeout=60)
    first.refresh_from_db()
    assert first.status == DeliveryStatus.FAILED and failing.calls == 1


def test_a_receiver_that_does_not_answer_in_time_counts_as_a_failed_attempt(
    receiver, settings, transactional_db
):
    settings.WEBHOOK_TIMEOUT_S = 0.3
    receiver.hang_next(1)

    d = deliver(make_delivery(receiver.url))

    assert d.status == DeliveryStatus.SUCCEEDED
    first, second = d.attempt_log
    assert first["status_code"] is None and "No answer within 0.3 s (WEBHOOK_TIMEOUT_S)" in first["error"]
    assert first["duration_ms"] >= 250
    assert second["status_code"] == 200


def test_a_receiver_that_is_down_is_a_readable_failure(settings, transactional_db):
    with WebhookReceiver() as gone:
        url = gone.url

    d = deliver(make_delivery(url))

    assert d.status == DeliveryStatus.FAILED
    assert d.attempts == 3
    assert "Could not reach" in d.error and "Check that the receiver is up" in d.error


def test_a_redirect_is_not_followed(receiver, transactional_db):
    receiver.always_fail(302)
    d = deliver(make_delivery(receiver.url))
    assert d.status == DeliveryStatus.FAILED
    assert "redirects are not followed" in d.error


# -- safe to run twice ---------------------------------------------------------


@pytest.mark.django_db
def test_a_succeeded_delivery_is_not_sent_again(receiver):
    d = make_delivery(receiver.url)
    assert send_delivery(d.pk) == DeliveryStatus.SUCCEEDED
    assert send_delivery(d.pk) == "skipped: not pending"
    assert receiver.calls == 1


@pytest.mark.django_db
def test_a_delivery_another_worker_is_sending_is_left_alone(receiver):
    d = make_delivery(receiver.url)
    assert WebhookDelivery.claim(d.pk)
    assert send_delivery(d.pk) == "skipped: not pending"
    assert receiver.calls == 0


@pytest.mark.django_db
def test_a_delivery_whose_worker_died_is_taken_over_and_keeps_its_attempts(receiver):
    d = make_delivery(receiver.url)
    long_ago = timezone.now() - timedelta(hours=1)
    WebhookDelivery.objects.filter(pk=d.pk).update(
        status=DeliveryStatus.SENDING,
        claimed_at=long_ago,
        attempts=2,
        attempt_log=[{"error": "x"}, {"error": "y"}],
    )
    receiver.always_fail()

    assert send_delivery(d.pk) == DeliveryStatus.FAILED

    d.refresh_from_db()
    assert receiver.calls == 1 and d.attempts == 3 and len(d.attempt_log) == 3


@pytest.mark.django_db
def test_a_deactivated_webhook_is_not_sent_to(receiver):
    d = make_delivery(receiver.url)
    Webhook.objects.filter(pk=d.webhook_id).update(active=False)
    assert send_delivery(d.pk) == DeliveryStatus.FAILED
    assert receiver.calls == 0
    d.refresh_from_db()
    assert "deactivated" in d.error


# -- who gets an event -----------------------------------------------------------


@pytest.mark.django_db
def test_only_active_webhooks_subscribed_to_the_event_get_a_delivery():
    everything = make_webhook("https://everything.example.com/hook")
    sweeps = make_webhook("https://sweeps.example.com/hook", events=["sweep.completed"])
    runs = make_webhook("https://runs.example.com/hook", events=["run.completed"])
    make_webhook("https://paused.example.com/hook", active=False)

    assert dispatch_event(event("sweep.completed")) == 2
    assert dispatch_event(event("run.completed")) == 2
    assert dispatch_event(event("sweep.paused")) == 1

    got = sorted(WebhookDelivery.objects.values_list("webhook_id", "event"))
    assert got == sorted(
        [
            (everything.pk, "sweep.completed"),
            (sweeps.pk, "sweep.completed"),
            (everything.pk, "run.completed"),
            (runs.pk, "run.completed"),
            (everything.pk, "sweep.paused"),
        ]
    )


@pytest.mark.django_db
def test_without_webhooks_an_event_costs_no_query(django_assert_num_queries):
    completed, run_completed = event(), event("run.completed")
    with django_assert_num_queries(1):  # looks once...
        assert dispatch_event(completed) == 0
    with django_assert_num_queries(0):  # ...then trusts that for a few seconds
        for _ in range(100):
            assert dispatch_event(run_completed) == 0


@pytest.mark.django_db
def test_a_webhook_created_in_this_process_gets_the_next_event_at_once():
    assert dispatch_event(event()) == 0
    make_webhook("https://hooks.example.com/hook")
    assert dispatch_event(event()) == 1


@pytest.mark.django_db
def test_a_webhook_deleted_elsewhere_gets_nothing_even_while_cached():
    webhook = make_webhook("https://hooks.example.com/hook")
    assert dispatch_event(event()) == 1
    Webhook.objects.filter(pk=webhook.pk).delete()  # a queryset delete: the cache is not told
    assert dispatch_event(event()) == 0


@pytest.mark.django_db
def test_a_misspelt_event_type_fails_validation():
    with pytest.raises(ValidationError) as error:
        Webhook(
            project=team_project(), url="https://hooks.example.com/", events=["sweep.complete"]
        ).full_clean()
    [message] = error.value.message_dict["events"]
    assert "sweep.complete" in message and "sweep.completed" in message


# -- the job runs where jobs run -------------------------------------------------


def test_in_process_the_delivery_is_sent_after_commit(receiver, transactional_db):
    make_webhook(receiver.url, events=["sweep.completed"])

    assert dispatch_event(event(best_score=0.93)) == 1
    assert wait_for_in_process_jobs(timeout=30)

    d = WebhookDelivery.objects.get()
    assert d.status == DeliveryStatus.SUCCEEDED, d.error
    [received] = receiver.received
    assert verify_signature("alices-secret", received.body, received.headers["x-promptlooper-signature"])
    assert b'"best_score":0.93' in received.body


def test_events_published_from_async_code_are_dispatched(receiver, transactional_db):
    # Run events are published on an event loop, where the ORM may not run: the
    # bus hands them to its publisher thread, which dispatches them.
    from runs.events import event_bus, flush_publisher

    make_webhook(receiver.url)

    async def publish() -> None:
        event_bus().publish("run.completed", experiment_id=experiment_id, run_id=7)

    experiment_id = team_experiment_id()
    asyncio.run(publish())
    assert flush_publisher(timeout=10)
    assert wait_for_in_process_jobs(timeout=30)
    assert WebhookDelivery.objects.get().status == DeliveryStatus.SUCCEEDED


def test_an_rq_worker_process_sends_the_delivery(receiver, distributed):
    distributed.env["WEBHOOK_RETRY_BASE_S"] = "0"
    distributed.start(1)
    make_webhook(receiver.url)
    receiver.fail_next(1)

    assert dispatch_event(event()) == 1

    d = wait_until_finished(WebhookDelivery.objects.get())
    assert d.status == DeliveryStatus.SUCCEEDED, d.error
    assert d.attempts == 2 and [a["status_code"] for a in d.attempt_log] == [500, 200]
    assert receiver.calls == 2


@pytest.mark.django_db
def test_a_webhook_hears_its_own_projects_events_only():
    ours = make_webhook("https://ours.example.com/hook")
    theirs_project = make_project("Theirs")
    Webhook.objects.create(project=theirs_project, url="https://theirs.example.com/hook")
    theirs_experiment = make_experiment(project=theirs_project)
    assert dispatch_event(event()) == 1
    assert WebhookDelivery.objects.get().webhook == ours
    other = Event(
        43, "sweep.completed", experiment_id=theirs_experiment.pk, sweep_id=2, data={}, ts=time.time()
    )
    assert dispatch_event(other) == 1
    assert (
        WebhookDelivery.objects.exclude(webhook=ours).get().webhook.url == "https://theirs.example.com/hook"
    )
    unknown = Event(44, "sweep.completed", experiment_id=None, sweep_id=None, data={}, ts=time.time())
    assert dispatch_event(unknown) == 0


# -- errors nobody foresaw -------------------------------------------------------


def test_an_unexpected_error_is_a_failed_attempt_and_the_delivery_ends_failed(transactional_db):
    # The URL field accepts five-digit ports; this one only fails when the sender reads it.
    d = deliver(make_delivery("http://127.0.0.1:99999/hook"))

    assert d.status == DeliveryStatus.FAILED
    assert d.attempts == 3 and len(d.attempt_log) == 3
    assert d.error.startswith(
        "Failed after 3 attempts. Last error: Unexpected error while sending (ValueError"
    )
    assert "Port out of range" in d.error and "Check the webhook's URL" in d.error


@pytest.mark.django_db
def test_a_claim_counts_as_activity_for_the_recovery(receiver):
    from webhooks.tasks import recover_deliveries

    d = make_delivery(receiver.url)
    WebhookDelivery.objects.filter(pk=d.pk).update(updated_at=timezone.now() - timedelta(days=1))
    assert WebhookDelivery.claim(d.pk)
    # Being sent right now: the periodic recovery must not enqueue it again.
    assert recover_deliveries() == 0


def test_at_startup_a_delivery_left_sending_by_the_previous_process_is_sent(receiver, transactional_db):
    from webhooks.tasks import PROCESS_STARTED, recover_deliveries

    d = make_delivery(receiver.url)
    # Claimed a moment before the restart: well within the lease.
    just_before = PROCESS_STARTED - timedelta(seconds=1)
    WebhookDelivery.objects.filter(pk=d.pk).update(
        status=DeliveryStatus.SENDING, claimed_at=just_before, updated_at=just_before
    )

    assert recover_deliveries(startup=True) == 1
    assert wait_for_in_process_jobs(timeout=30)

    d.refresh_from_db()
    assert d.status == DeliveryStatus.SUCCEEDED and d.attempts == 1 and receiver.calls == 1
