"""Ad-hoc runs on one input of the caller's instead of the experiment's dataset.

The input travels as the job's argument (no hidden dataset row is created): the
run's stage results and scores have no item, and the leaderboard leaves such
runs out, since they were not scored on the dataset.
"""

from __future__ import annotations

import asyncio
from typing import Any

from django.conf import settings

from engine.runner import RunOutcome
from engine.types import Item
from runs import bridge
from runs.models import Run
from runs.tasks import claim_run, evaluate, execute_run


def input_item(variables: dict[str, Any]) -> Item:
    """A `reference` key is the expected answer, not a template variable."""
    variables = dict(variables)
    reference = variables.pop("reference", "")
    return Item(id=None, input=variables, reference=str(reference or ""))


def execute_adhoc_run(run_id: int, variables: dict[str, Any] | None = None) -> str:
    """Evaluate a pending run over `variables` alone, or over the dataset when None."""
    if variables is None:
        return execute_run(run_id)
    if not claim_run(run_id):
        return "skipped: not pending"
    run = Run.objects.select_related("experiment__endpoint").get(pk=run_id)
    try:
        spec = bridge.run_spec(run, items=[input_item(variables)])
    except (ValueError, KeyError) as exc:
        bridge.save_outcome(run_id, RunOutcome(run_id=run_id, status="failed", error=str(exc)))
        return "failed"
    return asyncio.run(evaluate(spec, max_concurrent=settings.MAX_CONCURRENT_RUNS)).status
