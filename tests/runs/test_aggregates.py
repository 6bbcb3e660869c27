"""What a run keeps when it completes equals what the full computation over its
scores and stage results gives: after completion, a re-run of the same
configuration, a human rating and a deletion (runs/aggregates.py)."""

import importlib
import statistics
from collections import defaultdict

import pytest
from django.apps import apps
from django.db.models import F

from engine import bootstrap
from runs.leaderboard import leaderboard, record_rating
from runs.models import Run, RunStatus, ScoreSource
from runs.queue import enqueue, wait_for_in_process_jobs
from runs.sweeps import SweepRequest, launch_sweep
from runs.tasks import execute_run
from tests.factories import make_endpoint, make_experiment

ANSWERS = {"France": "Paris, of course.", "Japan": "Kyoto, I think.", "Peru": "Lima."}
SCORERS = [
    {"type": "keyword", "weight": 2.0, "config": {"required_present": ["{{ capital }}"]}},
    {"type": "human", "weight": 1.0, "config": {}},
]


def answer(body: dict) -> str:
    prompt = body["messages"][-1]["content"]
    return next(reply for country, reply in ANSWERS.items() if country in prompt)


@pytest.fixture
def stub(llm_stub):
    llm_stub.responder = answer
    llm_stub.latency_ms = lambda body: 30.0 if "Peru" in str(body) else 10.0
    return llm_stub


@pytest.fixture
def experiment(stub, transactional_db):
    return make_experiment(make_endpoint(base_url=stub.base_url), scorers=SCORERS)


def completed_run(experiment, config: dict | None = None) -> Run:
    """A run executed for real against the stub, as an ad-hoc run is."""
    config = config if config is not None else {"temperature": 0.0}
    run = Run.objects.create(experiment=experiment, config=config, config_hash=str(sorted(config.items())))
    enqueue(execute_run, run.pk)
    assert wait_for_in_process_jobs(timeout=30)
    run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED, run.error
    return run


# -- the full computation, written apart from runs/aggregates.py ----------------------
def full_computation(run: Run) -> dict:
    weights = {(s.get("name") or s["type"]): s["weight"] for s in run.experiment.scorers}
    sums: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0.0])
    by_scorer: dict[str, list[float]] = defaultdict(list)
    for score in run.scores.filter(source=ScoreSource.AUTO):
        by_scorer.setdefault(score.scorer, [])
        if score.value is None:
            continue
        by_scorer[score.scorer].append(score.value)
        if weights.get(score.scorer, 0) > 0:
            sums[(score.item_id, score.sample_index)][0] += weights[score.scorer] * score.value
            sums[(score.item_id, score.sample_index)][1] += weights[score.scorer]
    samples: dict[int, list[float]] = defaultdict(list)
    for (item, _), (num, den) in sums.items():
        samples[item].append(num / den)
    items = {item: statistics.fmean(values) for item, values in samples.items()}
    calls = list(run.stage_results.all())
    latencies = sorted(c.latency_ms for c in calls if not c.cached)
    return {
        "n_items": len(items),
        "item_scores": {str(item): value for item, value in items.items()},
        "interval": bootstrap.interval(items),
        "scorer_means": {name: statistics.fmean(v) if v else None for name, v in by_scorer.items()},
        "cached_tokens": sum(c.tokens_in + c.tokens_out for c in calls if c.cached),
        "latency_p50_ms": latencies[round(0.5 * (len(latencies) - 1))] if latencies else None,
        "latency_p95_ms": latencies[round(0.95 * (len(latencies) - 1))] if latencies else None,
    }


def stored(run: Run) -> dict:
    run.refresh_from_db()
    return {
        "n_items": run.n_items,
        "item_scores": run.item_scores,
        "interval": (run.ci_low, run.ci_high),
        "scorer_means": run.scorer_means,
        "cached_tokens": run.cached_tokens,
        "latency_p50_ms": run.latency_p50_ms,
        "latency_p95_ms": run.latency_p95_ms,
    }


def latest_by_full_scan(experiment) -> set[int]:
    """Each configuration's most recently finished, scored, completed run."""
    runs = Run.objects.filter(experiment=experiment, status=RunStatus.COMPLETED, weighted_score__isnull=False)
    latest: dict[str, int] = {}
    for run in runs.order_by(F("finished_at").asc(nulls_first=True), "id"):
        latest[run.config_hash] = run.pk
    return set(latest.values())


def marked_latest(experiment) -> set[int]:
    return set(Run.objects.filter(experiment=experiment, is_latest=True).values_list("id", flat=True))


def assert_equal_figures(run: Run) -> None:
    kept, full = stored(run), full_computation(run)
    assert kept.keys() == full.keys()
    for key in kept:
        assert kept[key] == pytest.approx(full[key]), key


# -- the tests --------------------------------------------------------------------------
def test_a_completed_run_keeps_what_the_full_computation_gives(experiment):
    run = completed_run(experiment)
    assert_equal_figures(run)
    assert run.n_items == 3 and run.scorer_means["keyword"] == pytest.approx(2 / 3)
    assert run.scorer_means["human"] is None  # nobody has rated yet
    assert run.latency_p95_ms >= 30.0 > 10.0 <= run.latency_p50_ms
    assert marked_latest(experiment) == latest_by_full_scan(experiment) == {run.pk}


def test_a_rerun_of_the_same_configuration_takes_over_the_mark(experiment):
    first = completed_run(experiment)
    other = completed_run(experiment, {"temperature": 0.5})
    again = completed_run(experiment)  # the cache answers every call this time
    assert_equal_figures(again)
    assert again.cached_calls == 3 and again.cached_tokens > 0 and again.latency_p50_ms is None
    assert marked_latest(experiment) == latest_by_full_scan(experiment) == {again.pk, other.pk}
    assert first.pk not in {row["run_id"] for row in leaderboard(experiment)}


def test_a_human_rating_refreshes_what_the_run_keeps(experiment, alice):
    run = completed_run(experiment)
    before = leaderboard(experiment)[0]
    item = experiment.items.get(position=1)  # Japan: the keyword scorer gave it 0
    record_rating(run, alice, 10, item=item)
    assert_equal_figures(run)
    assert run.scorer_means["human"] == pytest.approx(1.0)
    row = leaderboard(experiment)[0]
    assert row["scorer_means"] == run.scorer_means and row["weighted_score"] > before["weighted_score"]
    assert (row["ci_low"], row["ci_high"]) == (run.ci_low, run.ci_high)


def test_deleting_the_latest_run_hands_the_mark_back(experiment):
    first = completed_run(experiment)
    again = completed_run(experiment)
    again.delete()
    assert marked_latest(experiment) == latest_by_full_scan(experiment) == {first.pk}
    assert [row["run_id"] for row in leaderboard(experiment)] == [first.pk]


def test_the_migration_backfills_runs_that_completed_before_it(experiment):
    runs = [completed_run(experiment), completed_run(experiment, {"temperature": 0.5})]
    Run.objects.update(is_latest=False, ci_low=None, ci_high=None, n_items=0, item_scores={}, scorer_means={})
    migration = importlib.import_module("runs.migrations.0007_backfill_run_aggregates")
    migration.backfill(apps, None)
    for run in runs:
        assert_equal_figures(run)
    assert marked_latest(experiment) == latest_by_full_scan(experiment) == {r.pk for r in runs}


def test_a_failed_run_is_never_ranked(experiment, stub):
    stub.fail_next(kind="status", count=50, status=400)
    run = Run.objects.create(experiment=experiment, config={"temperature": 1.0}, config_hash="failing")
    enqueue(execute_run, run.pk)
    assert wait_for_in_process_jobs(timeout=30)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and not run.is_latest
    assert leaderboard(experiment) == []


def test_a_sweeps_runs_keep_what_the_full_computation_gives(experiment):
    """A sweep's worker counts the aggregates as it writes the rows (RunTally)
    instead of reading them back: the figures must be the same."""
    experiment.parameter_space = {"temperature": [0.0, 0.5, 1.0]}
    experiment.save()
    earlier = completed_run(experiment)  # temperature 0.0 answered already: its sweep run is cached
    sweep = launch_sweep(experiment, SweepRequest(type="grid", repeats=2))
    assert wait_for_in_process_jobs(timeout=60)
    sweep.refresh_from_db()
    assert sweep.status == "completed", sweep.error
    runs = list(sweep.runs.all())
    assert len(runs) == 3 and any(run.cached_calls for run in runs)
    for run in runs:
        assert_equal_figures(run)
    # The ad-hoc run keys its configuration apart (see completed_run): it keeps its own mark.
    marked = {earlier.pk} | {run.pk for run in runs}
    assert marked_latest(experiment) == latest_by_full_scan(experiment) == marked
