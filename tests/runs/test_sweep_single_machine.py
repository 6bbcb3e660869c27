"""Sweeps in single-machine mode: the in-process worker, the database as the flag."""

import pytest

from runs.events import event_bus
from runs.models import Run, RunStatus, SweepStateError, SweepStatus
from runs.queue import wait_for_in_process_jobs
from runs.sweeps import SweepRequest, SweepRequestError, launch_sweep
from tests.factories import make_endpoint, make_experiment
from tests.llm_stub import count_tokens
from tests.runs.sweep_helpers import quality_responder, runs_by_status, wait_for_sweep

pytestmark = pytest.mark.django_db(transaction=True)

PIPELINE = [{"name": "answer", "user": "{{ style }} capital of {{ country }}?"}]
SPACE = {
    "temperature": [0.0, 0.5, 1.0],
    "top_p": [0.9, 1.0],
    "answer.user": ["Terse: capital of {{ country }}", "Please tell me the capital of {{ country }}"],
}
SCORERS = [
    {"type": "keyword", "weight": 1, "config": {"required_present": ["{{ capital }}"]}},
    {
        "type": "format",
        "name": "length",
        "weight": 1,
        "config": {"check": "length", "min_tokens": 1, "max_tokens": 3},
    },
]


@pytest.fixture
def experiment(llm_stub):
    llm_stub.responder = quality_responder
    endpoint = make_endpoint(base_url=llm_stub.base_url)
    return make_experiment(
        endpoint,
        pipeline=[{"name": "answer", "user": "Capital of {{ country }}?"}],
        parameter_space=SPACE,
        scorers=SCORERS,
    )


def test_a_grid_of_3x2x2_yields_exactly_12_runs(experiment, llm_stub):
    sweep = launch_sweep(experiment, SweepRequest(type="grid"))
    assert sweep.total_runs == 12 and sweep.estimate["calls"] == 36
    sweep = wait_for_sweep(sweep)
    assert sweep.status == SweepStatus.COMPLETED
    assert runs_by_status(sweep) == {RunStatus.COMPLETED: 12}
    assert sweep.completed_runs == 12 and llm_stub.calls == 36
    assert sweep.tokens_used > 0
    best = Run.objects.filter(sweep=sweep).order_by("-weighted_score").first()
    assert best.config["temperature"] == 0.0 and best.config["answer.user"].startswith("Terse")
    assert best.weighted_score == 1.0


def test_events_tell_the_story_in_order(experiment):
    sweep = wait_for_sweep(launch_sweep(experiment, SweepRequest(type="grid")))
    # The status turns final a moment before the job announces it: the events are all
    # in once the job has returned.
    assert wait_for_in_process_jobs(60)
    events = event_bus().recent(experiment.pk)
    ids = [e.id for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    kinds = [e.type for e in events]
    assert kinds[0] == "sweep.started" and kinds[-1] == "sweep.completed"
    assert kinds.count("run.completed") == 12
    assert all("output" not in e.data for e in events)
    last_progress = [e for e in events if e.type == "sweep.progress"][-1]
    assert last_progress.data["completed_runs"] == 12
    assert sweep.pk == events[-1].sweep_id


def test_second_sweep_is_refused_while_one_is_active(experiment, llm_stub):
    llm_stub.latency_ms = 50
    launch_sweep(experiment, SweepRequest(type="grid"))
    with pytest.raises(SweepStateError):
        launch_sweep(experiment, SweepRequest(type="grid"))
    wait_for_in_process_jobs(60)


def test_random_without_n_samples_is_refused(experiment):
    with pytest.raises(SweepRequestError) as info:
        launch_sweep(experiment, SweepRequest(type="random"))
    assert "n_samples" in str(info.value)


def test_sweep_over_the_limit_is_refused_with_its_size(experiment, settings):
    settings.MAX_SWEEP_RUNS = 10
    with pytest.raises(SweepRequestError) as info:
        launch_sweep(experiment, SweepRequest(type="grid"))
    assert "12" in str(info.value) and "10" in str(info.value)


def slow_experiment(llm_stub, latency_ms=60):
    llm_stub.latency_ms = latency_ms
    return None


def test_pause_lets_calls_in_flight_finish_and_resume_pays_nothing_twice(experiment, llm_stub):
    from tests.runs.sweep_helpers import wait_until

    llm_stub.latency_ms = 80
    sweep = launch_sweep(experiment, SweepRequest(type="grid", max_concurrent=2))
    wait_until(lambda: Run.objects.filter(sweep=sweep, status=RunStatus.COMPLETED).count() >= 2)
    sweep.pause()
    assert wait_for_in_process_jobs(30)
    counts = runs_by_status(sweep)
    assert RunStatus.RUNNING not in counts and counts.get(RunStatus.PENDING, 0) > 0
    calls_at_pause = llm_stub.calls
    sweep.refresh_from_db()
    assert sweep.status == SweepStatus.PAUSED
    import time

    time.sleep(0.3)
    assert llm_stub.calls == calls_at_pause  # nothing dispatched while paused
    sweep.resume()
    sweep = wait_for_sweep(sweep)
    assert sweep.status == SweepStatus.COMPLETED
    assert runs_by_status(sweep) == {RunStatus.COMPLETED: 12}
    assert llm_stub.calls == 36  # calls finished before the pause were not paid again
    kinds = [e.type for e in event_bus().recent(experiment.pk)]
    assert "sweep.paused" in kinds and "sweep.resumed" in kinds


def test_stop_cancels_the_rest(experiment, llm_stub):
    from tests.runs.sweep_helpers import wait_until

    llm_stub.latency_ms = 80
    sweep = launch_sweep(experiment, SweepRequest(type="grid", max_concurrent=2))
    wait_until(lambda: Run.objects.filter(sweep=sweep, status=RunStatus.COMPLETED).count() >= 2)
    sweep.stop()
    sweep = wait_for_sweep(sweep)
    assert wait_for_in_process_jobs(30)
    assert sweep.status == SweepStatus.STOPPED
    counts = runs_by_status(sweep)
    assert set(counts) <= {RunStatus.COMPLETED, RunStatus.CANCELLED}
    assert counts[RunStatus.CANCELLED] > 0 and counts[RunStatus.COMPLETED] >= 2
    assert sweep.cancelled_runs == counts[RunStatus.CANCELLED]
    assert llm_stub.calls < 36
    assert event_bus().recent(experiment.pk)[-1].type == "sweep.stopped"


def test_pause_and_stop_follow_the_state_rules(experiment, llm_stub):
    llm_stub.latency_ms = 50
    sweep = launch_sweep(experiment, SweepRequest(type="grid", max_concurrent=1))
    with pytest.raises(SweepStateError):
        sweep.resume()  # not paused
    sweep.pause()
    with pytest.raises(SweepStateError):
        sweep.pause()  # already paused
    wait_for_in_process_jobs(30)
    sweep.stop()  # a paused sweep stops at once
    assert sweep.status == SweepStatus.STOPPED
    with pytest.raises(SweepStateError):
        sweep.resume()
    assert not Run.objects.filter(sweep=sweep, status__in=[RunStatus.PENDING, RunStatus.RUNNING]).exists()


def test_a_token_budget_stops_the_sweep(experiment, llm_stub):
    llm_stub.latency_ms = 20
    sweep = launch_sweep(experiment, SweepRequest(type="grid", max_concurrent=2, max_tokens=150))
    sweep = wait_for_sweep(sweep)
    assert wait_for_in_process_jobs(30)
    assert sweep.status == SweepStatus.BUDGET_EXHAUSTED
    counts = runs_by_status(sweep)
    assert counts.get(RunStatus.CANCELLED, 0) > 0 and RunStatus.PENDING not in counts
    assert sweep.tokens_used >= 150
    # Overshoot is bounded by what the calls already in flight (2 at most) spent.
    # What one call costs, as the stub counts it: the prompt's words and the answer's.
    per_call = max(
        count_tokens(" ".join(m["content"] for m in r["messages"])) + count_tokens(quality_responder(r))
        for r in llm_stub.requests
    )
    assert sweep.tokens_used - 150 <= 2 * per_call
    assert "overshot it by" in sweep.error
    assert event_bus().recent(experiment.pk)[-1].type == "sweep.budget_exhausted"


def peaked_responder(body):
    """Longer (worse, under a length scorer) the further from temperature 0.4,
    top_p 0.8 and the terse prompt."""
    distance = round(10 * abs(body["temperature"] - 0.4)) + round(10 * abs(body["top_p"] - 0.8))
    distance += 0 if body["messages"][-1]["content"].startswith("Terse") else 3
    return " ".join(["word"] * (3 + 2 * distance))


def test_guided_sweep_finds_the_peak(llm_stub):
    llm_stub.responder = peaked_responder
    space = {
        "temperature": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
        "top_p": [0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
        "answer.user": ["Terse: capital of {{ country }}", "Please name the capital of {{ country }}"],
    }
    scorers = [
        {
            "type": "format",
            "name": "length",
            "weight": 1,
            "config": {"check": "length", "min_tokens": 1, "max_tokens": 3},
        }
    ]
    experiment = make_experiment(
        make_endpoint(base_url=llm_stub.base_url),
        parameter_space=space,
        scorers=scorers,
        items=[({"country": "Peru"}, "Lima")],
    )
    sweep = wait_for_sweep(launch_sweep(experiment, SweepRequest(type="guided", n_samples=30, seed=7)))
    assert sweep.status == SweepStatus.COMPLETED
    assert Run.objects.filter(sweep=sweep).count() == 30
    best = Run.objects.filter(sweep=sweep).order_by("-weighted_score").first()
    assert best.weighted_score == 1.0
    assert best.config == {"temperature": 0.4, "top_p": 0.8, "answer.user": space["answer.user"][0]}


def test_repeats_sample_each_item_n_times(experiment, llm_stub):
    space = {"temperature": [0.9]}
    sweep = wait_for_sweep(
        launch_sweep(experiment, SweepRequest(type="grid", parameter_space=space, repeats=3))
    )
    assert sweep.status == SweepStatus.COMPLETED
    run = Run.objects.get(sweep=sweep)
    assert llm_stub.calls == 9  # 3 items x 3 samples, each its own cache key
    assert sorted(set(run.stage_results.values_list("sample_index", flat=True))) == [0, 1, 2]
    assert run.score_spread is not None
