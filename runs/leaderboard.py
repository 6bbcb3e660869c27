"""The best configurations of an experiment, with how sure we are of the order.

Definitions (the API, the UI and the report share them):

* An item's weighted score is Σ w·v / Σ w over that item's automatic scores
  that have a value (weights: the experiment's scorer weights by scorer name;
  weight 0 and unknown scorers count for nothing), averaged over repeats.
  A run's weighted score is the mean over its items (engine/runner.py).
* ci_low / ci_high: a 95% percentile bootstrap of the mean over items
  (2,000 resamples of the items with replacement, fixed seed; engine/bootstrap.py).
* tied_with_leader: a paired bootstrap over the items both runs scored: the 95%
  interval of the mean per-item difference from the leader includes 0. The
  leader is tied with itself; None when the two share no scored item.

Runs are ranked in the database from aggregates each run keeps when it completes
(runs/aggregates.py): its interval, per-item scores and scorer means. A racing
sweep's survivors come first, then the runs it dropped, those that got furthest
first (`eliminated_after`: the rows they had scored), each by score. A
configuration run more than once (several sweeps) is represented by its most
recent completed run (Run.is_latest). Ad-hoc runs on an input of their own are
left out: they were not scored on the dataset.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, TypedDict

from django.db import transaction
from django.db.models import F, QuerySet

from engine import bootstrap
from engine.runner import summarize_samples
from engine.scorers.human import rating_to_score
from experiments.models import Experiment
from runs.aggregates import rankable, scorer_weights, summarize
from runs.judging import JudgeRunStats, judge_names, run_judge_stats
from runs.models import Run, RunStatus, Score, ScoreSource


class LeaderboardRow(TypedDict):
    rank: int
    run_id: int
    sweep_id: int | None
    config: dict[str, Any]
    config_hash: str
    weighted_score: float
    ci_low: float | None
    ci_high: float | None
    n_items: int
    scorer_means: dict[str, float | None]
    judges: dict[str, JudgeRunStats]  # per judge scorer: outputs it could not rate, rating spread
    tokens_in: int
    tokens_out: int
    latency_ms: float
    tied_with_leader: bool | None
    pareto: bool
    eliminated_after: int | None


# -- the ranking ----------------------------------------------------------------------
def ranked_runs(experiment: Experiment, sweep_id: int | None = None) -> QuerySet[Run]:
    """Completed, scored runs, best first, one per configuration (its latest run).

    Across sweeps the mark kept on each configuration's latest run (and its partial
    index, "run_ranking") answers directly; a sweep runs each configuration once."""
    if sweep_id is None:
        # A race's survivor is pending again between rounds: not ranked until it completes.
        runs = Run.objects.filter(experiment=experiment, is_latest=True, status=RunStatus.COMPLETED)
    else:
        runs = Run.objects.filter(rankable(), experiment=experiment, sweep_id=sweep_id)
    # Survivors of a race (eliminated_after null) first: the order of the ranking index.
    order = (F("eliminated_after").desc(nulls_first=True), F("weighted_score").desc(), "tokens_in", "id")
    return runs.order_by(*order)


ROW_FIELDS = (
    "id",
    "sweep_id",
    "config",
    "config_hash",
    "weighted_score",
    "tokens_in",
    "tokens_out",
    "latency_ms",
    "scorer_stats",
    "eliminated_after",
    "ci_low",
    "ci_high",
    "n_items",
    "item_scores",
    "scorer_means",
)


def leaderboard(experiment: Experiment, n: int = 10, sweep_id: int | None = None) -> list[LeaderboardRow]:
    """The top n rows from one query of stored per-run aggregates; only the ties
    with the leader are bootstrapped here (all rows in one array operation)."""
    top = list(ranked_runs(experiment, sweep_id).values(*ROW_FIELDS)[:n])
    if not top:
        return []
    judges = judge_names(experiment)
    tied = bootstrap.ties(top[0]["item_scores"], [run["item_scores"] for run in top])
    rows = [_row(rank, run, tied[rank - 1]) for rank, run in enumerate(top, start=1)]
    for row, run in zip(rows, top, strict=True):
        row["judges"] = run_judge_stats(run["scorer_stats"], judges)
    front = {row["run_id"] for row in pareto_front(rows)}
    for row in rows:
        row["pareto"] = row["run_id"] in front
    return rows


def _row(rank: int, run: dict, tie: bool | None) -> LeaderboardRow:
    return LeaderboardRow(
        rank=rank,
        run_id=run["id"],
        sweep_id=run["sweep_id"],
        config=run["config"],
        config_hash=run["config_hash"],
        weighted_score=run["weighted_score"],
        ci_low=run["ci_low"],
        ci_high=run["ci_high"],
        n_items=run["n_items"],
        scorer_means=run["scorer_means"],
        judges={},
        tokens_in=run["tokens_in"],
        tokens_out=run["tokens_out"],
        latency_ms=run["latency_ms"],
        tied_with_leader=tie,
        pareto=False,
        eliminated_after=run["eliminated_after"],
    )


# -- the Pareto front ---------------------------------------------------------------
Objective = tuple[Callable[[LeaderboardRow], float], int]  # (value of a row, +1 maximise / -1 minimise)

DEFAULT_OBJECTIVES: tuple[Objective, ...] = (
    (lambda r: r["weighted_score"], 1),
    (lambda r: r["tokens_in"] + r["tokens_out"], -1),
    (lambda r: r["latency_ms"], -1),
)


def pareto_front(
    rows: Sequence[LeaderboardRow], objectives: Sequence[Objective] = DEFAULT_OBJECTIVES
) -> list[LeaderboardRow]:
    """Rows no other row beats on every objective (best score, fewest tokens, lowest latency)."""

    def key(row: LeaderboardRow) -> list[float]:
        return [sign * value(row) for value, sign in objectives]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b, strict=True)) and a != b

    keys = [key(row) for row in rows]
    return [row for row, k in zip(rows, keys, strict=True) if not any(dominates(o, k) for o in keys)]


# -- human ratings ------------------------------------------------------------------
class RatingRefused(Exception):
    """The run cannot be rated now (HTTP 409 / a message in the page)."""


def record_rating(run: Run, user: Any, rating: int, comment: str = "", item: Any = None) -> Score:
    """A person's 1–10 rating as a human score, one per person, run and item (a new
    rating replaces theirs); then the run's weighted score is recomputed."""
    if run.status in (RunStatus.PENDING, RunStatus.RUNNING):
        # The engine is still writing this run's scores and would overwrite the result.
        raise RatingRefused(f"Run {run.pk} is {run.status}; rate it once it has finished.")
    with transaction.atomic():
        score, _ = Score.objects.update_or_create(
            run=run,
            item=item,
            source=ScoreSource.HUMAN,
            author=user,
            defaults={
                "scorer": human_scorer_name(run.experiment) or "human",
                "value": rating_to_score(rating),
                "details": {"rating": rating},
                "comment": comment,
            },
        )
        recompute_weighted_score(run)
    return score


def human_scorer_name(experiment: Experiment) -> str | None:
    for scorer in experiment.scorers:
        if scorer.get("type") == "human":
            return scorer.get("name") or "human"
    return None


def recompute_weighted_score(run: Run) -> float | None:
    """After a rating: refresh the human scorer's rows, then the run's weighted score.

    The human value of an item is the mean of its ratings, or else the mean of the
    ratings given to the whole run (no item), or else none (left out of the weighting).
    """
    name = human_scorer_name(run.experiment)
    if name is None:
        return run.weighted_score
    with transaction.atomic():
        _refresh_human_rows(run, name)
        score, spread = run_summary(run)
        Run.objects.filter(pk=run.pk).update(weighted_score=score, score_spread=spread)
        summarize(run.pk)
    run.weighted_score, run.score_spread = score, spread
    return score


def run_summary(run: Run) -> tuple[float | None, float | None]:
    """A run's weighted score and spread from the scores it has stored, on every row."""
    return summarize_samples(_weighted_samples(run, scorer_weights(run.experiment)))


def _refresh_human_rows(run: Run, name: str) -> None:
    ratings: dict[int | None, list[float]] = defaultdict(list)
    for item_id, value in run.scores.filter(source=ScoreSource.HUMAN).values_list("item_id", "value"):
        ratings[item_id].append(value)
    whole_run = statistics.fmean(ratings[None]) if ratings.get(None) else None
    keys = set(
        run.scores.filter(source=ScoreSource.AUTO)
        .values_list("item_id", "sample_index")
        .distinct()
        .order_by()
    )
    run.scores.filter(source=ScoreSource.AUTO, scorer=name).delete()
    rows = []
    for item_id, sample in sorted(keys, key=str):
        mine = ratings.get(item_id)
        value = statistics.fmean(mine) if mine else whole_run
        count = len(mine or ratings.get(None, []))
        rows.append(
            Score(
                run=run,
                item_id=item_id,
                sample_index=sample,
                scorer=name,
                value=value,
                details={"ratings": count},
            )
        )
    Score.objects.bulk_create(rows, batch_size=500)


def _weighted_samples(run: Run, weights: dict[str, float]) -> dict[int | None, list[float]]:
    sums: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0.0])
    rows = run.scores.filter(source=ScoreSource.AUTO, value__isnull=False).values_list(
        "item_id", "sample_index", "scorer", "value"
    )
    for item_id, sample, scorer, value in rows:
        w = weights.get(scorer, 0.0)
        if w > 0:
            sums[(item_id, sample)][0] += w * value
            sums[(item_id, sample)][1] += w
    per_item: dict[int | None, list[float]] = defaultdict(list)
    for (item_id, _), (num, den) in sorted(sums.items(), key=lambda kv: str(kv[0])):
        per_item[item_id].append(num / den)
    return per_item
