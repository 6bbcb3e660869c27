"""Nothing stays running without a live owner: a server that restarts after a
crash, `resume_sweep --recover`, and a worker that crashes mid-sweep."""

import json
import subprocess
import sys
from collections import Counter
from datetime import timedelta

import httpx
import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.authtoken.models import Token

from runs import sweeps as sweep_jobs
from runs.models import ResponseCache, Run, RunStatus, SweepStatus
from runs.queue import wait_for_in_process_jobs, worker_name
from runs.sweeps import SweepRequest, launch_sweep, recover_sweeps
from tests.factories import make_endpoint, make_experiment
from tests.runs.sweep_helpers import quality_responder, runs_by_status, wait_for_sweep, wait_until
from tests.workers import SingleMachineServer

pytestmark = pytest.mark.django_db(transaction=True)

SPACE = {
    "temperature": [0.0, 0.5, 1.0],
    "top_p": [0.9, 1.0],
    "answer.user": ["Terse: capital of {{ country }}", "Please tell me the capital of {{ country }}"],
}
SCORERS = [{"type": "keyword", "weight": 1, "config": {"required_present": ["{{ capital }}"]}}]


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


def a_dead_process_name() -> str:
    """The worker name a process of this machine had, once it has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return f"{worker_name().split(':')[0]}:{proc.pid}:0123abcd"


def orphan(sweep, worker: str, count: int) -> None:
    """What a crash leaves: runs marked running by a worker that is gone."""
    ids = list(Run.objects.filter(sweep=sweep).order_by("position").values_list("id", flat=True)[:count])
    Run.objects.filter(pk__in=ids).update(status=RunStatus.RUNNING, worker=worker)


def paid_twice(stub) -> int:
    bodies = Counter(json.dumps(body, sort_keys=True) for body in stub.answered)
    return sum(n - 1 for n in bodies.values())


def test_a_sigkilled_server_finishes_its_sweep_after_a_restart(experiment, llm_stub, alice):
    token = Token.objects.create(user=alice)
    llm_stub.latency_ms = 20
    llm_stub.hold_after(10)  # 10 answers, then the calls in flight hang until the crash
    env = {"SWEEP_RECOVERY_INTERVAL_S": "1", "SWEEP_STALE_AFTER_S": "600"}
    server = SingleMachineServer(env).start()
    try:
        response = httpx.post(
            f"{server.url}/api/experiments/{experiment.pk}/sweep/",
            json={"type": "grid", "max_concurrent": 4},
            headers={"Authorization": f"Token {token.key}"},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        sweep = experiment.sweeps.get()
        # Every answer received is in the cache before the crash, and more calls are in flight.
        wait_until(lambda: len(llm_stub.answered) == 10 and ResponseCache.objects.count() == 10, timeout=60)
        wait_until(lambda: llm_stub.calls > 10)
        server.kill()
        llm_stub.drop_held()  # the calls in flight at the crash are never answered
        sweep.refresh_from_db()
        assert sweep.status == SweepStatus.RUNNING
        assert Run.objects.filter(sweep=sweep, status=RunStatus.RUNNING).exists()

        server.start()  # no heartbeat has expired: the dead process's runs are taken back at once
        sweep = wait_for_sweep(sweep, timeout=120)
    finally:
        server.stop()

    assert sweep.status == SweepStatus.COMPLETED
    assert runs_by_status(sweep) == {RunStatus.COMPLETED: 12}
    runs = Run.objects.filter(sweep=sweep)
    assert len(set(runs.values_list("config_hash", flat=True))) == 12  # one result per configuration
    assert all(run.stage_results.count() == 3 for run in runs)
    assert len(llm_stub.answered) == 36 and paid_twice(llm_stub) == 0  # no call paid twice


def test_resume_sweep_recover_works_in_single_machine_mode(experiment, llm_stub):
    sweep = launch_sweep(experiment, SweepRequest(type="grid"))
    wait_for_in_process_jobs(60)
    Run.objects.filter(sweep=sweep).update(status=RunStatus.PENDING, finished_at=None)
    sweep.__class__.objects.filter(pk=sweep.pk).update(status=SweepStatus.RUNNING, finished_at=None)
    orphan(sweep, a_dead_process_name(), 4)

    call_command("resume_sweep", sweep.pk, "--recover")

    sweep.refresh_from_db()
    assert sweep.status == SweepStatus.COMPLETED
    assert runs_by_status(sweep) == {RunStatus.COMPLETED: 12}


def test_recovery_leaves_runs_of_live_workers_alone(experiment, settings):
    settings.SWEEP_STALE_AFTER_S = 600
    sweep = launch_sweep(experiment, SweepRequest(type="grid"))
    wait_for_in_process_jobs(60)
    sweep.__class__.objects.filter(pk=sweep.pk).update(status=SweepStatus.RUNNING, finished_at=None)
    Run.objects.filter(sweep=sweep).update(status=RunStatus.PENDING)
    orphan(sweep, f"{worker_name()}:0123abcd", 4)  # this very process: alive

    assert recover_sweeps() == []
    assert Run.objects.filter(sweep=sweep, status=RunStatus.RUNNING).count() == 4


def test_runs_whose_heartbeat_expired_are_taken_back_and_finished(experiment, settings):
    settings.SWEEP_STALE_AFTER_S = 0
    sweep = wait_for_sweep(launch_sweep(experiment, SweepRequest(type="grid")))
    sweep.__class__.objects.filter(pk=sweep.pk).update(status=SweepStatus.RUNNING, finished_at=None)
    Run.objects.filter(sweep=sweep).update(status=RunStatus.PENDING)
    orphan(sweep, "another-machine:42:0123abcd", 3)

    assert recover_sweeps() == [sweep.pk]
    sweep = wait_for_sweep(sweep)
    assert sweep.status == SweepStatus.COMPLETED
    assert runs_by_status(sweep) == {RunStatus.COMPLETED: 12}


def test_a_crashed_orchestrator_fails_its_runs_and_the_sweep(experiment, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("the gateway blew up")

    monkeypatch.setattr(sweep_jobs, "Gateway", crash)
    sweep = wait_for_sweep(launch_sweep(experiment, SweepRequest(type="grid")))
    assert sweep.status == SweepStatus.FAILED
    assert "the gateway blew up" in sweep.error
    assert RunStatus.RUNNING not in runs_by_status(sweep) and RunStatus.PENDING not in runs_by_status(sweep)


def test_a_sweep_in_which_every_run_failed_ends_failed(experiment, llm_stub):
    llm_stub.fail_next("status", count=100, status=400, body='{"error": {"message": "bad model"}}')
    sweep = wait_for_sweep(launch_sweep(experiment, SweepRequest(type="grid")))
    assert sweep.status == SweepStatus.FAILED
    assert sweep.failed_runs == 12 and sweep.completed_runs == 0
    assert sweep.error.startswith("Every run failed. The first error: Stage 'answer'")


def test_an_ad_hoc_run_whose_worker_stopped_beating_fails_with_why(experiment, settings):
    """On any machine: a worker elsewhere that died leaves only an ageing heartbeat."""
    settings.SWEEP_STALE_AFTER_S = 60
    now = timezone.now()
    silent, alive = (
        Run.objects.create(
            experiment=experiment,
            config={"temperature": t},
            config_hash=str(t),
            status=RunStatus.RUNNING,
            worker="another-machine:42",
            heartbeat_at=beat,
        )
        for t, beat in ((0.1, now - timedelta(minutes=5)), (0.2, now))
    )
    recover_sweeps()
    silent.refresh_from_db()
    alive.refresh_from_db()
    assert silent.status == RunStatus.FAILED and "stopped before it finished" in silent.error
    assert alive.status == RunStatus.RUNNING


def test_a_sweep_whose_workers_all_died_with_no_run_held_is_finished(experiment, settings):
    """A worker that died after its last run and before finishing the sweep (or
    between two rounds) holds no run: only the sweep's own heartbeat tells."""
    settings.SWEEP_STALE_AFTER_S = 60
    sweep = wait_for_sweep(launch_sweep(experiment, SweepRequest(type="grid")))
    sweep.__class__.objects.filter(pk=sweep.pk).update(status=SweepStatus.RUNNING, finished_at=None)
    assert recover_sweeps() == []  # its heartbeat is fresh: a worker may be finishing it
    stale = timezone.now() - timedelta(minutes=5)
    sweep.__class__.objects.filter(pk=sweep.pk).update(heartbeat_at=stale)

    assert recover_sweeps() == [sweep.pk]
    assert wait_for_sweep(sweep).status == SweepStatus.COMPLETED
