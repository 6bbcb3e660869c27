"""Every route refuses anonymous callers; a token or a session lets them in."""

import pytest
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

ROUTES = [
    ("get", "/api/"),
    ("get", "/api/schema/"),
    ("get", "/api/docs/"),
    ("get", "/api/projects/"),
    ("post", "/api/projects/"),
    ("get", "/api/projects/1/"),
    ("put", "/api/projects/1/"),
    ("patch", "/api/projects/1/"),
    ("delete", "/api/projects/1/"),
    ("get", "/api/projects/1/members/"),
    ("post", "/api/projects/1/members/"),
    ("patch", "/api/projects/1/members/2/"),
    ("delete", "/api/projects/1/members/2/"),
    ("get", "/api/endpoints/"),
    ("post", "/api/endpoints/"),
    ("get", "/api/endpoints/1/"),
    ("put", "/api/endpoints/1/"),
    ("patch", "/api/endpoints/1/"),
    ("delete", "/api/endpoints/1/"),
    ("post", "/api/endpoints/1/test/"),
    ("get", "/api/experiments/"),
    ("post", "/api/experiments/"),
    ("get", "/api/experiments/1/"),
    ("put", "/api/experiments/1/"),
    ("patch", "/api/experiments/1/"),
    ("delete", "/api/experiments/1/"),
    ("post", "/api/experiments/1/dataset/"),
    ("post", "/api/experiments/1/sweep/"),
    ("post", "/api/experiments/1/pause/"),
    ("post", "/api/experiments/1/resume/"),
    ("post", "/api/experiments/1/stop/"),
    ("get", "/api/experiments/1/export/"),
    ("get", "/api/experiments/1/report/"),
    ("get", "/api/experiments/1/judge-agreement/"),
    ("get", "/api/experiments/1/definition/"),
    ("post", "/api/experiments/import/"),
    ("get", "/api/sweeps/"),
    ("get", "/api/sweeps/1/"),
    ("get", "/api/runs/"),
    ("post", "/api/runs/"),
    ("get", "/api/runs/1/"),
    ("post", "/api/runs/1/score/"),
    ("get", "/api/runs/leaderboard/?experiment=1"),
    ("get", "/api/runs/compare/?a=1&b=2"),
    ("get", "/api/runs/export/?sweep=1&format=csv"),
    ("get", "/api/webhooks/"),
    ("post", "/api/webhooks/"),
    ("get", "/api/webhooks/1/"),
    ("put", "/api/webhooks/1/"),
    ("patch", "/api/webhooks/1/"),
    ("delete", "/api/webhooks/1/"),
    ("get", "/api/webhooks/1/deliveries/"),
    ("get", "/api/cache/stats/"),
]


@pytest.mark.parametrize("method,url", ROUTES)
def test_anonymous_callers_get_401_everywhere(anon, method, url):
    response = getattr(anon, method)(url)
    assert response.status_code == 401, (method, url, response.status_code)
    assert response["WWW-Authenticate"] == "Token"


def test_every_api_route_is_in_the_list(api):
    from tests.api.test_schema import operations

    listed = {(m, u.split("?")[0].replace("/1/", "/{id}/").replace("/2/", "/{user_id}/")) for m, u in ROUTES}
    assert operations(api) <= listed


def test_a_bad_token_is_refused(anon):
    anon.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert anon.get("/api/endpoints/").status_code == 401


def test_a_token_lets_alice_in(api):
    assert api.get("/api/endpoints/").status_code == 200


def test_a_session_lets_bob_in(bob):
    client = APIClient()
    response = client.post("/accounts/login/", {"username": "bob", "password": "pw-bob"}, format="multipart")
    assert response.status_code == 302
    assert client.get("/api/experiments/").status_code == 200


def test_session_writes_need_the_csrf_token(bob):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(bob)
    response = client.post("/api/webhooks/", {"url": "https://example.com/hook"}, format="json")
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]


def test_create_api_token_prints_the_users_token(alice, capsys):
    call_command("create_api_token", "alice")
    key = capsys.readouterr().out.strip()
    assert key == Token.objects.get(user=alice).key
    call_command("create_api_token", "alice")
    assert capsys.readouterr().out.strip() == key  # the same token again


def test_create_api_token_reset_replaces_the_token(alice, capsys):
    call_command("create_api_token", "alice")
    old = capsys.readouterr().out.strip()
    call_command("create_api_token", "alice", "--reset")
    new = capsys.readouterr().out.strip()
    assert new != old and not Token.objects.filter(key=old).exists()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {new}")
    assert client.get("/api/runs/").status_code == 200


def test_create_api_token_for_an_unknown_user_says_how_to_fix_it(db):
    with pytest.raises(CommandError, match="createsuperuser"):
        call_command("create_api_token", "charlie")


@pytest.mark.parametrize(
    "body",
    [
        '{"name": ' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"name": 1' + "0" * 5000 + "}",
        '{"name": NaN}',
    ],
    ids=["deeply-nested", "5000-digit-integer", "NaN"],
)
def test_a_json_body_python_cannot_take_is_a_400(api, body):
    response = api.generic("POST", "/api/experiments/", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("JSON parse error")
