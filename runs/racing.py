"""Racing sweeps in the apps: the race's state (Sweep.race), the slice of rows a
claimed run is scored on, and closing a round: dropping the clear losers and
sending the survivors on to the next, larger slice. The statistics are
engine/racing.py's; this module reads and writes the rows.

A round ends only when every run in it is in (no run of the sweep pending or
running), whichever worker finished last; that worker closes it under a lock
on the sweep, goes on with the next round, and queues the sweep's other
workers' shares again. A survivor is run again on the rows new to the larger
slice only: its results on earlier rows are kept, its score and totals cover
every row it has scored, and a run taken back within a round (a pause, a
crash) gets the answers it already had from the cache. When a stop or the
token budget cuts a round short, the survivors it cut keep the results of the
last round they finished.
"""

from __future__ import annotations

from typing import Any, TypedDict

from django.db import transaction
from django.utils import timezone

from engine import racing
from engine.events import EventType
from engine.runner import ResultSink, RunOutcome, RunSpec, ScorerStats
from engine.sweep import RacingSweep, SweepError
from engine.types import Item
from runs import bridge
from runs.aggregates import item_scores, scorer_weights, summarize
from runs.control import SweepRuns
from runs.leaderboard import run_summary
from runs.models import Run, RunStatus, Sweep, SweepType


class RaceSummary(TypedDict):
    round: int
    rows: int  # the current slice
    rows_total: int
    schedule: list[int]
    confidence: float
    alpha: float  # each elimination test's level
    candidates: int  # still in the race
    rounds: list[dict[str, Any]]
    calls: int
    grid_calls: int
    calls_saved: int
    finished: bool


# -- launch -------------------------------------------------------------------------
def plan_race(generator: RacingSweep, configs: list[dict], items: list[Item], estimate: dict) -> dict:
    """The race's state at launch (Sweep.race), from the plan's candidates and estimate."""
    n = len(items)
    if generator.min_items is not None and generator.min_items > n:
        raise SweepError(
            f"Racing option min_items is {generator.min_items}, but the dataset has {n} rows; "
            "lower it or add rows.",
            "options",
        )
    slices = generator.schedule(n)
    return {
        "schedule": slices,
        "rows_total": n,
        "rows": slices[0],
        "confidence": generator.confidence,
        "alpha": racing.comparison_alpha(generator.confidence, len(slices), len(configs)),
        # Stage and judge calls per candidate and row, all repeats: the grid's calls / (candidates x rows).
        "calls_per_row": estimate["calls"] // max(1, len(configs) * n),
        "grid_calls": estimate["calls"],
        "rounds": [{"round": 1, "rows": slices[0], "candidates": len(configs)}],
        "finished": False,
    }


def race_estimate(race: dict) -> dict:
    """What the launch page and the dry run show besides the worst case (the full grid)."""
    first = race["rounds"][0]
    return {
        "schedule": race["schedule"],
        "first_round_calls": racing.calls_of([(first["rows"], first["candidates"])], race["calls_per_row"]),
        "grid_calls": race["grid_calls"],
        "confidence": race["confidence"],
    }


# -- claiming: each run on the rows new to the current round ------------------------------
def new_rows(race: dict) -> slice:
    """The current round's rows in the race's order: those past the previous slice."""
    rounds = race["rounds"]
    return slice(rounds[-2]["rows"] if len(rounds) > 1 else 0, race["rows"])


class RaceRuns(SweepRuns):
    """SweepRuns for a racing sweep: the rows in the race's seeded order, each
    claimed run scored on the current round's new rows, and its outcome added
    to what it scored in earlier rounds."""

    def __init__(self, sweep: Sweep, db: Any, keys: Any, items: list[Item], repeats: int, per_run: int):
        super().__init__(sweep, db, keys, racing.row_order(items, sweep.config.get("seed")), repeats, per_run)
        self.rows = slice(0, 0)  # the current claim's rows, read while claiming

    def clear_earlier_attempts(self, run_ids: list[int]) -> None:
        # Read after the claim: a run is pending only once the round that set
        # these rows has committed, and no round closes while it runs.
        self.rows = new_rows(Sweep.objects.values_list("race", flat=True).get(pk=self.sweep_id))
        bridge.clear_results(run_ids, [item.id for item in self.items[self.rows]])

    def _claim(self, limit: int) -> list[RunSpec] | None:
        specs = super()._claim(limit)
        for spec in specs or []:
            spec.items = spec.items[self.rows]
        return specs

    def sink(self, spec: RunSpec) -> ResultSink:
        # Rows go with the other runs' (group commit); the outcome adds to earlier rounds'.
        return RaceResultSink(spec.run_id, self.db, worker=self.token, claimed=True, batches=self.batches)


class RaceResultSink(bridge.OrmResultSink):
    async def run_finished(self, outcome: RunOutcome) -> None:
        await self.db.write(save_round_outcome, self.run_id, outcome)


def save_round_outcome(run_id: int, outcome: RunOutcome) -> None:
    """A round's outcome added to the run's earlier rounds: the score over every
    row it has scored, the totals summed (the mean latency weighted by calls)."""
    run = Run.objects.select_related("experiment").get(pk=run_id)
    calls = run.calls + outcome.calls
    latency = (run.latency_ms * run.calls + outcome.mean_call_latency_ms * outcome.calls) / max(1, calls)
    score, spread = run_summary(run)
    Run.objects.filter(pk=run_id).update(
        status=RunStatus.COMPLETED if outcome.status == "completed" else RunStatus.FAILED,
        weighted_score=score,
        score_spread=spread,
        tokens_in=run.tokens_in + outcome.tokens_in,
        tokens_out=run.tokens_out + outcome.tokens_out,
        latency_ms=latency,
        wall_ms=run.wall_ms + outcome.latency_ms,
        calls=calls,
        cached_calls=run.cached_calls + outcome.cached_calls,
        scorer_stats=added_scorer_stats(run.scorer_stats, outcome.scorer_stats),
        error=outcome.error[:5000],
        finished_at=timezone.now(),
    )
    summarize(run_id)  # the aggregates pages read, over every row it has scored


def added_scorer_stats(before: dict[str, ScorerStats], now: dict[str, ScorerStats]) -> dict[str, ScorerStats]:
    """Each scorer's counts over both rounds; its mean spread weighted by the outputs it covers."""
    out = dict(before)
    for name, new in now.items():
        old = before.get(name) or ScorerStats(scored=0, errors=0, mean_spread=None, spread_outputs=0)
        outputs = old["spread_outputs"] + new["spread_outputs"]
        spread = sum((s["mean_spread"] or 0.0) * s["spread_outputs"] for s in (old, new))
        out[name] = ScorerStats(
            scored=old["scored"] + new["scored"],
            errors=old["errors"] + new["errors"],
            mean_spread=spread / outputs if outputs else None,
            spread_outputs=outputs,
        )
    return out


# -- closing a round ------------------------------------------------------------------
def open_round(locked: Sweep) -> bool:
    """Close the round whose runs are all in (the sweep is locked and running) and
    start the next; False when the race is over."""
    if locked.race.get("finished"):
        return False
    closed = close_round(locked)
    survivors = closed.get("next_rows") is not None
    if survivors:
        start_round(locked, closed["survivor_ids"])
    locked.save(update_fields=["race"])
    locked.recount()
    transaction.on_commit(lambda: announce(locked, closed))
    return survivors


def close_round(sweep: Sweep) -> dict:
    """Decide the round from the paired scores on its slice and record it in sweep.race."""
    race = sweep.race
    current = race["rounds"][-1]
    alive = list(
        Run.objects.filter(sweep=sweep, status=RunStatus.COMPLETED, eliminated_after__isnull=True)
        .order_by("position", "id")
        .values_list("id", flat=True)
    )
    found = item_scores(alive, scorer_weights(sweep.experiment))
    scores = {run_id: found.get(run_id, {}) for run_id in alive}  # in dispatch order: ties go to the first
    last = current["rows"] >= race["rows_total"] or len(alive) <= 1
    decision = racing.final_round(scores) if last else racing.decide(scores, race["alpha"])
    if decision.eliminated:
        Run.objects.filter(pk__in=decision.eliminated).update(eliminated_after=current["rows"])
    current.update(leader=decision.leader, eliminated=decision.eliminated, survivors=len(decision.survivors))
    more = not last and len(decision.survivors) > 1
    race["finished"] = not more
    next_rows = race["schedule"][len(race["rounds"])] if more else None
    return {**current, "next_rows": next_rows, "survivor_ids": decision.survivors}


def start_round(sweep: Sweep, survivors: list[int]) -> None:
    race = sweep.race
    rows = race["schedule"][len(race["rounds"])]
    race["rounds"].append({"round": len(race["rounds"]) + 1, "rows": rows, "candidates": len(survivors)})
    race["rows"] = rows
    Run.objects.filter(pk__in=survivors).update(status=RunStatus.PENDING, worker="", heartbeat_at=None)


def announce(sweep: Sweep, closed: dict) -> None:
    summary = race_summary(sweep)
    sweep.publish(
        EventType.SWEEP_ROUND,
        round=closed["round"],
        rows=closed["rows"],
        candidates=closed["candidates"],
        leader=closed["leader"],
        eliminated=closed["eliminated"],
        survivors=closed["survivors"],
        next_rows=closed["next_rows"],
        calls=summary["calls"],
        grid_calls=summary["grid_calls"],
        calls_saved=summary["calls_saved"],
    )
    sweep.publish_progress()


def keep_cut_survivors(sweep: Sweep) -> None:
    """A race stopped (or out of budget) mid-round: the survivors it cut keep the
    rows of the last round they finished, and rank as survivors on those."""
    race = sweep.race
    if sweep.type != SweepType.RACING or len(race.get("rounds", ())) < 2 or "leader" in race["rounds"][-1]:
        return  # nothing cut: the first round has no earlier one, and a closed round was finished
    cut = Run.objects.filter(sweep=sweep, status=RunStatus.CANCELLED, eliminated_after__isnull=True)
    order = racing.row_order(bridge.items_of(sweep.experiment), sweep.config.get("seed"))
    bridge.clear_results(list(cut.values_list("id", flat=True)), [i.id for i in order[new_rows(race)]])
    cut.update(status=RunStatus.COMPLETED)  # its score and totals are still the last round's
    sweep.recount()


def race_over(sweep: Sweep) -> bool:
    """Whether a sweep may finish once no run is out: every other type may; a race
    only after its last round is closed."""
    if sweep.type != SweepType.RACING:
        return True
    return bool(Sweep.objects.values_list("race", flat=True).get(pk=sweep.pk).get("finished"))


# -- reporting ------------------------------------------------------------------------
def race_summary(sweep: Sweep) -> RaceSummary | None:
    race = sweep.race
    if sweep.type != SweepType.RACING or not race:
        return None
    rounds = race["rounds"]
    calls = racing.calls_of([(r["rows"], r["candidates"]) for r in rounds], race["calls_per_row"])
    current = rounds[-1]
    return RaceSummary(
        round=len(rounds),
        rows=race["rows"],
        rows_total=race["rows_total"],
        schedule=race["schedule"],
        confidence=race["confidence"],
        alpha=race["alpha"],
        candidates=current.get("survivors", current["candidates"]),
        rounds=rounds,
        calls=calls,
        grid_calls=race["grid_calls"],
        calls_saved=race["grid_calls"] - calls,
        finished=bool(race.get("finished")),
    )
