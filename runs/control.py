"""The ORM (and, in distributed mode, Redis) side of a sweep's orchestration:
claiming runs, handing them back, the shared token count, and the pause/stop
flag every worker reads between calls."""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from endpoints.crypto import DecryptionError
from engine.runner import ITEM_CONCURRENCY, ResultSink, RunOutcome, RunSpec
from engine.types import EngineError, Item
from experiments.models import Experiment
from runs import bridge
from runs.aggregates import RunTally, scorer_weights
from runs.models import Run, RunStatus, Sweep
from runs.queue import worker_name


class SweepRuns:
    """engine.orchestrator.RunSource and SweepControl for one worker on one sweep."""

    def __init__(
        self,
        sweep: Sweep,
        db: bridge.DatabaseThreads,
        keys: bridge.EndpointKeys,
        items: list[Item],
        repeats: int,
        item_concurrency: int = ITEM_CONCURRENCY,
    ):
        self.sweep_id = sweep.pk
        self.workers = max(1, int(sweep.config.get("workers", 1)))
        self.item_concurrency = item_concurrency
        self.db = db
        self.experiment = sweep.experiment
        self.keys, self.items, self.repeats = keys, items, repeats
        self.weights = scorer_weights(self.experiment)
        self.outcomes = bridge.WriteBatches(db, bridge.save_outcomes)
        self.batches = bridge.WriteBatches(db, bridge.save_rows)
        self.token = f"{worker_name()}:{uuid.uuid4().hex[:8]}"

    # -- RunSource --------------------------------------------------------
    async def claim(self, limit: int) -> list[RunSpec] | None:
        return await self.db.control(self._claim, limit)

    def _claim(self, limit: int) -> list[RunSpec] | None:
        limit = self._share_left(limit)
        if limit == 0:
            return None
        # Empty only when no run is pending: runs that failed while being
        # prepared (e.g. a key that no longer decrypts) do not end the claiming.
        while runs := self._take(limit):
            specs = self._specs(runs)
            if specs:
                return specs
        return []

    def _share_left(self, limit: int) -> int:
        """With workers sharing the sweep, each holds at most its share of the runs
        left: a worker that started first would otherwise claim the runs of a few-
        configuration sweep alone and run them at its part of the concurrency."""
        if self.workers <= 1:
            return limit
        counts = Run.objects.filter(
            sweep_id=self.sweep_id, status__in=(RunStatus.PENDING, RunStatus.RUNNING)
        ).aggregate(left=Count("id"), held=Count("id", filter=Q(worker=self.token, status=RunStatus.RUNNING)))
        share = -(-counts["left"] // self.workers)
        return max(0, min(limit, share - counts["held"])) if counts["left"] else limit

    def _take(self, limit: int) -> list[Run]:
        pending = Run.objects.filter(sweep_id=self.sweep_id, status=RunStatus.PENDING)
        runs: list[Run] = []
        # If other workers took every run we picked (between our SELECT and UPDATE), pick again.
        while not runs:
            ids = list(pending.order_by("position", "id").values_list("id", flat=True)[:limit])
            if not ids:
                return []
            now = timezone.now()
            # Conditional update: a run another worker took in the meantime is not taken twice.
            Run.objects.filter(pk__in=ids, status=RunStatus.PENDING).update(
                status=RunStatus.RUNNING, worker=self.token, started_at=now, heartbeat_at=now
            )
            runs = list(
                Run.objects.filter(pk__in=ids, worker=self.token, status=RunStatus.RUNNING).order_by(
                    "position"
                )
            )
        return runs

    def _specs(self, runs: list[Run]) -> list[RunSpec]:
        claimed = [run.pk for run in runs]
        self.clear_earlier_attempts(claimed)
        ratings = bridge.human_scores_of(claimed)
        specs, failed = [], []
        for run in runs:
            run.experiment = self.experiment
            try:
                spec = bridge.run_spec(run, self.items, self.keys, self.repeats, ratings[run.pk])
                spec.item_concurrency = self.item_concurrency
                specs.append(spec)
            except Exception as exc:  # this run fails, now, with the reason; the others go on
                failed.append((run.pk, RunOutcome(run_id=run.pk, status="failed", error=describe(exc)), None))
        if failed:
            bridge.save_outcomes(failed)
        return specs

    def clear_earlier_attempts(self, run_ids: list[int]) -> None:
        bridge.clear_results(run_ids)

    async def release(self, run_ids: list[Any], cancel: bool) -> None:
        await self.db.write(release_runs, run_ids, cancel)

    def sink(self, spec: RunSpec) -> ResultSink:
        return bridge.OrmResultSink(
            spec.run_id,
            self.db,
            worker=self.token,
            claimed=True,
            tally=RunTally(self.weights),
            outcomes=self.outcomes,
            batches=self.batches,
        )

    # -- SweepControl -----------------------------------------------------
    async def state(self) -> str:
        return await self.db.read(Sweep.objects.read_state, self.sweep_id)

    async def add_tokens(self, tokens: int) -> int:
        return await self.db.control(self._add_tokens, tokens)

    def _add_tokens(self, tokens: int) -> int:
        sweep = Sweep.objects.filter(pk=self.sweep_id)
        if tokens:
            sweep.update(tokens_used=F("tokens_used") + tokens)
        return sweep.values_list("tokens_used", flat=True).get()

    async def progress(self, outcomes: list[RunOutcome]) -> None:
        await self.db.control(self._progress, outcomes)

    def _progress(self, outcomes: list[RunOutcome]) -> None:
        completed = sum(1 for o in outcomes if o.status == "completed")
        Sweep.objects.filter(pk=self.sweep_id).update(
            completed_runs=F("completed_runs") + completed,
            failed_runs=F("failed_runs") + len(outcomes) - completed,
            progress_at=timezone.now(),
        )
        Sweep.objects.get(pk=self.sweep_id).publish_progress()

    async def add_calls(self, calls: int) -> None:
        await self.db.control(self._add_calls, calls)

    def _add_calls(self, calls: int) -> None:
        Sweep.objects.filter(pk=self.sweep_id).update(calls_done=F("calls_done") + calls)
        if Sweep.objects.filter(pk=self.sweep_id).claim_progress_event():
            Sweep.objects.get(pk=self.sweep_id).publish_progress()

    async def heartbeat(self) -> None:
        await self.db.control(self._heartbeat)

    def _heartbeat(self) -> None:
        heartbeat(self.token)
        Sweep.objects.filter(pk=self.sweep_id).update(heartbeat_at=timezone.now())


def heartbeat(token: str) -> int:
    """Mark the runs `token` holds as alive; how many it marked."""
    held = Run.objects.filter(worker=token, status=RunStatus.RUNNING)
    if not connection.features.has_select_for_update_skip_locked:  # SQLite: one writer at a time
        return held.update(heartbeat_at=timezone.now())
    with transaction.atomic():
        # Skip the runs being finished right now: their outcome's transaction has them
        # locked, and a heartbeat waiting for it while holding other runs it touched
        # first deadlocked against it (PostgreSQL then waits a second to tell).
        ids = list(held.select_for_update(skip_locked=True).values_list("id", flat=True))
        return Run.objects.filter(id__in=ids).update(heartbeat_at=timezone.now())


def describe(exc: Exception) -> str:
    return (
        str(exc)
        if isinstance(exc, (EngineError, DecryptionError, ValueError))
        else f"{type(exc).__name__}: {exc}"
    )


def fail_held_runs(token: str, error: str) -> int:
    """The runs a worker still holds when its orchestrator crashed: failed, with why."""
    held = Run.objects.filter(worker=token, status=RunStatus.RUNNING)
    return held.update(status=RunStatus.FAILED, error=error[:5000], finished_at=timezone.now())


def release_runs(run_ids: list[Any], cancel: bool) -> None:
    runs = Run.objects.filter(pk__in=run_ids, status=RunStatus.RUNNING)
    if cancel:
        runs.update(status=RunStatus.CANCELLED, finished_at=timezone.now())
    else:
        runs.update(status=RunStatus.PENDING, worker="", heartbeat_at=None)


def recover_stale_runs(sweep_id: int) -> int:
    """Hand back the sweep's runs whose worker died (see ownerless)."""
    running = Run.objects.filter(sweep_id=sweep_id, status=RunStatus.RUNNING)
    return running.filter(ownerless(running)).update(status=RunStatus.PENDING, worker="", heartbeat_at=None)


def recover_ad_hoc_runs() -> int:
    """Ad-hoc runs (no sweep) whose worker died are failed, with why (nothing
    would run them again: an ad-hoc run is a single job)."""
    running = Run.objects.filter(sweep__isnull=True, status=RunStatus.RUNNING)
    return running.filter(ownerless(running)).update(
        status=RunStatus.FAILED,
        error="The process running it stopped before it finished; run it again.",
        finished_at=timezone.now(),
    )


def ownerless(running: Any) -> Q:
    """Which of the `running` runs have lost their worker: no heartbeat for
    SWEEP_STALE_AFTER_S, or, in single-machine mode, held by a process of this
    machine that is gone (found at once, without waiting for the heartbeat to age)."""
    cutoff = timezone.now() - timedelta(seconds=settings.SWEEP_STALE_AFTER_S)
    gone = Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True)
    if not settings.REDIS_URL:
        gone |= Q(
            worker__in=[w for w in running.values_list("worker", flat=True).distinct() if owner_is_dead(w)]
        )
    return gone


def owner_is_dead(worker: str) -> bool:
    """True if `worker` (host:pid[:...], see runs.queue.worker_name) names a process
    of this machine that no longer exists. Only for single-machine mode: hosts of
    a cluster may share a name, and their process ids mean nothing here."""
    host, _, rest = worker.partition(":")
    pid = rest.split(":", 1)[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


# -- the endpoints a sweep calls -------------------------------------------------------
def sweep_endpoints(experiment: Experiment, space: dict[str, Any]) -> set[str]:
    """Every endpoint a sweep over `space` may call: the experiment's and its judges'
    (bridge.endpoints_used), a stage's own `endpoint` parameter, and any the space
    names as `endpoint` / `<stage>.endpoint`, linked bundles included."""
    used = bridge.endpoints_used(experiment, {})
    used |= {
        str(s["params"]["endpoint"]) for s in experiment.pipeline if (s.get("params") or {}).get("endpoint")
    }
    for key, values in space.items():
        for value in values if isinstance(values, list) else ():
            if isinstance(value, dict):  # a linked dimension's bundle
                used |= {str(v) for k, v in value.items() if names_endpoint(k)}
            elif names_endpoint(key):
                used.add(str(value))
    return used


def names_endpoint(key: str) -> bool:
    return key == "endpoint" or key.endswith(".endpoint")
