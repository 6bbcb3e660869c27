"""execute_run as a job: in-process without Redis, on a real RQ worker with it."""

import time

import pytest

from runs.models import Run, RunStatus
from runs.queue import enqueue, wait_for_in_process_jobs
from runs.tasks import execute_run
from tests.factories import make_endpoint, make_experiment


def wait_for_status(run: Run, timeout: float = 30) -> Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.status in (RunStatus.COMPLETED, RunStatus.FAILED):
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run.pk} still {run.status}")


@pytest.fixture
def run(llm_stub, transactional_db):
    experiment = make_experiment(make_endpoint(base_url=llm_stub.base_url))
    return Run.objects.create(experiment=experiment, config={"temperature": 0.1}, config_hash="x")


def test_in_process_worker_runs_the_job_after_commit(run, llm_stub):
    enqueue(execute_run, run.pk)
    assert wait_for_in_process_jobs(timeout=30)
    assert wait_for_status(run).status == RunStatus.COMPLETED
    assert llm_stub.calls == 3


def test_rq_worker_process_runs_the_job(run, llm_stub, distributed):
    distributed.start(1)
    enqueue(execute_run, run.pk)
    run = wait_for_status(run)
    assert run.status == RunStatus.COMPLETED, run.error
    assert run.worker and run.worker.split(":")[1] != str(__import__("os").getpid())
    assert llm_stub.calls == 3
