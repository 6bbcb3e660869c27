"""Secrets stay bound to where they were entered: re-pointing an endpoint forgets its
key and headers, so nobody can have them sent to a server of their choosing, and a
webhook cannot be re-pointed by anyone but an admin."""

import pytest
from django.urls import reverse

from endpoints.models import Endpoint
from projects.models import Role
from tests.factories import add_member, make_endpoint, make_user, team_project
from tests.llm_stub import LLMStub
from webhooks.models import Webhook

pytestmark = pytest.mark.django_db

KEY = "sk-live-victims-paid-key"
HEADER = {"X-Api-Key": "victims-header-secret"}


@pytest.fixture
def victims_endpoint(llm_stub):
    return make_endpoint("openai", base_url=llm_stub.base_url, api_key=KEY, extra_headers=HEADER)


@pytest.fixture
def thief_server():
    with LLMStub() as server:
        yield server


def seen_secrets(server: LLMStub) -> str:
    return repr(server.models_request_headers) + repr(server.request_headers)


def test_the_key_reaches_the_server_it_was_entered_for(api, victims_endpoint, llm_stub):
    report = api.post(f"/api/endpoints/{victims_endpoint.pk}/test/").json()
    assert report["ok"] is True
    assert llm_stub.models_request_headers[-1]["authorization"] == f"Bearer {KEY}"
    assert llm_stub.models_request_headers[-1]["x-api-key"] == HEADER["X-Api-Key"]


def test_a_new_host_forgets_the_key_and_the_new_server_never_sees_it(api, victims_endpoint, thief_server):
    response = api.patch(f"/api/endpoints/{victims_endpoint.pk}/", {"base_url": thief_server.base_url})
    assert response.status_code == 200
    assert response.json()["has_api_key"] is False and response.json()["extra_header_names"] == []
    report = api.post(f"/api/endpoints/{victims_endpoint.pk}/test/").json()
    assert report["ok"] is True  # the server answers: it just gets no secret
    assert KEY not in seen_secrets(thief_server) and "victims-header-secret" not in seen_secrets(thief_server)
    endpoint = Endpoint.objects.get(pk=victims_endpoint.pk)
    assert endpoint.api_key_encrypted == "" and endpoint.extra_headers_encrypted == ""


def test_the_same_request_may_set_a_key_for_the_new_host(api, victims_endpoint, thief_server):
    body = {"base_url": thief_server.base_url, "api_key": "sk-for-the-new-host"}
    assert api.patch(f"/api/endpoints/{victims_endpoint.pk}/", body).json()["has_api_key"] is True
    api.post(f"/api/endpoints/{victims_endpoint.pk}/test/")
    assert thief_server.models_request_headers[-1]["authorization"] == "Bearer sk-for-the-new-host"
    assert KEY not in seen_secrets(thief_server)


@pytest.mark.parametrize(
    "new_url",
    ["https://{host}:{port}/v1", "http://localhost:{port}/v1", "http://{host}:1/v1"],
    ids=["scheme", "host", "port"],
)
def test_scheme_host_and_port_each_count(api, victims_endpoint, llm_stub, new_url):
    url = new_url.format(host="127.0.0.1", port=llm_stub.port)
    assert (
        api.patch(f"/api/endpoints/{victims_endpoint.pk}/", {"base_url": url}).json()["has_api_key"] is False
    )


def test_a_new_path_on_the_same_server_keeps_the_key(api, victims_endpoint, llm_stub):
    url = f"http://127.0.0.1:{llm_stub.port}/openai/v1"
    assert (
        api.patch(f"/api/endpoints/{victims_endpoint.pk}/", {"base_url": url}).json()["has_api_key"] is True
    )
    assert Endpoint.objects.get(pk=victims_endpoint.pk).get_extra_headers() == HEADER


def test_the_edit_page_forgets_the_key_on_a_new_host_too(client, alice, victims_endpoint, thief_server):
    client.force_login(alice)
    form = {
        "name": "openai",
        "base_url": thief_server.base_url,
        "adapter": "openai",
        "timeout_s": "60",
        "max_concurrency": "0",
        "api_key": "",
        "extra_headers": "",
    }
    response = client.post(reverse("ui:endpoint_edit", args=[victims_endpoint.pk]), form, follow=True)
    assert b"the key and extra headers stored for the old host were cleared" in response.content
    client.post(reverse("ui:endpoint_test", args=[victims_endpoint.pk]))
    assert thief_server.models_request_headers and KEY not in seen_secrets(thief_server)


def test_an_editor_can_neither_re_point_an_endpoint_nor_read_its_key(
    bob_api, bob, victims_endpoint, thief_server
):
    response = bob_api.patch(f"/api/endpoints/{victims_endpoint.pk}/", {"base_url": thief_server.base_url})
    assert response.status_code == 403
    assert Endpoint.objects.get(pk=victims_endpoint.pk).get_api_key() == KEY
    assert KEY not in bob_api.get(f"/api/endpoints/{victims_endpoint.pk}/").content.decode()


def test_a_non_admin_cannot_re_point_a_webhook(bob_api, api):
    created = api.post("/api/webhooks/", {"url": "https://hooks.example.com/ci"}, format="json").json()
    for body in ({"url": "https://attacker.example.net/steal"}, {"active": False}):
        assert bob_api.patch(f"/api/webhooks/{created['id']}/", body, format="json").status_code == 403
    assert bob_api.delete(f"/api/webhooks/{created['id']}/").status_code == 403
    webhook = Webhook.objects.get(pk=created["id"])
    assert webhook.url == "https://hooks.example.com/ci" and webhook.active


def test_a_viewer_cannot_create_a_webhook_for_the_project(db):
    from rest_framework.test import APIClient

    viewer = make_user("victor")
    add_member(team_project(), viewer, Role.VIEWER)
    client = APIClient()
    client.force_authenticate(viewer)
    response = client.post("/api/webhooks/", {"url": "https://attacker.example.net/"}, format="json")
    assert response.status_code == 403 and not Webhook.objects.exists()


def test_the_connection_test_reports_the_servers_message_never_its_body(api, victims_endpoint, llm_stub):
    body = '{"error": {"message": "Incorrect API key provided", "internal": "db-password=hunter2"}}'
    llm_stub.fail_next("status", status=401, body=body)
    report = api.post(f"/api/endpoints/{victims_endpoint.pk}/test/").json()
    assert report["ok"] is False and report["status"] == 401
    assert "Incorrect API key provided" in report["error"] and "hunter2" not in report["error"]


def test_a_body_that_is_not_an_openai_error_is_not_shown(api, victims_endpoint, llm_stub):
    llm_stub.fail_next("status", status=404, body="<html>intranet wiki: salaries.xlsx</html>")
    report = api.post(f"/api/endpoints/{victims_endpoint.pk}/test/").json()
    assert report["status"] == 404 and "salaries" not in report["error"]
    llm_stub.fail_next("status", status=200, body="<html>intranet wiki: salaries.xlsx</html>")
    report = api.post(f"/api/endpoints/{victims_endpoint.pk}/test/").json()
    assert report["ok"] is False and "salaries" not in report["error"]


def test_a_long_server_message_is_cut_to_200_characters(api, victims_endpoint, llm_stub):
    llm_stub.fail_next("status", status=400, body='{"error": {"message": "%s"}}' % ("x" * 5000))
    report = api.post(f"/api/endpoints/{victims_endpoint.pk}/test/").json()
    assert "x" * 200 in report["error"] and "x" * 201 not in report["error"]
