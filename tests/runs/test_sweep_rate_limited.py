"""A sweep against a server that rate limits: every run completes (the 429s are
waited out and retried by the gateway's adaptive limit), none fails."""

import pytest

from runs.models import RunStatus, SweepStatus
from runs.sweeps import SweepRequest, launch_sweep
from tests.factories import make_endpoint, make_experiment
from tests.runs.sweep_helpers import quality_responder, runs_by_status, wait_for_sweep

pytestmark = pytest.mark.django_db(transaction=True)

SPACE = {"temperature": [0.0, 0.5, 1.0], "top_p": [0.9, 1.0], "seed": [1, 2]}


def test_a_sweep_at_16_against_a_server_that_takes_2_ends_with_no_failed_run(llm_stub):
    llm_stub.responder = quality_responder
    llm_stub.capacity, llm_stub.retry_after, llm_stub.latency_ms = 2, "0.05", 100
    endpoint = make_endpoint(base_url=llm_stub.base_url)
    experiment = make_experiment(endpoint, parameter_space=SPACE)
    sweep = launch_sweep(experiment, SweepRequest(type="grid", max_concurrent=16))
    sweep = wait_for_sweep(sweep, timeout=120)
    assert sweep.status == SweepStatus.COMPLETED
    assert runs_by_status(sweep) == {RunStatus.COMPLETED: 12}
    assert llm_stub.rate_limited > 0  # the server did refuse calls...
    assert llm_stub.max_serving == 2  # ...and never served more than it could
    assert len(llm_stub.answered) == sweep.estimate["calls"]


def test_two_workers_each_slow_down_and_the_sweep_ends_with_no_failed_run(llm_stub, distributed, settings):
    settings.SWEEP_WORKERS = 2
    distributed.start(2)
    llm_stub.responder = quality_responder
    llm_stub.capacity, llm_stub.retry_after, llm_stub.latency_ms = 2, "0.05", 100
    experiment = make_experiment(make_endpoint(base_url=llm_stub.base_url), parameter_space=SPACE)
    sweep = launch_sweep(experiment, SweepRequest(type="grid", max_concurrent=16))
    sweep = wait_for_sweep(sweep, timeout=120)
    assert sweep.status == SweepStatus.COMPLETED
    assert runs_by_status(sweep) == {RunStatus.COMPLETED: 12}
    assert llm_stub.rate_limited > 0 and llm_stub.max_serving == 2
