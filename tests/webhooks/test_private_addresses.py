"""Webhooks may not reach loopback, private or other internal addresses unless allowed."""

import ipaddress
import socket

import pytest
from django.core.exceptions import ValidationError

from tests.factories import team_project
from tests.webhook_receiver import WebhookReceiver
from webhooks import delivery
from webhooks.models import DeliveryStatus, Webhook, WebhookDelivery
from webhooks.tasks import send_delivery

INTERNAL = [
    ("127.0.0.1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),  # cloud metadata
    ("0.0.0.0", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("100.64.0.1", "non-public"),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fe80::1", "link-local"),
    ("fc00::1", "private"),
    ("ff02::1", "multicast"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:10.0.0.1", "private"),
    ("::ffff:169.254.169.254", "link-local"),
]


@pytest.fixture
def receiver():
    with WebhookReceiver() as receiver:
        yield receiver


def make_delivery(url: str) -> WebhookDelivery:
    webhook = Webhook.objects.create(project=team_project(), url=url)
    return WebhookDelivery.objects.create(
        webhook=webhook, event="sweep.completed", payload={"event": "sweep.completed"}
    )


def fake_dns(monkeypatch, answers: dict[str, str]) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(delivery.socket, "getaddrinfo", getaddrinfo)


@pytest.mark.parametrize("address, reason", INTERNAL)
def test_internal_addresses_are_refused_with_the_reason(address, reason):
    assert delivery.refusal_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address):
    assert delivery.refusal_reason(ipaddress.ip_address(address)) is None


@pytest.mark.django_db
def test_a_loopback_receiver_is_refused_by_default_and_nothing_is_sent(receiver, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    settings.WEBHOOK_RETRY_BASE_S = 0.01
    d = make_delivery(receiver.url)

    assert send_delivery(d.pk) == DeliveryStatus.FAILED

    d.refresh_from_db()
    assert receiver.calls == 0
    assert d.attempts == 1  # refused for good: no retries
    assert "127.0.0.1 is a loopback address" in d.error
    assert "WEBHOOK_ALLOW_PRIVATE=true" in d.error
    assert d.attempt_log[0]["status_code"] is None


@pytest.mark.django_db
def test_the_setting_allows_a_loopback_receiver(receiver, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    d = make_delivery(receiver.url)
    assert send_delivery(d.pk) == DeliveryStatus.SUCCEEDED
    assert receiver.calls == 1


@pytest.mark.django_db
def test_a_name_that_resolves_to_a_private_address_is_refused_when_sending(receiver, settings, monkeypatch):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    fake_dns(monkeypatch, {"hooks.example.com": "10.0.0.7"})
    webhook = Webhook(project=team_project(), url="https://hooks.example.com/promptlooper")
    webhook.full_clean()  # a name passes at save time: DNS answers can change

    d = make_delivery(webhook.url)
    assert send_delivery(d.pk) == DeliveryStatus.FAILED
    d.refresh_from_db()
    assert "hooks.example.com resolves to 10.0.0.7, a private address" in d.error


@pytest.mark.django_db
def test_the_request_goes_to_the_address_that_was_checked(receiver, settings, monkeypatch):
    # Connecting to the checked address defeats DNS rebinding; the Host header
    # still names the webhook's own host.
    settings.WEBHOOK_ALLOW_PRIVATE = True
    fake_dns(monkeypatch, {"hooks.example.com": "127.0.0.1"})
    port = receiver.url.split(":")[2].split("/")[0]
    d = make_delivery(f"http://hooks.example.com:{port}/hook")

    assert send_delivery(d.pk) == DeliveryStatus.SUCCEEDED
    assert receiver.received[0].headers["host"] == f"hooks.example.com:{port}"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://10.0.0.5/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://[::ffff:192.168.0.1]/hook",
        "http://localhost:8000/hook",
        "http://api.localhost/hook",
    ],
)
def test_a_webhook_on_a_literal_private_address_fails_validation(url, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(ValidationError) as error:
        Webhook(project=team_project(), url=url).full_clean()
    [message] = error.value.message_dict["url"]
    assert "refused" in message and "WEBHOOK_ALLOW_PRIVATE=true" in message


@pytest.mark.parametrize("host", ["0x7f.1", "2130706433", "017700000001"])
def test_other_spellings_of_loopback_are_refused(host):
    assert "loopback" in delivery.url_problem(f"http://{host}/hook", allow_private=False)


@pytest.mark.django_db
def test_the_setting_lets_a_private_address_validate(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    Webhook(project=team_project(), url="http://10.0.0.5/hook").full_clean()


@pytest.mark.django_db
def test_a_public_url_validates(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    Webhook(project=team_project(), url="https://hooks.example.com/promptlooper").full_clean()


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["ftp://example.com/hook", "file:///etc/passwd"])
def test_only_http_and_https_are_accepted(url, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    with pytest.raises(ValidationError) as error:
        Webhook(project=team_project(), url=url).full_clean()
    assert any("http:// or https://" in m for m in error.value.message_dict["url"])
