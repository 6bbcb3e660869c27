"""Every page is behind the login; alice sees each one; unknown ids are 404."""

import json

import pytest
from django.test import Client
from django.urls import reverse

from runs.aggregates import summarize
from runs.models import Run, RunStatus, Score, StageResult, Sweep, SweepStatus
from tests.factories import make_endpoint, make_experiment

pytestmark = pytest.mark.django_db


@pytest.fixture
def client() -> Client:
    """Nobody logged in (tests/ui/conftest.py's client is alice's): each test logs in whom it checks."""
    return Client()


@pytest.fixture
def world(alice):
    endpoint = make_endpoint()
    experiment = make_experiment(endpoint)
    sweep = Sweep.objects.create(
        experiment=experiment, status=SweepStatus.COMPLETED, total_runs=1, completed_runs=1
    )
    run = Run.objects.create(
        experiment=experiment,
        sweep=sweep,
        config={"temperature": 0.0},
        config_hash="a" * 64,
        status=RunStatus.COMPLETED,
        weighted_score=1.0,
        tokens_in=10,
        tokens_out=3,
    )
    item = experiment.items.first()
    StageResult.objects.create(
        run=run,
        item=item,
        stage_index=0,
        stage_name="answer",
        user_prompt="Capital of France?",
        output="Paris",
    )
    Score.objects.create(run=run, item=item, scorer="keyword", value=1.0)
    summarize(run.pk)  # as the runner does when a run completes
    return {"endpoint": endpoint, "experiment": experiment, "sweep": sweep, "run": run, "item": item}


def pages(w: dict) -> list[str]:
    e, x, s, r, i = w["endpoint"].pk, w["experiment"].pk, w["sweep"].pk, w["run"].pk, w["item"].pk
    return [
        reverse("ui:dashboard"),
        reverse("ui:endpoint_list"),
        reverse("ui:endpoint_create"),
        reverse("ui:endpoint_edit", args=[e]),
        reverse("ui:experiment_create"),
        reverse("ui:experiment_detail", args=[x]),
        reverse("ui:experiment_edit", args=[x]),
        reverse("ui:dataset", args=[x]),
        reverse("ui:dataset_item", args=[x, i]),
        reverse("ui:launch", args=[x]),
        reverse("ui:leaderboard", args=[x]),
        reverse("ui:charts", args=[x]),
        reverse("ui:report", args=[x]),
        reverse("ui:export", args=[x, "json"]),
        reverse("ui:sweep", args=[s]),
        reverse("ui:sweep_runs", args=[s]),
        reverse("ui:run", args=[r]),
    ]


def test_anonymous_visitors_are_sent_to_the_login_page(client, world):
    for url in pages(world):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response.url.startswith(reverse("login") + "?next="), url


def test_anonymous_posts_are_sent_to_the_login_page_too(client, world):
    posts = [
        reverse("ui:endpoint_test", args=[world["endpoint"].pk]),
        reverse("ui:sweep_control", args=[world["sweep"].pk, "stop"]),
        reverse("ui:rate", args=[world["run"].pk, world["item"].pk]),
        reverse("ui:check_template"),
    ]
    for url in posts:
        response = client.post(url)
        assert response.status_code == 302 and reverse("login") in response.url, url


def test_alice_sees_every_page(client, alice, world):
    client.force_login(alice)
    for url in pages(world):
        assert client.get(url).status_code == 200, url


def test_bob_an_editor_sees_them_all_but_the_admins_endpoint_pages(client, bob, world):
    client.force_login(bob)
    admins_only = {reverse("ui:endpoint_create"), reverse("ui:endpoint_edit", args=[world["endpoint"].pk])}
    for url in pages(world):
        assert client.get(url).status_code == (403 if url in admins_only else 200), url


def test_unknown_ids_are_404(client, alice, world):
    client.force_login(alice)
    x = world["experiment"].pk
    other = make_experiment(name="Other")
    for url in [
        reverse("ui:endpoint_edit", args=[999]),
        reverse("ui:experiment_detail", args=[999]),
        reverse("ui:sweep", args=[999]),
        reverse("ui:run", args=[999]),
        reverse("ui:export", args=[x, "xml"]),
        reverse("ui:export", args=[other.pk, "json"]),  # nothing scored yet
        reverse("ui:leaderboard", args=[x]) + "?sweep=999",
        # a row of another experiment is not this one's
        reverse("ui:dataset_item", args=[x, other.items.first().pk]),
    ]:
        assert client.get(url).status_code == 404, url


def test_state_changing_pages_only_take_posts(client, alice, world):
    client.force_login(alice)
    assert client.get(reverse("ui:sweep_control", args=[world["sweep"].pk, "stop"])).status_code == 405
    assert client.get(reverse("ui:endpoint_test", args=[world["endpoint"].pk])).status_code == 405
    assert client.post(reverse("ui:sweep_control", args=[world["sweep"].pk, "explode"])).status_code == 404


def test_posts_without_the_csrf_token_are_refused(alice, world):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(reverse("ui:sweep_control", args=[world["sweep"].pk, "stop"]))
    assert response.status_code == 403


def test_the_dashboard_is_the_home_page_and_lists_experiments(client, alice, world):
    client.force_login(alice)
    response = client.get("/")
    assert response.status_code == 200
    assert b"Capitals" in response.content and b"1.000" in response.content
    assert f'href="/runs/{world["run"].pk}/"'.encode() in response.content


def test_the_login_page_renders_a_labelled_form(client):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert b'<label for="id_username"' in response.content and b'<label for="id_password"' in response.content


def asgi_get(path: str) -> tuple[int, bytes]:
    """GET through the ASGI application Daphne serves (promptlooper_site/asgi.py)."""
    from asgiref.sync import async_to_sync
    from asgiref.testing import ApplicationCommunicator

    from promptlooper_site.asgi import application

    async def get() -> tuple[int, bytes]:
        scope = {
            "type": "http",
            "method": "GET",
            "path": path,
            "query_string": b"",
            "headers": [],
            "scheme": "http",
            "server": ("testserver", 80),
        }
        app = ApplicationCommunicator(application, scope)
        await app.send_input({"type": "http.request", "body": b""})
        start = await app.receive_output(10)
        body, more = b"", True
        while more:
            message = await app.receive_output(10)
            body += message.get("body", b"")
            more = message.get("more_body", False)
        return start["status"], body

    return async_to_sync(get)()


def test_the_stylesheet_and_scripts_are_served_by_the_app_itself(client, settings):
    settings.DEBUG = False  # as in production: no CDN, no separate web server needed
    for path in (
        "/static/css/app.css",
        "/static/js/live.js",
        "/static/js/editor.js",
        "/static/js/sortable.js",
    ):
        status, body = asgi_get(path)
        assert status == 200, path
        if path.endswith(".css"):
            assert b":focus-visible" in body
    page = client.get(reverse("login")).content.decode()
    assert 'href="/static/css/app.css"' in page and "//cdn" not in page and "https://" not in page


def test_favicon_ico_leads_to_the_icon_without_logging_in(client):
    from django.contrib.staticfiles import finders

    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response.url.endswith("/favicon.svg")
    assert finders.find("favicon.svg")


def test_the_dashboard_says_when_the_local_model_did_not_build(client, alice, settings, tmp_path):
    from runs.local_build import FAILED, BuildStatus, status_file

    settings.VAR_DIR = tmp_path
    status_file().write_text(json.dumps(vars(BuildStatus(FAILED, "error: no C compiler", 0, 75))))
    client.force_login(alice)
    content = client.get(reverse("ui:dashboard")).content.decode()
    assert "did not build" in content and "error: no C compiler" in content and "1 min 15 s" in content
