"""Jobs: small functions that take ids and are safe to run twice.

They run on RQ workers when REDIS_URL is set, and in-process otherwise
(see runs/queue.py); the code path is the same.
"""

from __future__ import annotations

import asyncio
from typing import Any

from django.conf import settings
from django.utils import timezone

from engine.cache import ResponseCache
from engine.gateway import Gateway
from engine.runner import RunOutcome, run_single
from runs import bridge
from runs.control import describe, heartbeat
from runs.events import flush_publisher, loop_event_bus
from runs.models import Run, RunStatus
from runs.queue import worker_name


def claim_run(run_id: int) -> bool:
    """Take a pending run; False if another worker already took it."""
    return bool(
        Run.objects.filter(pk=run_id, status=RunStatus.PENDING).update(
            status=RunStatus.RUNNING,
            started_at=timezone.now(),
            heartbeat_at=timezone.now(),
            worker=worker_name(),
        )
    )


def execute_run(run_id: int, variables: dict[str, Any] | None = None) -> str:
    """Evaluate one ad-hoc run over its experiment's dataset, or over `variables`
    alone (one input of the caller's; no dataset row is created for it)."""
    try:
        return _execute_run(run_id, variables)
    finally:
        flush_publisher()  # an RQ work horse exits right after the job


def _execute_run(run_id: int, variables: dict[str, Any] | None) -> str:
    if not claim_run(run_id):
        return "skipped: not pending"
    run = Run.objects.select_related("experiment__endpoint").get(pk=run_id)
    items = None if variables is None else [bridge.input_item(variables)]
    try:
        spec = bridge.run_spec(run, items=items)
        outcome = asyncio.run(evaluate(spec, run.experiment.project_id, settings.MAX_CONCURRENT_RUNS))
    except Exception as exc:  # whatever it was, the run says so instead of staying "running"
        bridge.save_outcome(run_id, RunOutcome(run_id=run_id, status="failed", error=describe(exc)))
        return "failed"
    return outcome.status


async def evaluate(spec, project_id: int, max_concurrent: int) -> RunOutcome:
    async with bridge.DatabaseThreads() as db:
        cache = ResponseCache(bridge.OrmCacheStore(db, project_id))
        async with Gateway(cache, max_concurrent=max_concurrent) as gateway:
            sink = bridge.OrmResultSink(spec.run_id, db, worker=worker_name())
            beating = asyncio.create_task(keep_alive(db, worker_name()))
            try:
                return await run_single(spec, gateway, sink, events=loop_event_bus())
            finally:
                beating.cancel()


async def keep_alive(db: bridge.DatabaseThreads, worker: str) -> None:
    """Heartbeats while an ad-hoc run goes on, as a sweep's worker sends them: a run
    whose heartbeat ages is failed by the recovery (its worker died)."""
    every = max(0.5, settings.SWEEP_STALE_AFTER_S / 4)
    while True:
        await asyncio.sleep(every)
        await db.control(heartbeat, worker)
