"""Racing sweeps in single-machine mode: rounds, eliminations, the calls they save,
a pause and a resume, and a budget that runs out mid-round."""

import pytest

from runs.events import event_bus
from runs.leaderboard import leaderboard
from runs.models import Run, RunStatus, SweepStatus
from runs.queue import wait_for_in_process_jobs
from runs.racing import race_summary
from runs.sweeps import SweepRequest, launch_sweep
from tests.factories import make_endpoint, make_experiment
from tests.graded_stub import by_temperature, graded_rows
from tests.runs.sweep_helpers import runs_by_status, wait_for_sweep, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

# Two strong configurations, four plainly weak ones.
ACCURACY = {0.0: 1.0, 0.2: 0.97, 0.4: 0.05, 0.6: 0.05, 0.8: 0.05, 1.0: 0.0}
SPACE = {"temperature": list(ACCURACY)}
ROWS = 40  # slices of 10, 20 and 40 rows


@pytest.fixture
def experiment(llm_stub):
    llm_stub.responder = by_temperature(ACCURACY)
    return make_experiment(
        make_endpoint(base_url=llm_stub.base_url),
        pipeline=[{"name": "answer", "user": "Question {{ q }}"}],
        parameter_space=SPACE,
        scorers=[{"type": "keyword", "weight": 1, "config": {"required_present": ["{{ reference }}"]}}],
        items=graded_rows(ROWS),
    )


def eliminations(sweep) -> dict[float, int | None]:
    return {r.config["temperature"]: r.eliminated_after for r in Run.objects.filter(sweep=sweep)}


def test_a_race_drops_the_clear_losers_after_the_first_slice(experiment, llm_stub):
    sweep = wait_for_sweep(launch_sweep(experiment, SweepRequest(type="racing", seed=3)))
    assert sweep.status == SweepStatus.COMPLETED
    assert eliminations(sweep) == {0.0: None, 0.2: None, 0.4: 10, 0.6: 10, 0.8: 10, 1.0: 10}
    # Six candidates on 10 rows, then the two survivors on 10 and 20 new rows.
    assert llm_stub.calls == 6 * 10 + 2 * 10 + 2 * 20
    race = race_summary(sweep)
    assert race["schedule"] == [10, 20, 40] and race["finished"]
    assert (race["calls"], race["grid_calls"], race["calls_saved"]) == (120, 240, 120)
    assert [(r["rows"], r["candidates"], len(r["eliminated"])) for r in race["rounds"]] == [
        (10, 6, 4),
        (20, 2, 0),
        (40, 2, 0),
    ]
    assert runs_by_status(sweep) == {RunStatus.COMPLETED: 6}


def test_a_survivor_adds_each_round_to_the_rows_it_scored_before(experiment):
    sweep = wait_for_sweep(launch_sweep(experiment, SweepRequest(type="racing", seed=3)))
    best = Run.objects.get(sweep=sweep, config={"temperature": 0.0})
    # Rounds of 10, 10 and 20 new rows: every row asked once, its results kept.
    assert (best.calls, best.cached_calls, best.stage_results.count()) == (40, 0, 40)
    assert best.weighted_score == 1.0 and best.tokens_in == 40 * 2
    assert best.scorer_stats["keyword"] == {
        "scored": 40,
        "errors": 0,
        "mean_spread": None,
        "spread_outputs": 0,
    }
    dropped = Run.objects.get(sweep=sweep, config={"temperature": 1.0})
    assert (dropped.calls, dropped.stage_results.count(), dropped.weighted_score) == (10, 10, 0.0)


def test_survivors_are_ranked_on_every_row_above_the_eliminated(experiment):
    sweep = wait_for_sweep(launch_sweep(experiment, SweepRequest(type="racing", seed=3)))
    rows = leaderboard(experiment, n=10, sweep_id=sweep.pk)
    assert [r["config"]["temperature"] for r in rows[:2]] == [0.0, 0.2]
    assert [r["n_items"] for r in rows] == [40, 40, 10, 10, 10, 10]
    assert [r["eliminated_after"] for r in rows] == [None, None, 10, 10, 10, 10]
    assert rows[0]["tied_with_leader"] is True and rows[-1]["tied_with_leader"] is False
    assert rows[2]["weighted_score"] >= rows[-1]["weighted_score"]


def test_every_round_is_announced_with_its_eliminations(experiment):
    sweep = wait_for_sweep(launch_sweep(experiment, SweepRequest(type="racing", seed=3)))
    rounds = [e.data for e in event_bus().recent(experiment.pk) if e.type == "sweep.round"]
    assert [(r["round"], r["rows"], r["next_rows"]) for r in rounds] == [
        (1, 10, 20),
        (2, 20, 40),
        (3, 40, None),
    ]
    dropped = set(Run.objects.filter(sweep=sweep, eliminated_after=10).values_list("id", flat=True))
    assert set(rounds[0]["eliminated"]) == dropped
    assert rounds[-1]["calls_saved"] == 120


def test_a_paused_race_resumes_to_the_same_decisions_without_paying_twice(experiment, llm_stub):
    llm_stub.latency_ms = 50  # rounds two and three take seconds: the pause lands in them
    sweep = launch_sweep(experiment, SweepRequest(type="racing", seed=3, max_concurrent=2))
    wait_until(lambda: len(type(sweep).objects.get(pk=sweep.pk).race["rounds"]) >= 2)
    sweep.pause()
    assert wait_for_in_process_jobs(30)
    assert not Run.objects.filter(sweep=sweep, status=RunStatus.RUNNING).exists()
    sweep.resume()
    sweep = wait_for_sweep(sweep)
    assert sweep.status == SweepStatus.COMPLETED
    assert eliminations(sweep) == {0.0: None, 0.2: None, 0.4: 10, 0.6: 10, 0.8: 10, 1.0: 10}
    assert len(llm_stub.requests) == 120  # calls answered before the pause came from the cache


def test_a_budget_that_runs_out_mid_round_stops_the_race(experiment, llm_stub):
    llm_stub.latency_ms = 5
    # A call costs 3 to 6 tokens: the first round's 60 calls fit, the whole race's 120 do not.
    sweep = launch_sweep(experiment, SweepRequest(type="racing", seed=3, max_concurrent=2, max_tokens=400))
    sweep = wait_for_sweep(sweep)
    assert wait_for_in_process_jobs(30)
    sweep.refresh_from_db()  # the status shows before the last worker has settled the counts
    assert sweep.status == SweepStatus.BUDGET_EXHAUSTED
    race = race_summary(sweep)
    assert race["round"] >= 2 and not race["finished"]
    assert "leader" not in race["rounds"][-1]  # the round the budget cut short was never decided
    assert eliminations(sweep) == {0.0: None, 0.2: None, 0.4: 10, 0.6: 10, 0.8: 10, 1.0: 10}
    # The survivors the budget cut keep the last round they finished, and lead the leaderboard.
    assert runs_by_status(sweep) == {RunStatus.COMPLETED: 6}
    rows = leaderboard(experiment, n=10, sweep_id=sweep.pk)
    assert [r["eliminated_after"] for r in rows] == [None, None, 10, 10, 10, 10]
    assert {r["n_items"] for r in rows[:2]} <= {20, 40} and {r["n_items"] for r in rows[2:]} == {10}
    assert sweep.completed_runs == 6
    assert llm_stub.calls < 120


def test_a_stopped_race_cancels_what_is_left_and_keeps_its_eliminations(experiment, llm_stub):
    llm_stub.latency_ms = 50  # rounds two and three take seconds: the stop lands in them
    sweep = launch_sweep(experiment, SweepRequest(type="racing", seed=3, max_concurrent=2))
    wait_until(lambda: len(type(sweep).objects.get(pk=sweep.pk).race["rounds"]) >= 2)
    sweep.stop()
    sweep = wait_for_sweep(sweep)
    assert wait_for_in_process_jobs(30)
    assert sweep.status == SweepStatus.STOPPED and not race_summary(sweep)["finished"]
    assert runs_by_status(sweep) == {RunStatus.COMPLETED: 6}  # the cut survivors keep their last round
    assert eliminations(sweep) == {0.0: None, 0.2: None, 0.4: 10, 0.6: 10, 0.8: 10, 1.0: 10}
    assert llm_stub.calls < 120


def test_repeats_and_a_two_stage_pipeline_race_as_one_stage_does(experiment, llm_stub):
    experiment.pipeline = [
        {"name": "draft", "user": "Draft for question {{ q }}"},
        {"name": "answer", "user": "Question {{ q }}; the draft said: {{ previous }}"},
    ]
    experiment.save()
    sweep = wait_for_sweep(launch_sweep(experiment, SweepRequest(type="racing", seed=3, repeats=2)))
    assert sweep.status == SweepStatus.COMPLETED
    assert eliminations(sweep) == {0.0: None, 0.2: None, 0.4: 10, 0.6: 10, 0.8: 10, 1.0: 10}
    # Two stages, two samples: four calls per candidate and row; the grid would make 960.
    assert llm_stub.calls == 4 * (6 * 10 + 2 * 10 + 2 * 20) == race_summary(sweep)["calls"]
    assert race_summary(sweep)["grid_calls"] == 960
    survivor = Run.objects.get(sweep=sweep, config={"temperature": 0.0})
    assert survivor.stage_results.count() == 40 * 2 * 2
