"""Runs many configurations of one sweep at once, within limits a user can steer.

Several orchestrators (one per worker, on any number of machines) may share a
sweep: each claims pending runs in batches from a `RunSource`, so a run is
evaluated by one of them. Between LLM calls every orchestrator obeys the
sweep's control state (pause, stop) and its token budget:

- a gate in front of the LLM client closes; calls already in flight finish
  and are kept (the cache stores them), and no new call starts;
- then the runs that were still going are cancelled and handed back: to
  "pending" on pause (resume runs them again, their finished calls served by
  the cache), to "cancelled" on stop or when the budget is spent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from engine.events import EventBus
from engine.gateway import Gateway
from engine.runner import ResultSink, RunOutcome, RunSpec, run_single
from engine.types import SweepState

logger = logging.getLogger(__name__)


class RunSource(Protocol):
    """Where runs come from and go back to (the apps implement it on the ORM).

    `claim` returns at most `limit` runs; an empty list when none is left, None
    when this orchestrator holds its share of the runs left and should ask again
    once one of its runs has finished (the other workers' share is theirs)."""

    async def claim(self, limit: int) -> list[RunSpec] | None: ...

    async def release(self, run_ids: list[Any], cancel: bool) -> None: ...

    def sink(self, spec: RunSpec) -> ResultSink: ...


class SweepControl(Protocol):
    """The shared state of one sweep, read by every orchestrator."""

    async def state(self) -> str: ...  # the sweep's status, a SweepState value

    async def add_tokens(self, tokens: int) -> int: ...  # returns the sweep's total so far

    async def progress(self, outcomes: list[RunOutcome]) -> None: ...  # finished runs, batched

    async def add_calls(self, calls: int) -> None: ...  # calls finished since the last sync

    async def heartbeat(self) -> None: ...


@dataclass
class SweepReport:
    finished: int = 0
    released: int = 0
    reason: str = "drained"  # drained, or the SweepState.HALTING status that halted it
    tokens_spent: int = 0
    overshoot: int = 0  # tokens spent past the budget by calls that were in flight


class _Gate:
    """Admits real LLM calls while the sweep runs and counts the ones in flight."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.open.set()
        self.idle = asyncio.Event()
        self.idle.set()
        self.in_flight = 0

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        while not self.open.is_set():
            await self.open.wait()
        self.in_flight += 1
        self.idle.clear()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self.idle.set()


class Orchestrator:
    def __init__(
        self,
        source: RunSource,
        control: SweepControl,
        llm: Gateway,
        *,
        token_budget: int,
        runs_in_flight: int,
        events: EventBus | None = None,
        poll_interval: float = 0.2,
    ):
        self.source, self.control, self.events = source, control, events
        self.token_budget = token_budget
        self.poll_interval = poll_interval
        self.gate = _Gate()
        # The gate sits inside the gateway's concurrency limits, around real calls
        # only: cache lookups and hits never wait for it or hold a slot.
        llm.admission = self.gate.admit
        llm.on_spend = self._spent
        self.llm = llm
        self.runs_in_flight = runs_in_flight
        self.claim_ahead = max(1, runs_in_flight // 2)  # runs claimed before they can start
        self.report = SweepReport()
        self._unsynced = 0  # tokens spent here, not yet added to the shared total
        self._syncing = 0  # tokens being added to it right now
        self._known_total = 0  # the shared total as of the last sync
        # The gateway's finished calls already added to the sweep (it may have served others before).
        self._calls_synced = llm.calls_finished
        self._finished: list[RunOutcome] = []
        self._tasks: dict[asyncio.Task, Any] = {}
        self._unstarted: list[Any] = []  # run ids claimed but not started when dispatch ended
        self._halt: str | None = None
        self._halted = asyncio.Event()
        self._stopped = asyncio.Event()  # tells the watcher to end after its current check

    # -- spending ---------------------------------------------------------
    def _spent(self, tokens: int) -> None:
        self._unsynced += tokens
        self.report.tokens_spent += tokens
        # Tokens on their way to the shared total count too: while a slow write is
        # under way, calls that finish must still see the budget run out.
        if self._known_total + self._syncing + self._unsynced >= self.token_budget and self._halt is None:
            self._close(SweepState.BUDGET_EXHAUSTED)

    async def _sync(self) -> None:
        delta, self._unsynced = self._unsynced, 0
        self._syncing += delta
        try:
            total = await self.control.add_tokens(delta)
        except Exception:
            self._unsynced += delta  # the write failed: the next sync tries again
            raise
        finally:
            self._syncing -= delta
        self._known_total = total
        if self._known_total >= self.token_budget and self._halt is None:
            self._close(SweepState.BUDGET_EXHAUSTED)
        calls, self._calls_synced = self.llm.calls_finished - self._calls_synced, self.llm.calls_finished
        if calls:
            await self.control.add_calls(calls)
        if self._finished:
            done, self._finished = self._finished, []
            await self.control.progress(done)

    def _close(self, reason: str) -> None:
        self._halt = reason
        self.gate.open.clear()
        self._halted.set()

    # -- the loop ---------------------------------------------------------
    async def execute(self) -> SweepReport:
        # What earlier rounds, workers and attempts spent counts from the first call
        # on: a short round could otherwise end before the first sync learned it.
        await self._sync()
        watcher = asyncio.create_task(self._watch())
        try:
            await self._dispatch()
            if self._halt is not None:
                await self._drain()
        finally:
            # Never cancel the watcher mid-sync: the tokens it has taken from
            # _unsynced would be lost with its write (a cancelled executor job never runs).
            self._stopped.set()
            await asyncio.gather(watcher, return_exceptions=True)
            await self._sync()
        self.report.reason = self._halt or "drained"
        if self._halt == SweepState.BUDGET_EXHAUSTED:
            self.report.overshoot = max(0, self._known_total - self.token_budget)
        return self.report

    async def _dispatch(self) -> None:
        """Keep `runs_in_flight` runs going, with the next ones claimed ahead.

        Runs that share the slots progress together and tend to end together;
        were the next batch claimed only then, every slot would sit idle for a
        claim's round trip to the database. So a claim for the runs that will
        be needed next is always under way or done while the current ones run."""
        ready: list[RunSpec] = []  # claimed, not started yet
        claiming: asyncio.Task[list[RunSpec] | None] | None = None
        exhausted = False
        held_back = False  # the source said: your share is in hand, ask after a run ends
        halted = asyncio.create_task(self._halted.wait())
        try:
            while self._halt is None:
                while ready and len(self._tasks) < self.runs_in_flight:
                    self._start(ready.pop(0))
                wanted = self.runs_in_flight + self.claim_ahead - len(self._tasks) - len(ready)
                # In batches (a claim costs round trips), unless nothing is left in hand.
                batch = wanted >= max(1, self.claim_ahead // 2) or not ready
                if claiming is None and not exhausted and not held_back and wanted > 0 and batch:
                    claiming = asyncio.create_task(self.source.claim(wanted))
                if not self._tasks and claiming is None:
                    return
                waiting = [*self._tasks, halted, *([claiming] if claiming else [])]
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task is claiming:
                        claiming = None
                        specs = task.result()
                        # Fewer than asked may mean another worker took some of them:
                        # only an empty claim says none are left.
                        held_back = specs is None
                        exhausted = specs == []
                        ready += specs or []
                    else:
                        self._tasks.pop(task, None)
                        held_back = False
        finally:
            halted.cancel()
            # Claimed runs that never started go back like the ones cut short.
            if claiming is not None:
                try:
                    ready += await claiming or []
                except Exception:  # what it took is recovered once its heartbeats stop
                    logger.exception("Claiming runs failed while the sweep was halting")
            self._unstarted = [spec.run_id for spec in ready]

    def _start(self, spec: RunSpec) -> None:
        task = asyncio.create_task(self._run(spec))
        self._tasks[task] = spec.run_id

    async def _run(self, spec: RunSpec) -> None:
        try:
            outcome = await run_single(spec, self.llm, self.source.sink(spec), self.events)
        except Exception as exc:  # the sink failed (e.g. the database went away)
            logger.exception("Run %s could not be stored", spec.run_id)
            outcome = RunOutcome(run_id=spec.run_id, status="failed", error=f"Could not store results: {exc}")
        self.report.finished += 1
        self._finished.append(outcome)

    async def _watch(self) -> None:
        while not self._stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self.poll_interval)
            if self._stopped.is_set():
                return
            try:
                await self._sync()
                state = await self.control.state()
                await self.control.heartbeat()
            except Exception:  # a passing database/Redis error must not kill the sweep
                logger.exception("Sweep control check failed; retrying")
                continue
            if state in SweepState.HALTING and self._halt is None:
                self._close(state)

    async def _drain(self) -> None:
        """Let calls in flight finish, then hand back the runs still going."""
        await self.gate.idle.wait()
        # Runs that finished while the last calls came back are complete: keep them.
        await asyncio.sleep(0)
        pending = [t for t in self._tasks if not t.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        released = [self._tasks[t] for t in pending if t.cancelled()] + self._unstarted
        self._tasks.clear()
        self._unstarted = []
        if released:
            await self.source.release(released, cancel=self._halt != SweepState.PAUSED)
        self.report.released = len(released)


def runs_in_flight_for(max_concurrent: int, items: int, repeats: int, item_concurrency: int) -> int:
    """Enough runs at once to keep `max_concurrent` calls busy, and not many more
    (a pause hands back every run that is still going)."""
    per_run = max(1, min(item_concurrency, items * repeats))
    return max(2, math.ceil(max_concurrent / per_run) * 4)
