"""The OpenAPI schema is served, complete and honest enough that generated
requests never make the server fail (schemathesis)."""

import pytest
import schemathesis
from django.contrib.staticfiles import finders
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from rest_framework.authtoken.models import Token
from schemathesis.checks import CHECKS as ALL_CHECKS
from schemathesis.checks import load_all_checks
from schemathesis.generation import GenerationMode

from promptlooper_site.wsgi import application
from runs.models import Sweep
from tests.api.helpers import scored_run
from tests.factories import make_endpoint, make_experiment, team_project
from webhooks.models import Webhook

METHODS = ("get", "post", "put", "patch", "delete")
PINNED = 4242  # the id of one experiment, sweep, run and webhook


def operations(client) -> set[tuple[str, str]]:
    paths = client.get("/api/schema/", {"format": "json"}).json()["paths"]
    return {(method, path) for path, ops in paths.items() for method in ops if method in METHODS}


@pytest.mark.django_db
def test_schema_lists_every_route_group(api):
    response = api.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    paths = set(schema["paths"])
    for path in (
        "/api/endpoints/{id}/test/",
        "/api/experiments/{id}/dataset/",
        "/api/experiments/{id}/sweep/",
        "/api/experiments/{id}/export/",
        "/api/experiments/{id}/report/",
        "/api/sweeps/{id}/",
        "/api/runs/leaderboard/",
        "/api/runs/{id}/score/",
        "/api/webhooks/{id}/deliveries/",
        "/api/cache/stats/",
    ):
        assert path in paths
    endpoint = schema["components"]["schemas"]["Endpoint"]["properties"]
    assert "api_key" not in endpoint and "has_api_key" in endpoint
    assert "api_key" in schema["components"]["schemas"]["EndpointRequest"]["properties"]


@pytest.mark.django_db
def test_docs_are_served_without_a_cdn(api):
    response = api.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    # No CDN host (the page carries a random CSRF token, so look for names, not "cdn").
    assert not any(host in page for host in ("jsdelivr", "unpkg", "cdnjs", "https://", "http://"))
    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")


@pytest.fixture
def token(bob) -> str:
    """bob: an ordinary user, not staff, as most callers are."""
    return Token.objects.create(user=bob).key


@pytest.fixture
def db_stays_open():
    """Django closes the connection after each WSGI request; inside a test's
    transaction that would lose the test database (the test client does the same)."""
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


@pytest.fixture
def api_schema(token, db_stays_open):
    return schemathesis.openapi.from_wsgi(
        "/api/schema/?format=json", application, headers={"Authorization": f"Token {token}"}
    )


@pytest.fixture
def objects(alice, llm_stub):
    """One of each object, so generated requests also reach real rows, not only 404s."""
    endpoint = make_endpoint(base_url=llm_stub.base_url, timeout_s=2)
    experiment = make_experiment(endpoint, pk=PINNED)
    sweep = Sweep.objects.create(pk=PINNED, experiment=experiment, status="completed")
    scored_run(experiment, {"temperature": 0.0}, {"keyword": [1.0, 1.0, 0.0]}, sweep=sweep, pk=PINNED)
    Webhook.objects.create(project=team_project(), pk=PINNED, url="https://example.com/hook")
    return {"id": PINNED}


load_all_checks()
# Every check schemathesis has (server errors, documented status codes and content
# types, response schemas, invalid data refused, ...) but positive_data_acceptance:
# it expects every request the schema allows to be accepted, and part of our
# validation cannot be said in JSON Schema (that a template is valid Jinja and reads
# only variables that exist, that an id names a row, that a webhook's host is public).
CHECKS = [check for check in ALL_CHECKS.get_all() if check.__name__ != "positive_data_acceptance"]


# Sweeps and runs launched here never execute: the test's transaction never
# commits, and jobs are enqueued on commit.
@pytest.mark.django_db
def test_generated_requests_pass_every_check(api_schema, token, objects):
    headers = {"Authorization": f"Token {token}"}
    for result in api_schema.get_all_operations():
        operation = result.ok()
        exercise(operation.as_strategy(), headers)
        if "{id}" in operation.path and not operation.path.startswith("/api/endpoints/"):
            # Not the endpoints' ids: a generated base_url could make /test/ wait on a real host.
            exercise(operation.as_strategy(path_parameters=objects), headers)
        if list(operation.iter_parameters()) or operation.body:
            try:
                exercise(operation.as_strategy(GenerationMode.NEGATIVE), headers)
            except Unsatisfiable:  # nothing in this operation can be made invalid
                pass


def exercise(strategy, headers: dict) -> None:
    @given(case=strategy)
    @settings(max_examples=10, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    def run(case):
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()
