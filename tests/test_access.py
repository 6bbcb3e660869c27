"""Every API route, UI page and WebSocket stream, driven as an outsider, a viewer and
an anonymous visitor. The routes come from the URL configuration itself: a new route
is driven too, or this test fails until it says how (OBJECTS, QUERIES, UNSCOPED).

- mallory, an admin of another project: 404 for everything of the team's project,
  and no response body mentions it ("zebra" is in every name the team's objects carry);
- victor, a viewer of the team's project: every write is 403 (405 where the route
  takes no write at all), and nothing changes;
- an anonymous visitor: 401 from the API, the login page from the UI, 4401 from a socket.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.db import connections
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from endpoints.models import Endpoint
from experiments.models import Experiment
from projects.models import Role
from runs.aggregates import summarize
from runs.models import ResponseCache, Run, RunStatus, Score, StageResult, Sweep, SweepStatus
from tests.factories import add_member, make_endpoint, make_experiment, make_project, make_user
from webhooks.models import Webhook, WebhookDelivery

pytestmark = pytest.mark.django_db

MARK = "zebra"  # in every name of the team's objects: it must never reach an outsider
WRITES = ("post", "put", "patch", "delete")
FORMAT_SUFFIX = "(?P<format>"

# The first path segment says whose id fills `pk`; other kwargs have one meaning each.
OBJECTS = {
    "projects": "project",
    "endpoints": "endpoint",
    "experiments": "experiment",
    "sweeps": "sweep",
    "runs": "run",
    "webhooks": "webhook",
}
KWARGS = {"item_pk": "item", "user_id": "member", "experiment_id": "experiment"}
FIXED_KWARGS = {"fmt": "json", "action": "stop"}
# Collection routes that name the team's object in the query string.
QUERIES = {
    "run-leaderboard": "?experiment={experiment}",
    "run-compare": "?a={run}&b={run}",
    "ui:compare": "?a={run}&b={run}",
    "cache-stats": "?project={project}",
    "run-export": "?sweep={sweep}",
    "experiment-import": "?project={project}",
}
# Routes that reach no project's object: anyone logged in may use them, and what
# they answer is checked for the mark like everything else.
UNSCOPED = {
    "api-root",
    "api-schema",
    "api-docs",
    "project-list",  # lists the caller's projects; creating one is open to all
    "endpoint-list",
    "experiment-list",
    "sweep-list",
    "run-list",
    "webhook-list",
    "cache-stats",  # also driven with ?project= below
    "ui:dashboard",
    "ui:project_list",
    "ui:switch_project",
    "ui:endpoint_list",
    "ui:endpoint_create",
    "ui:experiment_create",
    "ui:check_template",
}
# The Django admin (superusers), the login pages and the icon (public, like the static files).
SKIPPED_PREFIXES = ("admin/", "accounts/", "favicon.ico")


@dataclass
class Route:
    name: str
    path: str  # with the ids of the team's objects filled in
    methods: tuple[str, ...]
    api: bool
    scoped: bool


def url_patterns(patterns=None, prefix: str = ""):
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            namespace = f"{pattern.namespace}:" if pattern.namespace else ""
            for route, p, ns in url_patterns(pattern.url_patterns, prefix + str(pattern.pattern)):
                yield route, p, namespace + ns
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern, ""


def fill(route: str, ids: dict[str, int]) -> str:
    """The route with each kwarg replaced by the id of the team's object it names."""
    plain = route.replace("^", "").replace("$", "").replace("\\", "")
    head = plain.removeprefix("api/").split("/")[0]

    def value(name: str) -> str:
        if name in FIXED_KWARGS:
            return FIXED_KWARGS[name]
        kind = OBJECTS.get(head) if name == "pk" else KWARGS.get(name)
        assert kind, f"{route}: add `{name}` to tests/test_access.py so the route is driven"
        return str(ids[kind])

    plain = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: value(m[1]), plain)
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: value(m[1]), plain)


def all_routes(ids: dict[str, int]) -> list[Route]:
    routes = []
    for route, pattern, namespace in url_patterns():
        if route.startswith(SKIPPED_PREFIXES) or FORMAT_SUFFIX in route or "drf_format_suffix" in route:
            continue
        name = namespace + (pattern.name or "")
        actions = getattr(pattern.callback, "actions", None)
        api = route.startswith("api/")
        methods = tuple(m for m in actions if m != "head") if actions else ("get", "post")
        path = fill(route, ids) + QUERIES.get(name, "").format(**ids)
        routes.append(Route(name, path, methods, api, name not in UNSCOPED))
    return routes


@pytest.fixture
def team():
    """The team's project with one of everything, each named with the mark."""
    project = make_project(f"Team {MARK}")
    alice = make_user("alice")
    victor = make_user("victor")
    add_member(project, alice, Role.ADMIN)
    add_member(project, victor, Role.VIEWER)
    endpoint = make_endpoint(f"endpoint-{MARK}", api_key=f"sk-{MARK}", project=project)
    rows = [({"country": f"{MARK}land", "capital": f"{MARK}ville"}, f"{MARK}ville")]
    experiment = make_experiment(endpoint, items=rows, name=f"Experiment {MARK}")
    estimate = {"runs": 1, "calls": 1, "judge_calls": 0, "prompt_tokens": 9, "max_tokens": 99}
    sweep = Sweep.objects.create(
        experiment=experiment, status=SweepStatus.COMPLETED, total_runs=1, estimate=estimate
    )
    run = Run.objects.create(
        experiment=experiment,
        sweep=sweep,
        config={"temperature": 0.0, "note": MARK},
        config_hash="a" * 64,
        status=RunStatus.COMPLETED,
        weighted_score=1.0,
    )
    item = experiment.items.get()
    StageResult.objects.create(
        run=run, item=item, stage_index=0, stage_name="answer", user_prompt=f"{MARK}?", output=f"{MARK}ville"
    )
    Score.objects.create(run=run, item=item, scorer="keyword", value=1.0)
    summarize(run.pk)  # as the runner does when a run completes
    webhook = Webhook.objects.create(project=project, url=f"https://{MARK}.example.com/hook")
    WebhookDelivery.objects.create(webhook=webhook, event="sweep.completed", payload={"note": MARK})
    ResponseCache.objects.create(project=project, config_hash="b" * 64, response_text=MARK, hit_count=7)
    ids = {
        "project": project.pk,
        "endpoint": endpoint.pk,
        "experiment": experiment.pk,
        "sweep": sweep.pk,
        "run": run.pk,
        "webhook": webhook.pk,
        "item": item.pk,
        "member": victor.pk,
    }
    return {"ids": ids, "project": project, "alice": alice, "victor": victor}


@pytest.fixture
def mallory(team):
    """An admin of her own project, with an experiment of her own."""
    mallory = make_user("mallory")
    own = make_project("Mallory's", mallory="admin")
    make_experiment(make_endpoint("mallorys", project=own), name="Mallory's experiment")
    return mallory


def api_as(user) -> APIClient:
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def ui_as(user) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def call(route: Route, method: str, user, body: dict | None = None):
    if route.api:
        return getattr(api_as(user), method)(route.path, body or {}, format="json")
    return getattr(ui_as(user), method)(route.path, body or {})


def write_body(team: dict) -> dict:
    """A body naming the team's objects: a create aimed at their project."""
    ids = team["ids"]
    return {"project": ids["project"], "experiment": ids["experiment"], "name": "x", "username": "victor"}


def snapshot() -> tuple:
    """What a refused write must leave as it was."""
    return (
        list(Endpoint.objects.values_list("id", "name", "base_url", "api_key_encrypted")),
        list(Experiment.objects.values_list("id", "name", "pipeline")),
        list(Webhook.objects.values_list("id", "url", "active")),
        list(Sweep.objects.values_list("id", "status")),
        Run.objects.count(),
        Score.objects.count(),
        list(team_members()),
    )


def team_members():
    from projects.models import Membership

    team = Membership.objects.filter(project__name__contains=MARK)  # new projects of one's own are fine
    return team.order_by("id").values_list("user_id", "project_id", "role")


def test_every_route_is_driven(team):
    routes = all_routes(team["ids"])
    names = {r.name for r in routes}
    assert {
        "experiment-sweep",
        "ui:run",
        "project-member",
        "ui:members",
        "run-export",
        "experiment-import",
    } <= names
    assert not (UNSCOPED - names), f"UNSCOPED names routes that no longer exist: {UNSCOPED - names}"


def test_an_outsider_finds_nothing_of_the_team(team, mallory):
    before = snapshot()
    for route in all_routes(team["ids"]):
        for method in route.methods:
            body = write_body(team) if method in WRITES else None
            if route.name in ("project-list", "ui:project_list") and method == "post":
                continue  # she may create projects of her own
            response = call(route, method, mallory, body)
            text = response.content.decode(errors="replace")
            where = f"{method.upper()} {route.path} → {response.status_code}"
            assert MARK not in text.lower(), where
            assert response.status_code < 500, where
            if route.scoped:
                assert response.status_code in (404, 405), where
            elif method in WRITES and route.api and route.name.endswith("-list"):
                # A create aimed at the team's project: that project does not exist for her.
                assert response.status_code in (400, 405), where
    assert snapshot() == before


def test_an_outsider_sees_none_of_the_teams_cache(team, mallory):
    stats = api_as(mallory).get("/api/cache/stats/").json()
    assert stats["hits"] == 0 and stats["entries"] == 0
    assert api_as(team["victor"]).get("/api/cache/stats/").json()["hits"] == 7


def test_a_viewer_reads_but_every_write_is_refused(team):
    victor = team["victor"]
    before = snapshot()
    for route in all_routes(team["ids"]):
        for method in route.methods:
            response = call(route, method, victor, write_body(team) if method in WRITES else None)
            where = f"{method.upper()} {route.path} → {response.status_code}"
            assert response.status_code < 500, where
            if method == "get":
                assert response.status_code in (200, 403, 405), where
            elif route.name in ("project-list", "ui:project_list", "ui:switch_project", "ui:check_template"):
                continue  # her own project, her own switcher, a template check: no write to the team
            else:
                assert response.status_code in (403, 405), where
    assert snapshot() == before


def test_the_admin_reaches_every_page_of_the_team(team):
    alice = team["alice"]
    for route in all_routes(team["ids"]):
        if "get" in route.methods:
            response = call(route, "get", alice)
            assert response.status_code in (200, 405), f"GET {route.path} → {response.status_code}"


def test_an_anonymous_visitor_is_sent_to_log_in(team):
    for route in all_routes(team["ids"]):
        for method in route.methods:
            response = call(route, method, None)
            where = f"{method.upper()} {route.path} → {response.status_code}"
            if route.api:
                assert response.status_code == 401, where
            else:
                assert response.status_code == 302 and response.url.startswith("/accounts/login/"), where


# -- WebSocket streams ------------------------------------------------------------------
def socket_routes(ids: dict[str, int]) -> list[str]:
    from runs.routing import websocket_urlpatterns

    return [fill(str(p.pattern), ids) for p in websocket_urlpatterns]


def cookie_of(user) -> bytes:
    client = ui_as(user)
    name = django_settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}".encode()


async def open_socket(path: str, cookie: bytes | None) -> tuple[WebsocketCommunicator, bool, int | None]:
    from promptlooper_site.asgi import application

    headers = [(b"origin", b"http://testserver")] + ([(b"cookie", cookie)] if cookie else [])
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    code = None
    if connected and not await communicator.receive_nothing(0.3):
        output = await communicator.receive_output(timeout=2)
        code = output["code"] if output["type"] == "websocket.close" else None
    return communicator, connected, code


@pytest.mark.django_db(transaction=True)
async def test_streams_show_the_team_to_its_members_only(team, mallory):
    from asgiref.sync import sync_to_async

    from runs.events import event_bus, flush_publisher, reset_event_bus

    reset_event_bus()
    ids = team["ids"]
    mine = await sync_to_async(lambda: Experiment.objects.get(name="Mallory's experiment").pk)()
    cookies = {
        who: await sync_to_async(cookie_of)(user)
        for who, user in (("mallory", mallory), ("victor", team["victor"]))
    }
    paths = socket_routes(ids)
    assert paths == [f"/ws/experiments/{ids['experiment']}/", "/ws/events/"]
    try:
        for path in paths:  # anonymous: 4401 everywhere
            communicator, _, code = await open_socket(path, None)
            assert code == 4401, path
        # mallory: the team's experiment does not exist; her stream carries her own events only
        communicator, _, code = await open_socket(paths[0], cookies["mallory"])
        assert code == 4404
        events_of_mallory, _, code = await open_socket(paths[1], cookies["mallory"])
        events_of_victor, _, _ = await open_socket(paths[1], cookies["victor"])
        experiment_of_victor, _, code = await open_socket(paths[0], cookies["victor"])
        assert code is None
        event_bus().publish("sweep.progress", experiment_id=ids["experiment"], note=MARK)
        event_bus().publish("sweep.progress", experiment_id=mine)
        assert flush_publisher(10)
        assert (await events_of_mallory.receive_json_from(timeout=5))["experiment_id"] == mine
        assert await events_of_mallory.receive_nothing(0.5)
        seen = [(await events_of_victor.receive_json_from(timeout=5))["experiment_id"]]
        assert seen == [ids["experiment"]] and await events_of_victor.receive_nothing(0.5)
        assert (await experiment_of_victor.receive_json_from(timeout=5))["data"]["note"] == MARK
        for communicator in (events_of_mallory, events_of_victor, experiment_of_victor):
            await communicator.disconnect()
    finally:
        reset_event_bus()
        # The session lookups' thread keeps a connection: PostgreSQL could not drop the test database.
        await sync_to_async(connections.close_all)()
