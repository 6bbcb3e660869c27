"""GET /api/runs/leaderboard/ and the runs.leaderboard functions the UI shares."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from engine.bootstrap import ties
from runs.aggregates import summarize
from runs.leaderboard import leaderboard, pareto_front
from runs.models import RunStatus, Score
from tests.api.helpers import scored_run
from tests.factories import make_endpoint, make_experiment

pytestmark = pytest.mark.django_db

SCORERS = [
    {"type": "keyword", "weight": 1, "config": {"required_present": ["x"]}},
    {"type": "format", "name": "length", "weight": 3, "config": {"check": "length", "max_tokens": 5}},
]
N_ITEMS = 12


@pytest.fixture
def experiment(db):
    items = [({"country": f"Country {i}"}, "") for i in range(N_ITEMS)]
    return make_experiment(make_endpoint(), items=items, scorers=SCORERS)


def run(experiment, temperature, keyword, length, **fields):
    return scored_run(
        experiment, {"temperature": temperature}, {"keyword": keyword, "length": length}, **fields
    )


def weighted(keyword, length):
    return sum((k + 3 * v) / 4 for k, v in zip(keyword, length, strict=True)) / len(keyword)


@pytest.fixture
def runs(experiment):
    perfect = [1.0] * N_ITEMS
    one_miss = [1.0] * (N_ITEMS - 1) + [0.0]
    poor = [0.2] * N_ITEMS
    made = {}
    made["stale"] = run(
        experiment, 0.0, poor, poor, weighted_score=0.2
    )  # an older run of the leader's config
    made["leader"] = run(experiment, 0.0, perfect, perfect, weighted_score=1.0, tokens_in=500, latency_ms=90)
    made["close"] = run(
        experiment,
        0.3,
        one_miss,
        one_miss,
        weighted_score=weighted(one_miss, one_miss),
        tokens_in=50,
        latency_ms=40,
    )
    made["poor"] = run(experiment, 0.9, poor, poor, weighted_score=0.2, tokens_in=60, latency_ms=95)
    made["failed"] = run(experiment, 1.5, perfect, perfect, status=RunStatus.FAILED, weighted_score=1.0)
    own = scored_run(
        experiment, {"temperature": 2.0}, {}, weighted_score=1.0
    )  # an ad-hoc run on its own input
    Score.objects.create(run=own, item=None, scorer="keyword", value=1.0)
    summarize(own.pk)
    return made


def test_the_leaderboard_ranks_configurations_by_weighted_score(api, experiment, runs):
    response = api.get("/api/runs/leaderboard/", {"experiment": experiment.pk, "n": 10})
    assert response.status_code == 200
    rows = response.json()["results"]
    assert [row["run_id"] for row in rows] == [runs["leader"].pk, runs["close"].pk, runs["poor"].pk]
    assert [row["rank"] for row in rows] == [1, 2, 3]
    leader = rows[0]
    assert leader["config"] == {"temperature": 0.0} and leader["weighted_score"] == 1.0
    assert leader["n_items"] == N_ITEMS and leader["scorer_means"] == {"keyword": 1.0, "length": 1.0}
    assert leader["tokens_in"] == 500 and leader["tokens_out"] == 20 and leader["latency_ms"] == 90


def test_the_confidence_interval_is_a_bootstrap_over_items(experiment, runs):
    leader, close, poor = leaderboard(experiment)
    assert leader["ci_low"] == leader["ci_high"] == 1.0  # every item scored 1
    assert poor["ci_low"] == pytest.approx(0.2) and poor["ci_high"] == pytest.approx(0.2)
    assert close["ci_low"] < close["weighted_score"] < close["ci_high"] == 1.0


def test_ties_with_the_leader_come_from_a_paired_bootstrap(experiment, runs):
    leader, close, poor = leaderboard(experiment)
    assert leader["tied_with_leader"] is True
    assert close["tied_with_leader"] is True  # one item of twelve differs: not enough to tell
    assert poor["tied_with_leader"] is False


def test_the_paired_bootstrap_is_deterministic_and_needs_shared_items():
    leader = {i: 1.0 for i in range(20)}
    slightly_worse = {i: (0.9 if i % 2 else 1.0) for i in range(20)}
    assert ties(leader, [slightly_worse])[0] is False  # worse on half the items, never better
    assert ties(leader, [slightly_worse])[0] == ties(leader, [slightly_worse])[0]
    assert ties(leader, [{100: 1.0}])[0] is None


def test_n_limits_the_rows_and_a_sweep_narrows_them(api, experiment, runs):
    rows = api.get("/api/runs/leaderboard/", {"experiment": experiment.pk, "n": 1}).json()["results"]
    assert [row["run_id"] for row in rows] == [runs["leader"].pk]
    assert (
        api.get("/api/runs/leaderboard/", {"experiment": experiment.pk, "sweep": 999}).json()["results"] == []
    )


def test_the_queries_do_not_grow_with_the_number_of_runs(experiment, runs):
    with CaptureQueriesContext(connection) as few:
        leaderboard(experiment, n=3)
    for i in range(30):
        run(experiment, 5 + i, [0.1] * N_ITEMS, [0.1] * N_ITEMS, weighted_score=0.1)
    with CaptureQueriesContext(connection) as many:
        rows = leaderboard(experiment, n=3)
    assert len(many) == len(few) <= 4 and len(rows) == 3


def test_pareto_front_keeps_the_rows_nothing_beats_everywhere(experiment, runs):
    rows = leaderboard(experiment)
    front = pareto_front(rows)
    # The leader scores best, "close" is cheapest and fastest; "poor" loses to "close" on every count.
    assert [row["run_id"] for row in front] == [runs["leader"].pk, runs["close"].pk]
    assert [row["pareto"] for row in rows] == [True, True, False]


@pytest.mark.parametrize(
    "params,status,field",
    [({}, 400, "experiment"), ({"experiment": 1, "n": 0}, 400, "n"), ({"experiment": 999}, 404, None)],
)
def test_bad_leaderboard_queries(api, params, status, field):
    response = api.get("/api/runs/leaderboard/", params)
    assert response.status_code == status
    if field:
        assert field in response.json()


def test_an_experiment_without_results_has_an_empty_leaderboard(api, experiment):
    assert api.get("/api/runs/leaderboard/", {"experiment": experiment.pk}).json()["results"] == []


def test_each_row_shows_its_judges_unrated_outputs_and_spread(api):
    judge = {"type": "llm_judge", "name": "judge", "weight": 1, "config": {"samples": 3}}
    experiment = make_experiment(make_endpoint(), scorers=[*SCORERS, judge])
    run = scored_run(
        experiment, {"temperature": 0.2}, {"keyword": [1.0, 0.5, 0.0], "judge": [0.5, None, 1.0]}
    )
    stats = {
        "judge": {"scored": 2, "errors": 1, "mean_spread": 0.75, "spread_outputs": 2},
        "keyword": {"scored": 3, "errors": 0, "mean_spread": None, "spread_outputs": 0},
    }
    run.scorer_stats = stats
    run.save(update_fields=["scorer_stats"])
    row = api.get(f"/api/runs/leaderboard/?experiment={experiment.pk}").json()["results"][0]
    # Only judges are listed; an output the judge could not rate is counted, not scored 0.
    assert row["judges"] == {"judge": {"could_not_rate": 1, "mean_spread": 0.75}}
    assert row["scorer_means"]["judge"] == pytest.approx(0.75)


def test_a_race_ranks_its_survivors_first_then_who_got_furthest(api, experiment):
    one_miss = [1.0] * (N_ITEMS - 1) + [0.0]
    survivor = run(experiment, 0.1, one_miss, one_miss, weighted_score=weighted(one_miss, one_miss))
    # Scores of the eliminated are on fewer rows: a high one does not lift them above a survivor.
    early = run(experiment, 0.2, [1.0] * N_ITEMS, [1.0] * N_ITEMS, weighted_score=1.0, eliminated_after=4)
    later = run(experiment, 0.3, [0.2] * N_ITEMS, [0.2] * N_ITEMS, weighted_score=0.2, eliminated_after=8)
    rows = api.get("/api/runs/leaderboard/", {"experiment": experiment.pk}).json()["results"]
    assert [row["run_id"] for row in rows] == [survivor.pk, later.pk, early.pk]
    assert [row["eliminated_after"] for row in rows] == [None, 8, 4]
    assert all(row["ci_low"] is not None and row["tied_with_leader"] is not None for row in rows)
