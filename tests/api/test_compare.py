"""GET /api/runs/compare/?a=&b=: run b against run a, item by item."""

import pytest

from engine.bootstrap import ties
from runs.compare import marked_diff
from tests.api.helpers import scored_run, stage_result
from tests.factories import make_endpoint, make_experiment, make_project

pytestmark = pytest.mark.django_db

N_ITEMS = 8


@pytest.fixture
def experiment(db):
    items = [({"country": f"Country {i}"}, "") for i in range(N_ITEMS)]
    return make_experiment(make_endpoint(), items=items)


def run_with_outputs(experiment, temperature, scores, outputs):
    run = scored_run(experiment, {"temperature": temperature}, {"keyword": scores})
    for item, output in zip(experiment.items.order_by("position"), outputs, strict=True):
        stage_result(run, item, output=output)
    return run


@pytest.fixture
def before(experiment):
    return run_with_outputs(experiment, 0.0, [1.0] * N_ITEMS, [f"Capital {i}" for i in range(N_ITEMS)])


@pytest.fixture
def after(experiment):
    scores = [1.0] * (N_ITEMS - 2) + [0.0, 0.0]  # the last two rows got worse
    outputs = [f"Capital {i}" for i in range(N_ITEMS - 2)] + ["I do not know", "Capital 7?"]
    return run_with_outputs(experiment, 0.7, scores, outputs)


def test_the_comparison_lists_every_item_with_both_scores_outputs_and_the_delta(api, before, after):
    response = api.get(f"/api/runs/compare/?a={before.pk}&b={after.pk}")
    assert response.status_code == 200
    body = response.json()
    assert (body["a"], body["b"]) == (before.pk, after.pk)
    items = body["items"]
    assert len(items) == N_ITEMS
    ids = list(before.experiment.items.order_by("position").values_list("pk", flat=True))
    assert [i["item_id"] for i in items] == ids
    assert items[-2] == {
        "item_id": ids[-2],
        "a_score": 1.0,
        "b_score": 0.0,
        "delta": -1.0,
        "a_output": "Capital 6",
        "b_output": "I do not know",
    }
    assert body["regressions"] == ids[-2:]


def test_the_mean_delta_comes_with_its_paired_bootstrap_interval(api, before, after):
    body = api.get(f"/api/runs/compare/?a={before.pk}&b={after.pk}").json()
    assert body["mean_delta"] == pytest.approx(-2 / N_ITEMS)
    assert body["ci_low"] <= body["mean_delta"] <= body["ci_high"]
    assert body["ci_low"] < 0
    # The leaderboard's paired test on the same items reaches the same verdict.
    a = {i["item_id"]: i["a_score"] for i in body["items"]}
    b = {i["item_id"]: i["b_score"] for i in body["items"]}
    assert ties(a, [b])[0] is (body["ci_low"] <= 0 <= body["ci_high"])


def test_a_run_compared_with_itself_has_no_regressions(api, before):
    body = api.get(f"/api/runs/compare/?a={before.pk}&b={before.pk}").json()
    assert body["mean_delta"] == 0 and body["ci_low"] == body["ci_high"] == 0
    assert body["regressions"] == []


def test_only_items_both_runs_scored_are_compared(api, experiment, before):
    partial = scored_run(experiment, {"temperature": 0.3}, {"keyword": [0.5] + [None] * (N_ITEMS - 1)})
    body = api.get(f"/api/runs/compare/?a={before.pk}&b={partial.pk}").json()
    assert [i["delta"] for i in body["items"]] == [-0.5]
    assert body["items"][0]["b_output"] == ""  # the run stored no stage output


@pytest.mark.parametrize("query, field", [("?a=1", "b"), ("?b=1", "a"), ("?a=x&b=1", "a"), ("?a=1&b=0", "b")])
def test_missing_or_malformed_run_ids_are_a_400_naming_the_field(api, query, field):
    response = api.get("/api/runs/compare/" + query)
    assert response.status_code == 400
    assert field in response.json()


def test_runs_of_two_experiments_are_not_compared(api, before):
    other = make_experiment(make_endpoint("other"), name="Other")
    foreign = scored_run(other, {"temperature": 0.0}, {"keyword": [1.0, 1.0, 1.0]})
    response = api.get(f"/api/runs/compare/?a={before.pk}&b={foreign.pk}")
    assert response.status_code == 400
    assert "another experiment" in response.json()["b"]


def test_a_run_of_another_project_is_not_found(api, before):
    theirs = make_project("Theirs", mallory="admin")
    hidden = make_experiment(make_endpoint("theirs", project=theirs), name="Hidden")
    run = scored_run(hidden, {"temperature": 0.0}, {"keyword": [1.0, 1.0, 1.0]})
    assert api.get(f"/api/runs/compare/?a={before.pk}&b={run.pk}").status_code == 404
    assert api.get(f"/api/runs/compare/?a={run.pk}&b={before.pk}").status_code == 404


def test_the_marked_diff_wraps_only_the_changed_words():
    old, new = marked_diff("The capital is <Paris>", "The capital is Lyon")
    assert old == "The capital is <del>&lt;Paris&gt;</del>"
    assert new == "The capital is <ins>Lyon</ins>"
