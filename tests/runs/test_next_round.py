"""A guided or racing sweep opens its next round only while it runs, once every run
of the round is in (runs.sweeps.next_round, one rule for both)."""

import pytest

from runs.models import Run, RunStatus, Sweep, SweepStatus, SweepType
from runs.sweeps import next_round
from tests.factories import make_endpoint, make_experiment

pytestmark = pytest.mark.django_db


def guided_sweep(status: str, run_status: str = RunStatus.COMPLETED) -> Sweep:
    experiment = make_experiment(make_endpoint())
    sweep = Sweep.objects.create(
        experiment=experiment,
        type=SweepType.GUIDED,
        status=status,
        total_runs=6,
        config={"parameter_space": {"temperature": {"min": 0.0, "max": 1.0}}, "seed": 1, "workers": 1},
    )
    for n, temperature in enumerate((0.2, 0.8)):
        Run.objects.create(
            experiment=experiment,
            sweep=sweep,
            config={"temperature": temperature},
            config_hash=str(n),
            status=run_status,
            weighted_score=temperature,
        )
    return sweep


def test_a_running_guided_sweep_proposes_its_next_round():
    sweep = guided_sweep(SweepStatus.RUNNING)
    assert next_round(sweep)
    assert sweep.runs.filter(status=RunStatus.PENDING).count() == 4


@pytest.mark.parametrize("status", [SweepStatus.STOPPING, SweepStatus.PAUSED])
def test_a_sweep_being_stopped_or_paused_opens_no_round(status):
    sweep = guided_sweep(status)
    assert not next_round(sweep)
    assert sweep.runs.count() == 2


def test_no_round_opens_while_a_run_of_this_one_is_out():
    sweep = guided_sweep(SweepStatus.RUNNING, run_status=RunStatus.RUNNING)
    assert not next_round(sweep)
    assert sweep.runs.count() == 2
