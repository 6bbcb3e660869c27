"""A key that no longer decrypts (SECRET_KEY changed) fails what needs it, at
once and saying so, and nothing that does not need it."""

import pytest
from django.test import override_settings

from runs.models import Run, RunStatus, SweepStatus
from runs.sweeps import SweepRequest, launch_sweep
from tests.factories import make_endpoint, make_experiment
from tests.runs.sweep_helpers import runs_by_status, wait_for_sweep

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGE = "The key of endpoint 'keyed' cannot be decrypted with this SECRET_KEY; enter it again"


def test_a_sweep_that_needs_the_key_fails_at_once_saying_why(llm_stub):
    endpoint = make_endpoint("keyed", base_url=llm_stub.base_url, api_key="sk-old")
    experiment = make_experiment(endpoint)
    with override_settings(SECRET_KEY="a-rotated-secret-key-that-decrypts-nothing-stored"):
        sweep = wait_for_sweep(launch_sweep(experiment, SweepRequest(type="grid")), timeout=30)
    assert sweep.status == SweepStatus.FAILED
    assert runs_by_status(sweep) == {RunStatus.FAILED: 2}
    assert all(MESSAGE in run.error for run in Run.objects.filter(sweep=sweep))
    assert MESSAGE in sweep.error
    assert llm_stub.calls == 0


def test_endpoints_a_run_does_not_use_are_never_decrypted(llm_stub):
    make_endpoint("keyed", base_url=llm_stub.base_url, api_key="sk-old")
    experiment = make_experiment(make_endpoint("keyless", base_url=llm_stub.base_url))
    with override_settings(SECRET_KEY="a-rotated-secret-key-that-decrypts-nothing-stored"):
        sweep = wait_for_sweep(launch_sweep(experiment, SweepRequest(type="grid")), timeout=30)
    assert sweep.status == SweepStatus.COMPLETED
    assert runs_by_status(sweep) == {RunStatus.COMPLETED: 2}


def test_a_judge_on_an_undecryptable_endpoint_fails_the_runs_that_use_it(llm_stub):
    make_endpoint("keyed", base_url=llm_stub.base_url, api_key="sk-old")
    judge = {"type": "llm_judge", "weight": 1, "config": {"endpoint": "keyed", "model": "stub-large"}}
    experiment = make_experiment(make_endpoint("keyless", base_url=llm_stub.base_url), scorers=[judge])
    with override_settings(SECRET_KEY="a-rotated-secret-key-that-decrypts-nothing-stored"):
        sweep = wait_for_sweep(launch_sweep(experiment, SweepRequest(type="grid")), timeout=30)
    assert sweep.status == SweepStatus.FAILED
    assert all(MESSAGE in run.error for run in Run.objects.filter(sweep=sweep))
