"""/api/webhooks/: the secret is shown once, on create; deliveries are listed."""

import pytest

from tests.factories import team_project
from webhooks.models import DeliveryStatus, Webhook, WebhookDelivery

pytestmark = pytest.mark.django_db

URL = "https://hooks.example.com/promptlooper"


def test_creating_a_webhook_returns_its_generated_secret_once(api):
    response = api.post(
        "/api/webhooks/", {"name": "CI", "url": URL, "events": ["sweep.completed"]}, format="json"
    )
    assert response.status_code == 201, response.json()
    secret = response.json()["secret"]
    webhook = Webhook.objects.get()
    assert secret == webhook.secret and len(secret) == 64
    for later in (api.get("/api/webhooks/"), api.get(f"/api/webhooks/{webhook.pk}/")):
        assert secret not in later.content.decode() and "secret" not in later.content.decode()


def test_a_given_secret_is_kept_and_can_be_rotated(api):
    created = api.post("/api/webhooks/", {"url": URL, "secret": "s" * 32}, format="json").json()
    assert created["secret"] == "s" * 32 and created["events"] == [] and created["active"] is True
    response = api.patch(
        f"/api/webhooks/{created['id']}/", {"secret": "t" * 32, "active": False}, format="json"
    )
    assert response.status_code == 200 and "secret" not in response.json()
    webhook = Webhook.objects.get()
    assert webhook.secret == "t" * 32 and webhook.active is False


@pytest.mark.parametrize(
    "body,field",
    [
        ({"url": "http://127.0.0.1:8000/hook"}, "url"),
        ({"url": "http://localhost/hook"}, "url"),
        ({"url": "ftp://example.com/hook"}, "url"),
        ({"url": URL, "events": ["sweep.exploded"]}, "events"),
        ({"url": URL, "secret": "short"}, "secret"),
    ],
)
def test_bad_webhooks_are_refused_naming_the_field(api, body, field):
    response = api.post("/api/webhooks/", body, format="json")
    assert response.status_code == 400 and field in response.json()
    assert not Webhook.objects.exists()


def test_private_destinations_are_allowed_when_the_setting_says_so(api, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    assert api.post("/api/webhooks/", {"url": "http://127.0.0.1:8000/hook"}, format="json").status_code == 201


def test_deliveries_are_listed_newest_first(api):
    webhook = Webhook.objects.create(project=team_project(), url=URL)
    for n in range(3):
        WebhookDelivery.objects.create(webhook=webhook, event="run.completed", payload={"n": n})
    WebhookDelivery.objects.filter(payload__n=2).update(
        status=DeliveryStatus.FAILED, error="timed out", attempts=3
    )
    other = Webhook.objects.create(project=team_project(), url=URL + "/other")
    WebhookDelivery.objects.create(webhook=other, event="sweep.started")
    data = api.get(f"/api/webhooks/{webhook.pk}/deliveries/").json()
    assert data["count"] == 3
    assert [d["payload"]["n"] for d in data["results"]] == [2, 1, 0]
    assert data["results"][0]["status"] == "failed" and data["results"][0]["error"] == "timed out"
    assert "secret" not in str(data)


def test_deleting_a_webhook(api):
    webhook = Webhook.objects.create(project=team_project(), url=URL)
    assert api.delete(f"/api/webhooks/{webhook.pk}/").status_code == 204
    assert not Webhook.objects.exists()


SLACK = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"


def test_only_admins_read_a_webhooks_full_url(api, bob_api):
    webhook = Webhook.objects.create(project=team_project(), url=SLACK)
    WebhookDelivery.objects.create(
        webhook=webhook,
        event="sweep.completed",
        status=DeliveryStatus.FAILED,
        error=f"Failed after 1 attempt. Last error: Could not reach {SLACK}: refused.",
        attempt_log=[{"error": f"Could not reach {SLACK}: refused.", "status_code": None}],
    )
    # bob is an editor: below admin, only the scheme and host show.
    for response in (bob_api.get("/api/webhooks/"), bob_api.get(f"/api/webhooks/{webhook.pk}/")):
        body = response.content.decode()
        assert "XXXXSECRET" not in body and "https://hooks.slack.com/…" in body
    deliveries = bob_api.get(f"/api/webhooks/{webhook.pk}/deliveries/").json()["results"]
    assert (
        deliveries[0]["error"]
        == "Failed after 1 attempt. Last error: Could not reach https://hooks.slack.com/…: refused."
    )
    assert "XXXXSECRET" not in str(deliveries)
    # alice is an admin: she manages the URL, so she reads it whole.
    assert api.get(f"/api/webhooks/{webhook.pk}/").json()["url"] == SLACK
    assert SLACK in api.get(f"/api/webhooks/{webhook.pk}/deliveries/").json()["results"][0]["error"]
    assert api.post("/api/webhooks/", {"url": SLACK + "2"}, format="json").json()["url"] == SLACK + "2"
