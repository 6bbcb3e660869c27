"""Sweeps in distributed mode: real RQ worker processes, Redis flags, PostgreSQL."""

import json
import time
from collections import Counter

import pytest
from django.core.management import call_command

from runs.models import ResponseCache, Run, RunStatus, SweepStatus
from runs.sweeps import SweepRequest, launch_sweep
from tests.factories import make_endpoint, make_experiment
from tests.runs.sweep_helpers import quality_responder, runs_by_status, wait_for_sweep, wait_until

SPACE = {
    "temperature": [0.0, 0.5, 1.0],
    "top_p": [0.9, 1.0],
    "answer.user": ["Terse: capital of {{ country }}", "Please tell me the capital of {{ country }}"],
}
SCORERS = [{"type": "keyword", "weight": 1, "config": {"required_present": ["{{ capital }}"]}}]


@pytest.fixture
def experiment(llm_stub, distributed):
    llm_stub.responder = quality_responder
    endpoint = make_endpoint(base_url=llm_stub.base_url)
    return make_experiment(
        endpoint,
        pipeline=[{"name": "answer", "user": "Capital of {{ country }}?"}],
        parameter_space=SPACE,
        scorers=SCORERS,
    )


def test_two_workers_share_one_sweep(experiment, llm_stub, distributed, settings):
    settings.SWEEP_WORKERS = 2
    distributed.start(2)
    llm_stub.latency_ms = 30
    sweep = wait_for_sweep(launch_sweep(experiment, SweepRequest(type="grid", max_concurrent=4)))
    assert sweep.status == SweepStatus.COMPLETED
    assert runs_by_status(sweep) == {RunStatus.COMPLETED: 12}
    workers = {w.rsplit(":", 1)[0] for w in Run.objects.filter(sweep=sweep).values_list("worker", flat=True)}
    assert len(workers) == 2  # both processes took runs
    assert llm_stub.calls == 36
    assert llm_stub.max_in_flight <= 4


def test_pause_and_resume_through_redis(experiment, llm_stub, distributed):
    distributed.start(1)
    llm_stub.latency_ms = 80
    sweep = launch_sweep(experiment, SweepRequest(type="grid", max_concurrent=2))
    wait_until(lambda: Run.objects.filter(sweep=sweep, status=RunStatus.COMPLETED).count() >= 2)
    sweep.pause()
    wait_until(lambda: not Run.objects.filter(sweep=sweep, status=RunStatus.RUNNING).exists())
    calls = llm_stub.calls
    time.sleep(0.5)
    assert llm_stub.calls == calls
    sweep.resume()
    sweep = wait_for_sweep(sweep)
    assert runs_by_status(sweep) == {RunStatus.COMPLETED: 12}
    assert llm_stub.calls == 36


def test_a_sigkilled_worker_is_recovered_without_losing_or_repaying(
    experiment, llm_stub, distributed, settings
):
    settings.SWEEP_WORKERS = 2
    settings.SWEEP_STALE_AFTER_S = 1
    first, second = distributed.start(2)
    llm_stub.latency_ms = 20
    llm_stub.hold_after(10)  # 10 answers, then the calls in flight hang until the crash
    sweep = launch_sweep(experiment, SweepRequest(type="grid", max_concurrent=4))
    # Every answer received is in the cache before the crash, and more calls are in flight.
    wait_until(lambda: len(llm_stub.answered) == 10 and ResponseCache.objects.count() == 10, timeout=60)
    wait_until(lambda: llm_stub.calls > 10)
    distributed.kill(first)
    distributed.kill(second)
    llm_stub.drop_held()  # the calls in flight at the crash are never answered
    assert Run.objects.filter(sweep=sweep, status=RunStatus.RUNNING).exists()  # orphaned
    time.sleep(1.5)  # their heartbeats go stale

    distributed.start(1)
    call_command("resume_sweep", sweep.pk, "--recover")
    sweep = wait_for_sweep(sweep)

    assert sweep.status == SweepStatus.COMPLETED
    runs = Run.objects.filter(sweep=sweep)
    assert runs.count() == 12 and runs_by_status(sweep) == {RunStatus.COMPLETED: 12}
    assert len(set(runs.values_list("config_hash", flat=True))) == 12  # each configuration once
    for run in runs:
        assert run.stage_results.count() == 3  # one result per item, none doubled
    # Answers received before the kill were stored and never paid again.
    answered = Counter(json.dumps(body, sort_keys=True) for body in llm_stub.answered)
    assert len(llm_stub.answered) == 36 and max(answered.values()) == 1
    assert len(set(ResponseCache.objects.values_list("config_hash", flat=True))) == 36
