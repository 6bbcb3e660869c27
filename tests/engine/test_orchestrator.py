"""The orchestrator on its own: claims, claim-ahead and hand-backs, with the real
gateway against the loopback stub and an in-memory source of runs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from engine.gateway import Gateway
from engine.orchestrator import Orchestrator
from engine.runner import InMemoryResultSink, ResultSink, RunOutcome, RunSpec
from engine.types import EndpointConfig, Item, Stage, SweepState
from tests.llm_stub import LLMStub


@pytest.fixture
def stub() -> Iterator[LLMStub]:
    with LLMStub(latency_ms=20) as stub:
        yield stub


class Runs:
    """RunSource and SweepControl in memory. `steal` takes runs away between a
    claim's pick and its update, as another worker would."""

    def __init__(self, stub: LLMStub, count: int, claim_delay_s: float = 0.0, steal: int = 0):
        self.calls_reported = 0
        endpoint = EndpointConfig(name="stub", base_url=stub.base_url, default_model="stub-small")
        items = [Item(id=n, input={"n": n}, position=n) for n in range(4)]
        self.specs = [
            RunSpec(
                run_id=i,
                experiment_id=1,
                sweep_id=1,
                config={"temperature": i / 100},
                stages=[Stage(name="answer", user="Say {{ n }}")],
                items=items,
                scorers=[],
                endpoint=endpoint,
                item_concurrency=2,
            )
            for i in range(count)
        ]
        self.pending = list(self.specs)
        self.claim_delay_s = claim_delay_s
        self.steal = steal
        self.state_now = SweepState.RUNNING
        self.claims: list[tuple[int, int, int]] = []  # (asked, got, runs going at the time)
        self.running = 0
        self.started: list[Any] = []
        self.released: list[tuple[list[Any], bool]] = []
        self.sink_ = InMemoryResultSink()
        self.spent_before = 0  # tokens the sweep spent before this orchestrator started

    # RunSource
    async def claim(self, limit: int) -> list[RunSpec]:
        await asyncio.sleep(self.claim_delay_s)
        if self.steal:
            taken, self.steal = self.pending[: self.steal], 0
            del self.pending[: len(taken)]
            limit = max(1, limit - len(taken))  # what was picked, less what was stolen
        got, self.pending = self.pending[:limit], self.pending[limit:]
        self.claims.append((limit, len(got), self.running))
        return got

    async def release(self, run_ids: list[Any], cancel: bool) -> None:
        self.released.append((list(run_ids), cancel))

    def sink(self, spec: RunSpec) -> ResultSink:
        return Tracking(self)

    # SweepControl
    async def state(self) -> str:
        return self.state_now

    async def add_tokens(self, tokens: int) -> int:
        self.spent_before += tokens
        return self.spent_before

    async def progress(self, outcomes: list[RunOutcome]) -> None:
        pass

    async def add_calls(self, calls: int) -> None:
        self.calls_reported += calls

    async def heartbeat(self) -> None:
        pass


class Tracking(InMemoryResultSink):
    def __init__(self, runs: Runs):
        super().__init__()
        self.runs = runs

    async def run_started(self, run_id: Any) -> None:
        self.runs.running += 1
        self.runs.started.append(run_id)

    async def run_finished(self, outcome: RunOutcome) -> None:
        self.runs.running -= 1


def orchestrator(runs: Runs, gateway: Gateway, runs_in_flight: int = 4) -> Orchestrator:
    return Orchestrator(
        runs, runs, gateway, token_budget=10**9, runs_in_flight=runs_in_flight, poll_interval=0.02
    )


async def test_the_next_runs_are_claimed_while_the_current_ones_run(stub: LLMStub) -> None:
    runs = Runs(stub, count=20, claim_delay_s=0.01)
    async with Gateway(max_concurrent=8) as gateway:
        report = await orchestrator(runs, gateway).execute()
    assert report.finished == 20 and report.reason == "drained"
    assert sorted(runs.started) == list(range(20))  # each run once
    # The first claim takes the runs to start plus the ones to start next...
    assert runs.claims[0][:2] == (6, 6)
    # ...and later claims happen while runs are still going, not once they all ended.
    assert all(going > 0 for _, got, going in runs.claims[1:] if got)
    assert stub.calls == 20 * 4


async def test_every_finished_call_is_reported_cached_or_not(stub: LLMStub) -> None:
    runs = Runs(stub, count=3)
    async with Gateway(max_concurrent=8) as gateway:
        await orchestrator(runs, gateway).execute()
        again = Runs(stub, count=3)  # the same calls: answered by the cache
        await orchestrator(again, gateway).execute()
    assert runs.calls_reported == again.calls_reported == 3 * 4
    assert stub.calls == 3 * 4


async def test_a_claim_cut_short_by_another_worker_is_not_taken_for_the_end(stub: LLMStub) -> None:
    runs = Runs(stub, count=12, steal=5)
    async with Gateway(max_concurrent=8) as gateway:
        report = await orchestrator(runs, gateway).execute()
    # Five went to "another worker"; every other run is evaluated here.
    assert report.finished == 7 and sorted(runs.started) == list(range(5, 12))
    assert runs.claims[-1][1] == 0  # it stopped only when a claim came back empty


async def test_a_pause_hands_back_the_runs_claimed_ahead(stub: LLMStub) -> None:
    stub.latency_ms = 80
    runs = Runs(stub, count=30)
    async with Gateway(max_concurrent=8) as gateway:
        orch = orchestrator(runs, gateway)
        task = asyncio.create_task(orch.execute())
        while not runs.started:
            await asyncio.sleep(0.01)
        runs.state_now = SweepState.PAUSED
        report = await task
    assert report.reason == "paused"
    ((released, cancel),) = runs.released
    assert cancel is False
    claimed = {spec.run_id for spec in runs.specs} - {spec.run_id for spec in runs.pending}
    finished_here = set(runs.started) - set(released)
    # Every claimed run either ran to the end here or went back to pending...
    assert claimed == finished_here | set(released)
    # ...including the runs claimed ahead that never started.
    assert claimed - set(runs.started)
    assert claimed - set(runs.started) <= set(released)


@pytest.mark.parametrize(
    "status", [SweepState.STOPPING, SweepState.STOPPED, SweepState.FAILED, SweepState.BUDGET_EXHAUSTED]
)
async def test_a_sweep_ended_elsewhere_halts_this_worker_and_cancels_its_runs(
    stub: LLMStub, status: str
) -> None:
    # The status another worker or a person gave the sweep, read as the database keeps it.
    stub.latency_ms = 80
    runs = Runs(stub, count=30)
    async with Gateway(max_concurrent=8) as gateway:
        task = asyncio.create_task(orchestrator(runs, gateway).execute())
        while not runs.started:
            await asyncio.sleep(0.01)
        runs.state_now = status
        report = await task
    assert report.reason == status and report.finished < 30
    ((released, cancel),) = runs.released
    assert cancel is True and released


async def test_an_orchestrator_knows_what_the_sweep_spent_before_its_first_call(stub: LLMStub) -> None:
    # A racing round or a resumed sweep starts a new orchestrator on a sweep that has
    # already spent its budget: it must not make a single call before its first sync.
    runs = Runs(stub, count=4)
    runs.spent_before = 1000
    async with Gateway(max_concurrent=8) as gateway:
        report = await Orchestrator(
            runs, runs, gateway, token_budget=1000, runs_in_flight=4, poll_interval=10
        ).execute()
    assert report.reason == "budget_exhausted" and report.finished == 0
    assert stub.calls == 0


class SlowLedger(Runs):
    """A shared token total whose writes take a while, as a busy database's would."""

    def __init__(self, stub: LLMStub, count: int, write_s: float):
        super().__init__(stub, count)
        self.total = 0
        self.write_s = write_s

    async def add_tokens(self, tokens: int) -> int:
        if tokens:
            await asyncio.sleep(self.write_s)
        self.total += tokens
        return self.total


async def test_tokens_on_their_way_to_the_shared_total_still_count_against_the_budget(stub: LLMStub) -> None:
    runs = SlowLedger(stub, count=30, write_s=0.5)  # calls keep finishing during each write
    async with Gateway(max_concurrent=2) as gateway:
        orch = Orchestrator(runs, runs, gateway, token_budget=60, runs_in_flight=4, poll_interval=0.05)
        report = await orch.execute()
    # What a call costs as the stub counts it: the prompt's words and its echo's.
    per_call = max(2 * len(b["messages"][-1]["content"].split()) + 1 for b in stub.requests)
    assert report.reason == "budget_exhausted"
    assert runs.total == report.tokens_spent  # nothing lost on the way either
    # The gate closed when the budget ran out, not a write later: at most the
    # other call in flight went on.
    assert runs.total - 60 < 2 * per_call
