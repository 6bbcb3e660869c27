"""/api/runs/: filters, ordering, details, ad-hoc runs and human ratings."""

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from runs.models import Run, RunStatus, Score, ScoreSource
from runs.queue import wait_for_in_process_jobs
from tests.api.helpers import scored_run, stage_result
from tests.factories import make_endpoint, make_experiment, make_project


@pytest.fixture
def experiment(db):
    return make_experiment(make_endpoint())


@pytest.fixture
def runs(experiment):
    return {
        "best": scored_run(
            experiment, {"temperature": 0.0}, {"keyword": [1, 1, 1]}, tokens_in=300, latency_ms=50
        ),
        "mid": scored_run(
            experiment, {"temperature": 0.5}, {"keyword": [1, 0, 1]}, tokens_in=100, latency_ms=90
        ),
        "worst": scored_run(
            experiment, {"temperature": 1.0}, {"keyword": [0, 0, 0]}, tokens_in=200, latency_ms=70
        ),
        "failed": scored_run(experiment, {"temperature": 2.0}, {}, status=RunStatus.FAILED, tokens_in=0),
    }


def ids(response):
    assert response.status_code == 200, response.json()
    return [run["id"] for run in response.json()["results"]]


@pytest.mark.django_db
def test_runs_are_listed_newest_first_and_paginated(api, runs):
    data = api.get("/api/runs/").json()
    assert set(data) == {"count", "next", "previous", "results"} and data["count"] == 4
    assert data["results"][0]["id"] == runs["failed"].pk
    assert "stage_results" not in data["results"][0]


@pytest.mark.django_db
def test_runs_filter_by_experiment_sweep_status_and_score(api, runs, experiment):
    other = scored_run(make_experiment(name="Other"), {}, {"keyword": [1, 1, 1]})
    assert other.pk not in ids(api.get("/api/runs/", {"experiment": experiment.pk}))
    assert ids(api.get("/api/runs/", {"status": "failed"})) == [runs["failed"].pk]
    scored = set(ids(api.get("/api/runs/", {"experiment": experiment.pk, "min_score": 0.5})))
    assert scored == {runs["best"].pk, runs["mid"].pk}
    assert ids(api.get("/api/runs/", {"max_score": 0.1})) == [runs["worst"].pk]
    assert ids(api.get("/api/runs/", {"sweep": 12345})) == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    "ordering,expected",
    [
        ("-score", ["best", "mid", "worst", "failed"]),
        ("score", ["worst", "mid", "best", "failed"]),  # unscored runs last either way
        ("tokens", ["failed", "mid", "worst", "best"]),
        ("-latency", ["mid", "worst", "best", "failed"]),
        ("date", ["best", "mid", "worst", "failed"]),
    ],
)
def test_runs_order_by_score_tokens_latency_or_date(api, runs, ordering, expected):
    assert ids(api.get("/api/runs/", {"ordering": ordering})) == [runs[name].pk for name in expected]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "params,field",
    [
        ({"ordering": "-vibes"}, "ordering"),
        ({"status": "lost"}, "status"),
        ({"min_score": "high"}, "min_score"),
        ({"experiment": "abc"}, "experiment"),
    ],
)
def test_a_bad_filter_is_a_400_naming_it(api, runs, params, field):
    response = api.get("/api/runs/", params)
    assert response.status_code == 400 and field in response.json()


@pytest.mark.django_db
def test_a_runs_detail_has_its_stage_results_and_scores(api, runs, experiment):
    item = experiment.items.first()
    stage_result(runs["best"], item=item)
    data = api.get(f"/api/runs/{runs['best'].pk}/").json()
    assert [r["output"] for r in data["stage_results"]] == ["Paris"]
    assert data["stage_results"][0]["item"] == item.pk
    assert sorted(s["value"] for s in data["scores"]) == [1.0, 1.0, 1.0]
    assert {s["scorer"] for s in data["scores"]} == {"keyword"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body,field",
    [
        ({"config": {"answer.user": "{{ unclosed"}}, "config"),
        ({"config": {"model": ""}, "experiment": "no-endpoint"}, "experiment"),
        ({"config": ["not", "an", "object"]}, "config"),
        ({"config": {}, "input": "Peru"}, "input"),
        ({"config": {}, "experiment": 999}, "experiment"),
    ],
)
def test_a_bad_ad_hoc_run_is_a_400_naming_the_field(api, experiment, body, field):
    if body.get("experiment") == "no-endpoint":
        body["experiment"] = make_experiment(None, name="No endpoint").pk
    body.setdefault("experiment", experiment.pk)
    response = api.post("/api/runs/", body, format="json")
    assert response.status_code == 400 and field in response.json(), response.json()
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_an_ad_hoc_run_without_input_needs_a_dataset(api):
    empty = make_experiment(make_endpoint(name="e2"), items=[], name="Empty")
    response = api.post("/api/runs/", {"experiment": empty.pk, "config": {}}, format="json")
    assert response.status_code == 400 and "input" in response.json()


@pytest.mark.django_db(transaction=True)
def test_an_ad_hoc_run_evaluates_the_dataset(api, llm_stub):
    experiment = make_experiment(make_endpoint(base_url=llm_stub.base_url))
    response = api.post(
        "/api/runs/", {"experiment": experiment.pk, "config": {"temperature": 0.1}}, format="json"
    )
    assert response.status_code == 202 and response.json()["status"] == "pending"
    assert wait_for_in_process_jobs(30)
    run = Run.objects.get(pk=response.json()["id"])
    assert run.status == RunStatus.COMPLETED and run.sweep is None
    assert llm_stub.calls == 3 and run.stage_results.count() == 3


@pytest.mark.django_db(transaction=True)
def test_an_ad_hoc_run_with_an_input_evaluates_only_that_input(api, llm_stub):
    experiment = make_experiment(make_endpoint(base_url=llm_stub.base_url))
    body = {"experiment": experiment.pk, "config": {}, "input": {"country": "Chile", "reference": "Santiago"}}
    response = api.post("/api/runs/", body, format="json")
    assert response.status_code == 202
    assert wait_for_in_process_jobs(30)
    run = Run.objects.get(pk=response.json()["id"])
    assert run.status == RunStatus.COMPLETED, run.error
    assert (
        llm_stub.calls == 1
        and llm_stub.requests[0]["messages"][-1]["content"] == "What is the capital of Chile?"
    )
    result = run.stage_results.get()
    assert result.item is None and experiment.items.count() == 3  # no row was added
    assert run.scores.get().item is None


@pytest.mark.django_db
def test_a_rating_is_recorded_as_a_human_score(api, experiment, runs, alice):
    response = api.post(
        f"/api/runs/{runs['mid'].pk}/score/", {"rating": 10, "comment": "spot on"}, format="json"
    )
    assert response.status_code == 201, response.json()
    score = Score.objects.get(source=ScoreSource.HUMAN)
    assert score.value == 1.0 and score.author == alice and score.comment == "spot on"
    assert response.json()["score"]["author"] == "alice"
    # No human scorer in this experiment: the weighted score stays as the runner left it.
    assert response.json()["weighted_score"] == pytest.approx(2 / 3)


@pytest.mark.django_db
def test_a_rating_recomputes_the_weighted_score_with_a_human_scorer(api):
    scorers = [
        {"type": "keyword", "weight": 1.0, "config": {"required_present": ["{{ capital }}"]}},
        {"type": "human", "weight": 3.0, "config": {}},
    ]
    experiment = make_experiment(make_endpoint(), scorers=scorers)
    run = scored_run(experiment, {}, {"keyword": [1, 1, 0], "human": [None, None, None]})
    assert run.weighted_score == pytest.approx(2 / 3)
    items = list(experiment.items.order_by("position"))
    # The third item, rated 10: (1*0 + 3*1) / 4 = 0.75; the others keep keyword alone.
    response = api.post(f"/api/runs/{run.pk}/score/", {"rating": 10, "item": items[2].pk}, format="json")
    assert response.json()["weighted_score"] == pytest.approx((1 + 1 + 0.75) / 3)
    # A rating of the whole run (1 → 0.0) applies to the items nobody rated alone.
    response = api.post(f"/api/runs/{run.pk}/score/", {"rating": 1}, format="json")
    assert response.json()["weighted_score"] == pytest.approx((0.25 + 0.25 + 0.75) / 3)
    run.refresh_from_db()
    assert run.weighted_score == pytest.approx((0.25 + 0.25 + 0.75) / 3)
    human_rows = run.scores.filter(source=ScoreSource.AUTO, scorer="human").order_by("item__position")
    assert [row.value for row in human_rows] == [0.0, 0.0, 1.0]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body,field", [({"rating": 11}, "rating"), ({"rating": 0}, "rating"), ({}, "rating")]
)
def test_a_rating_outside_1_to_10_is_refused(api, runs, body, field):
    response = api.post(f"/api/runs/{runs['best'].pk}/score/", body, format="json")
    assert response.status_code == 400 and field in response.json()
    assert not Score.objects.filter(source=ScoreSource.HUMAN).exists()


@pytest.mark.django_db
def test_a_rating_of_another_experiments_item_is_refused(api, runs):
    stranger = make_experiment(name="Other").items.first()
    response = api.post(
        f"/api/runs/{runs['best'].pk}/score/", {"rating": 5, "item": stranger.pk}, format="json"
    )
    assert response.status_code == 400 and "item" in response.json()


@pytest.mark.django_db
def test_a_run_still_running_cannot_be_rated(api, experiment):
    run = scored_run(experiment, {}, {}, status=RunStatus.RUNNING)
    assert api.post(f"/api/runs/{run.pk}/score/", {"rating": 5}, format="json").status_code == 409
    assert not Score.objects.exists()


@pytest.mark.parametrize("spelling", [float, lambda pk: f" {pk}", int])
def test_a_viewer_cannot_start_an_ad_hoc_run_however_the_id_is_spelled(experiment, spelling):
    make_project(victor="viewer")
    client = APIClient()
    client.force_authenticate(User.objects.get(username="victor"))
    body = {"experiment": spelling(experiment.pk), "config": {}}
    response = client.post("/api/runs/", body, format="json")
    assert response.status_code == 403, response.content
    assert not Run.objects.filter(experiment=experiment, sweep__isnull=True).exists()
