"""Receivers check each delivery's signature with the webhook's secret."""

import json

import pytest

from engine.events import Event
from tests.factories import team_project
from tests.webhook_receiver import WebhookReceiver
from webhooks.delivery import USER_AGENT, sign, verify_signature
from webhooks.models import DeliveryStatus, Webhook, WebhookDelivery
from webhooks.tasks import send_delivery


@pytest.fixture
def receiver(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    with WebhookReceiver() as receiver:
        yield receiver


def make_delivery(url: str, secret: str = "alices-secret") -> WebhookDelivery:
    webhook = Webhook.objects.create(project=team_project(), name="alice's CI", url=url, secret=secret)
    event = Event(
        7, "run.completed", experiment_id=3, sweep_id=5, run_id=11, data={"score": 0.9}, ts=1700000000.5
    )
    return WebhookDelivery.objects.create(
        webhook=webhook, event=event.type, payload=WebhookDelivery.payload_for(event)
    )


@pytest.mark.django_db
def test_the_receiver_verifies_the_signature_with_the_webhook_secret(receiver):
    delivery = make_delivery(receiver.url)
    assert send_delivery(delivery.pk) == DeliveryStatus.SUCCEEDED
    [received] = receiver.received
    assert verify_signature("alices-secret", received.body, received.headers["x-promptlooper-signature"])
    assert received.headers["x-promptlooper-signature"] == sign("alices-secret", received.body)
    assert received.headers["x-promptlooper-event"] == "run.completed"
    assert received.headers["x-promptlooper-delivery"] == str(delivery.pk)
    assert received.headers["content-type"] == "application/json"
    assert received.headers["user-agent"] == USER_AGENT


@pytest.mark.django_db
def test_the_body_is_compact_json_of_the_event(receiver):
    send_delivery(make_delivery(receiver.url).pk)
    body = receiver.received[0].body
    assert b": " not in body and b", " not in body
    assert json.loads(body) == {
        "event": "run.completed",
        "id": 7,
        "experiment_id": 3,
        "sweep_id": 5,
        "run_id": 11,
        "data": {"score": 0.9},
        "ts": 1700000000.5,
    }


@pytest.mark.django_db
def test_another_secret_does_not_verify(receiver):
    send_delivery(make_delivery(receiver.url).pk)
    [received] = receiver.received
    assert not verify_signature("bobs-secret", received.body, received.headers["x-promptlooper-signature"])


@pytest.mark.django_db
def test_a_changed_body_does_not_verify(receiver):
    send_delivery(make_delivery(receiver.url).pk)
    [received] = receiver.received
    tampered = received.body.replace(b'"score":0.9', b'"score":1.0')
    assert tampered != received.body
    assert not verify_signature("alices-secret", tampered, received.headers["x-promptlooper-signature"])


@pytest.mark.parametrize("header", [None, "", "sha256=", "sha256=00ff", "md5=abc", "sha256=ünïcode"])
def test_a_missing_or_garbled_header_does_not_verify(header):
    assert not verify_signature("alices-secret", b'{"event":"run.completed"}', header)


def test_the_signature_is_hex_hmac_sha256_of_the_raw_body():
    # Known answer from RFC 4231 test case 2 (key "Jefe").
    assert sign("Jefe", b"what do ya want for nothing?") == (
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )
