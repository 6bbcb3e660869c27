"""Racing in distributed mode: RQ worker processes share each round, and a race
decides exactly as it does on one machine with the same seed."""

import time

import pytest
from django.core.management import call_command

from runs.models import ResponseCache, Run, RunStatus, Sweep, SweepStatus
from runs.sweeps import SweepRequest, launch_sweep
from tests import workers
from tests.factories import make_endpoint, make_experiment
from tests.graded_stub import by_temperature, graded_rows
from tests.runs.sweep_helpers import wait_for_sweep, wait_until

ACCURACY = {0.0: 0.95, 0.2: 0.9, 0.4: 0.6, 0.6: 0.3, 0.8: 0.1, 1.0: 0.0}
# 12 candidates in pairs of equals; each worker's first claim takes one top_p's six.
SPACE = {"top_p": [0.9, 1.0], "temperature": list(ACCURACY)}


@pytest.fixture
def experiment(llm_stub, distributed):
    llm_stub.responder = by_temperature(ACCURACY)
    return make_experiment(
        make_endpoint(base_url=llm_stub.base_url),
        pipeline=[{"name": "answer", "user": "Question {{ q }}"}],
        parameter_space=SPACE,
        scorers=[{"type": "keyword", "weight": 1, "config": {"required_present": ["{{ reference }}"]}}],
        items=graded_rows(60),
    )


def decisions(sweep) -> tuple[list, dict]:
    """Each round (rows, candidates, who led, who was dropped) and where every
    configuration stopped, by configuration: run ids differ between sweeps."""
    runs = {run.pk: run for run in Run.objects.filter(sweep=sweep)}
    rounds = [
        (
            r["rows"],
            r["candidates"],
            runs[r["leader"]].config_hash,
            sorted(runs[i].config_hash for i in r["eliminated"]),
        )
        for r in sweep.race["rounds"]
    ]
    return rounds, {run.config_hash: run.eliminated_after for run in runs.values()}


def test_two_workers_share_the_rounds_and_decide_as_one_machine_does(
    experiment, llm_stub, distributed, settings
):
    settings.REDIS_URL = ""  # one machine first: the in-process worker
    settings.SWEEP_WORKERS = 1
    alone = wait_for_sweep(launch_sweep(experiment, SweepRequest(type="racing", seed=5, max_concurrent=4)))
    calls_alone = llm_stub.calls
    ResponseCache.objects.all().delete()  # the second race pays for its own answers

    settings.REDIS_URL = workers.TEST_REDIS_URL
    settings.SWEEP_WORKERS = 2
    distributed.start(2)
    llm_stub.latency_ms = 20
    shared = wait_for_sweep(launch_sweep(experiment, SweepRequest(type="racing", seed=5, max_concurrent=4)))

    assert alone.status == shared.status == SweepStatus.COMPLETED, (alone.error, shared.error)
    assert len(alone.race["rounds"]) >= 2 and alone.race["rounds"][0]["eliminated"]
    assert decisions(shared) == decisions(alone)
    assert llm_stub.calls == 2 * calls_alone  # the same calls, each paid once per race
    first_round = Run.objects.filter(sweep=shared, eliminated_after=alone.race["rounds"][0]["rows"])
    assert len({w.rsplit(":", 1)[0] for w in first_round.values_list("worker", flat=True)}) == 2


def test_a_race_whose_workers_are_sigkilled_mid_round_recovers_to_the_same_decisions(
    experiment, llm_stub, distributed, settings
):
    settings.REDIS_URL = ""
    settings.SWEEP_WORKERS = 1
    alone = wait_for_sweep(launch_sweep(experiment, SweepRequest(type="racing", seed=5, max_concurrent=4)))
    ResponseCache.objects.all().delete()

    settings.REDIS_URL = workers.TEST_REDIS_URL
    settings.SWEEP_WORKERS = 2
    settings.SWEEP_STALE_AFTER_S = 1
    first, second = distributed.start(2)
    llm_stub.latency_ms = 60
    sweep = launch_sweep(experiment, SweepRequest(type="racing", seed=5, max_concurrent=4))
    in_round_two = lambda: len(Sweep.objects.get(pk=sweep.pk).race["rounds"]) >= 2  # noqa: E731
    wait_until(lambda: in_round_two() and Run.objects.filter(sweep=sweep, status=RunStatus.RUNNING).exists())
    distributed.kill(first)
    distributed.kill(second)
    time.sleep(1.5)  # their heartbeats go stale

    distributed.start(1)
    call_command("resume_sweep", sweep.pk, "--recover")
    sweep = wait_for_sweep(sweep)

    assert sweep.status == SweepStatus.COMPLETED
    assert decisions(sweep) == decisions(alone)
    for run in Run.objects.filter(sweep=sweep):
        # One result per row of the run's last slice: none lost, none doubled.
        rows = run.eliminated_after or sweep.race["rounds"][-1]["rows"]
        assert run.stage_results.count() == rows
