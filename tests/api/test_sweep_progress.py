"""Progress per call: /api/sweeps/{id}/ and sweep.progress events count the calls
answered, not only the runs finished, a few events a second at most."""

import pytest

from engine.events import EventType
from runs.events import event_bus, flush_publisher
from runs.models import PROGRESS_EVERY_S, Sweep
from tests.factories import make_endpoint, make_experiment
from tests.runs.sweep_helpers import quality_responder, wait_for_sweep, wait_until

SPACE = {"temperature": [0.0, 1.0]}  # two runs of three calls each


@pytest.fixture
def slow_experiment(llm_stub):
    llm_stub.responder = quality_responder
    llm_stub.latency_ms = 300
    return make_experiment(make_endpoint(base_url=llm_stub.base_url), parameter_space=SPACE)


@pytest.mark.django_db(transaction=True)
def test_the_sweep_counts_answered_calls_before_its_first_run_ends(api, slow_experiment):
    body = {"type": "grid", "max_concurrent": 1}
    data = api.post(f"/api/experiments/{slow_experiment.pk}/sweep/", body, format="json").json()
    assert data["calls_done"] == 0 and data["total_calls"] == 6
    url = f"/api/sweeps/{data['id']}/"
    early = wait_until(lambda: (d := api.get(url).json())["calls_done"] >= 1 and d, timeout=30)
    assert early["completed_runs"] == 0  # a run is three calls of 300 ms: none has ended yet
    wait_for_sweep(Sweep.objects.get(pk=data["id"]))
    done = api.get(url).json()
    assert done["calls_done"] == done["total_calls"] == 6 and done["completed_runs"] == 2


@pytest.mark.django_db(transaction=True)
def test_progress_events_carry_the_call_counts_and_are_throttled(api, slow_experiment):
    body = {"type": "grid", "max_concurrent": 1}
    data = api.post(f"/api/experiments/{slow_experiment.pk}/sweep/", body, format="json").json()
    sweep = wait_for_sweep(Sweep.objects.get(pk=data["id"]))
    assert flush_publisher(10)
    events = [e for e in event_bus().recent(slow_experiment.pk) if e.type == EventType.SWEEP_PROGRESS]
    counts = [e.data["calls_done"] for e in events if "calls_done" in e.data]
    assert counts == sorted(counts) and counts[-1] == 6
    assert any(e.data["completed_runs"] == 0 and e.data["calls_done"] > 0 for e in events)
    assert all(e.data["total_calls"] == 6 for e in events if "total_calls" in e.data)
    # Call counts at most one per PROGRESS_EVERY_S, plus one per finished run and the end.
    seconds = (sweep.finished_at - sweep.started_at).total_seconds()
    assert len(events) <= seconds / PROGRESS_EVERY_S + sweep.total_runs + 2
