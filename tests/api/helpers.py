"""Rows for API tests that need results without running an LLM."""

from typing import Any

from engine.sweep import config_key
from experiments.models import Experiment
from runs.aggregates import summarize
from runs.models import Run, RunStatus, Score, StageResult, Sweep

STUB_PIPELINE = [{"name": "answer", "system": "Be brief.", "user": "Capital of {{ country }}?"}]
STUB_DATASET = [
    {"input": {"country": "France", "capital": "Paris"}, "reference": "Paris"},
    {"input": {"country": "Japan", "capital": "Tokyo"}, "reference": "Tokyo"},
    {"input": {"country": "Peru", "capital": "Lima"}, "reference": "Lima"},
]
KEYWORD = {"type": "keyword", "weight": 1.0, "config": {"required_present": ["{{ capital }}"]}}


def scored_run(
    experiment: Experiment,
    config: dict[str, Any],
    scores: dict[str, list[float | None]],
    sweep: Sweep | None = None,
    status: str = RunStatus.COMPLETED,
    **fields: Any,
) -> Run:
    """A finished run whose scorers gave `scores[name][i]` to dataset item i;
    weighted_score as the runner computes it (equal weights)."""
    items = list(experiment.items.order_by("position"))
    per_item = []
    for i in range(len(items)):
        values = [v[i] for v in scores.values() if v[i] is not None]
        if values:
            per_item.append(sum(values) / len(values))
    fields.setdefault("weighted_score", sum(per_item) / len(per_item) if per_item else None)
    fields.setdefault("tokens_in", 100)
    fields.setdefault("tokens_out", 20)
    run = Run.objects.create(
        experiment=experiment,
        sweep=sweep,
        config=config,
        config_hash=config_key(config),
        status=status,
        **fields,
    )
    Score.objects.bulk_create(
        Score(run=run, item=item, scorer=name, value=values[i])
        for name, values in scores.items()
        for i, item in enumerate(items)
    )
    summarize(run.pk)  # as the runner does when a run finishes (runs/bridge.save_outcome)
    run.refresh_from_db()
    return run


def stage_result(
    run: Run, item=None, cached: bool = False, latency_ms: float = 100.0, **fields: Any
) -> StageResult:
    fields.setdefault("tokens_in", 10)
    fields.setdefault("tokens_out", 5)
    fields.setdefault("output", "Paris")
    return StageResult.objects.create(
        run=run,
        item=item,
        stage_index=0,
        stage_name="answer",
        user_prompt="Capital of France?",
        cached=cached,
        latency_ms=latency_ms,
        config_hash="h",
        **fields,
    )
