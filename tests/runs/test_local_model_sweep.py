"""The bundled SmolLM2 under llama.cpp: a real sweep, real tokens, a warm cache."""

import pytest

from runs.models import Run, RunStatus, Score, StageResult, SweepStatus
from runs.sweeps import SweepRequest, launch_sweep
from tests.factories import make_endpoint, make_experiment
from tests.runs.sweep_helpers import wait_for_sweep

pytestmark = [pytest.mark.local_model, pytest.mark.django_db(transaction=True)]

ROWS = [
    ({"country": "France", "capital": "Paris"}, "The capital of France is Paris."),
    ({"country": "Japan", "capital": "Tokyo"}, "The capital of Japan is Tokyo."),
]


def test_a_2x2_grid_on_the_real_model_then_a_warm_rerun(local_llm):
    endpoint = make_endpoint(
        "local", base_url=local_llm.base_url, default_model=local_llm.alias, max_concurrency=1, timeout_s=120
    )
    experiment = make_experiment(
        endpoint,
        items=ROWS,
        pipeline=[
            {
                "name": "answer",
                "system": "You are a concise geography assistant.",
                "user": "What is the capital of {{ country }}?",
                "params": {"max_tokens": 24},
            }
        ],
        parameter_space={
            "temperature": [0.0, 0.8],
            "answer.user": [
                "What is the capital of {{ country }}?",
                "Name the capital city of {{ country }}.",
            ],
        },
        scorers=[
            {"type": "keyword", "weight": 2, "config": {"required_present": ["{{ capital }}"]}},
            {"type": "embedding", "weight": 1, "config": {}},
        ],
    )
    sweep = wait_for_sweep(launch_sweep(experiment, SweepRequest(type="grid")), timeout=240)
    assert sweep.status == SweepStatus.COMPLETED, sweep.error
    runs = Run.objects.filter(sweep=sweep)
    assert runs.count() == 4 and set(runs.values_list("status", flat=True)) == {RunStatus.COMPLETED}
    outputs = StageResult.objects.filter(run__sweep=sweep)
    assert outputs.count() == 8 and all(r.output.strip() for r in outputs)
    assert all(r.tokens_in > 5 and r.tokens_out > 0 and not r.cached for r in outputs)
    embeddings = Score.objects.filter(run__sweep=sweep, scorer="embedding").values_list("value", flat=True)
    assert len(embeddings) == 8 and all(0 <= v <= 1 for v in embeddings) and max(embeddings) > 0.3
    tokens_first = sweep.tokens_used
    assert tokens_first > 0

    rerun = wait_for_sweep(launch_sweep(experiment, SweepRequest(type="grid")), timeout=120)
    assert rerun.status == SweepStatus.COMPLETED
    assert rerun.tokens_used == 0  # nothing reached the model
    assert not StageResult.objects.filter(run__sweep=rerun, cached=False).exists()
    first = dict(runs.values_list("config_hash", "weighted_score"))
    second = dict(Run.objects.filter(sweep=rerun).values_list("config_hash", "weighted_score"))
    assert first == second
