"""The best configurations of an experiment, with how sure we are of the order.

Definitions (the API, the UI and the report share them):

* An item's weighted score is Σ w·v / Σ w over that item's automatic scores
  that have a value (weights: the experiment's scorer weights by scorer name;
  weight 0 and unknown scorers count for nothing), averaged over repeats.
  A run's weighted score is the mean over its items (engine/runner.py).
* ci_low / ci_high: a 95% percentile bootstrap of the mean over items
  (2,000 resamples of the items with replacement, fixed seed).
* tied_with_leader: a paired bootstrap over the items both runs scored: the 95%
  interval of the mean per-item difference from the leader includes 0. The
  leader is tied with itself; None when the two share no scored item.

Runs are ranked in the database; only the top N runs' per-item scores are read.
A racing sweep's survivors come first, then the runs it dropped, those that got
furthest first (`eliminated_after`: the rows they had scored), each by score.
A configuration run more than once (several sweeps) is represented by its most
recent completed run. Ad-hoc runs on an input of their own are left out: they
were not scored on the dataset.
"""

from __future__ import annotations

import random
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any, TypedDict

from django.db import transaction
from django.db.models import Avg, Case, Exists, F, FloatField, OuterRef, QuerySet, Subquery, Sum, Value, When

from engine.runner import summarize_samples
from engine.scorers.human import rating_to_score
from experiments.models import Experiment
from runs.judging import JudgeRunStats, judge_names, run_judge_stats
from runs.models import Run, RunStatus, Score, ScoreSource

RESAMPLES = 2000
SEED = 20_240_617
CONFIDENCE = 0.95


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


# -- weights and per-item scores ---------------------------------------------------
def scorer_weights(experiment: Experiment) -> dict[str, float]:
    return {(s.get("name") or s["type"]): float(s.get("weight", 1.0)) for s in experiment.scorers}


def item_scores(run_ids: Sequence[int], weights: dict[str, float]) -> dict[int, dict[int | None, float]]:
    """{run: {item: weighted score}}, the weighting done by the database."""
    if not any(w > 0 for w in weights.values()):
        return {}
    weight = Case(
        *(When(scorer=name, then=Value(w)) for name, w in weights.items() if w > 0),
        default=Value(0.0),
        output_field=FloatField(),
    )
    rows = (
        Score.objects.filter(run_id__in=run_ids, source=ScoreSource.AUTO, value__isnull=False)
        .annotate(w=weight)
        .values("run_id", "item_id", "sample_index")
        .annotate(num=Sum(F("w") * F("value")), den=Sum("w"))
        .filter(den__gt=0)
        .order_by()
    )
    samples: dict[int, dict[int | None, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        samples[row["run_id"]][row["item_id"]].append(row["num"] / row["den"])
    return {run: {item: statistics.fmean(v) for item, v in items.items()} for run, items in samples.items()}


def scorer_means(run_ids: Sequence[int]) -> dict[int, dict[str, float | None]]:
    rows = (
        Score.objects.filter(run_id__in=run_ids, source=ScoreSource.AUTO)
        .values("run_id", "scorer")
        .annotate(mean=Avg("value"))
        .order_by()
    )
    means: dict[int, dict[str, float | None]] = defaultdict(dict)
    for row in rows:
        means[row["run_id"]][row["scorer"]] = row["mean"]
    return means


# -- the bootstrap ------------------------------------------------------------------
def resampled_means(
    vectors: Sequence[Sequence[float]], resamples: int = RESAMPLES, seed: int = SEED
) -> list[list[float]]:
    """Bootstrap means of equally long vectors, all resampled with the same item
    draws (so differences between them are paired)."""
    n = len(vectors[0])
    if n == 1:
        return [[float(v[0])] * resamples for v in vectors]
    rng = random.Random(seed)
    out: list[list[float]] = [[] for _ in vectors]
    indices = range(n)
    for _ in range(resamples):
        pick = itemgetter(*rng.choices(indices, k=n))
        for vector, means in zip(vectors, out, strict=True):
            means.append(sum(pick(vector)) / n)
    return out


def percentile_interval(samples: list[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    ordered = sorted(samples)
    tail = (1 - confidence) / 2
    last = len(ordered) - 1
    return ordered[round(tail * last)], ordered[round((1 - tail) * last)]


def bootstrap_ci(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return percentile_interval(resampled_means([values])[0])


def paired_tie(leader: dict[Any, float], other: dict[Any, float]) -> bool | None:
    """Whether a paired bootstrap of other − leader over shared items includes 0."""
    shared = sorted(set(leader) & set(other), key=str)
    if not shared:
        return None
    diffs = [other[item] - leader[item] for item in shared]
    low, high = percentile_interval(resampled_means([diffs])[0])
    return low <= 0.0 <= high


# -- the leaderboard ----------------------------------------------------------------
def ranked_runs(experiment: Experiment, sweep_id: int | None = None) -> QuerySet[Run]:
    """Completed, scored runs, best first, one per configuration (its latest run)."""
    runs = Run.objects.filter(experiment=experiment, status=RunStatus.COMPLETED, weighted_score__isnull=False)
    if sweep_id is not None:
        runs = runs.filter(sweep_id=sweep_id)
    latest = (
        runs.filter(config_hash=OuterRef("config_hash"))
        .order_by(F("finished_at").desc(nulls_last=True), "-id")
        .values("id")[:1]
    )
    own_input = Score.objects.filter(run=OuterRef("pk"), source=ScoreSource.AUTO, item__isnull=True)
    return (
        runs.filter(id=Subquery(latest))
        .exclude(Exists(own_input))
        .order_by(F("eliminated_after").desc(nulls_first=True), F("weighted_score").desc(), "tokens_in", "id")
    )


def leaderboard(experiment: Experiment, n: int = 10, sweep_id: int | None = None) -> list[LeaderboardRow]:
    top = list(
        ranked_runs(experiment, sweep_id).values(
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
        )[:n]
    )
    if not top:
        return []
    ids = [run["id"] for run in top]
    per_item = item_scores(ids, scorer_weights(experiment))
    means = scorer_means(ids)
    judges = judge_names(experiment)
    intervals, ties = _statistics([per_item.get(i, {}) for i in ids])
    rows = [
        _row(
            rank,
            run,
            per_item.get(run["id"], {}),
            means.get(run["id"], {}),
            intervals[rank - 1],
            ties[rank - 1],
        )
        for rank, run in enumerate(top, start=1)
    ]
    for row, run in zip(rows, top, strict=True):
        row["judges"] = run_judge_stats(run["scorer_stats"], judges)
    front = {row["run_id"] for row in pareto_front(rows)}
    for row in rows:
        row["pareto"] = row["run_id"] in front
    return rows


def _row(rank: int, run: dict, items: dict, means: dict, interval: tuple, tie: bool | None) -> LeaderboardRow:
    return LeaderboardRow(
        rank=rank,
        run_id=run["id"],
        sweep_id=run["sweep_id"],
        config=run["config"],
        config_hash=run["config_hash"],
        weighted_score=run["weighted_score"],
        ci_low=interval[0],
        ci_high=interval[1],
        n_items=len(items),
        scorer_means=means,
        judges={},
        tokens_in=run["tokens_in"],
        tokens_out=run["tokens_out"],
        latency_ms=run["latency_ms"],
        tied_with_leader=tie,
        pareto=False,
        eliminated_after=run["eliminated_after"],
    )


def _statistics(per_item: list[dict[Any, float]]) -> tuple[list[tuple], list[bool | None]]:
    """CIs for every row and ties with row 0. Rows scored on the leader's items
    (the usual case) share one set of draws; the others are bootstrapped alone."""
    leader = per_item[0]
    keys = sorted(leader, key=str)
    same = [i for i, items in enumerate(per_item) if items.keys() == leader.keys() and items]
    intervals: list[tuple] = [
        bootstrap_ci(list(items.values())) if i not in same else () for i, items in enumerate(per_item)
    ]
    ties: list[bool | None] = [None] * len(per_item)
    if same:
        vectors = [[per_item[i][k] for k in keys] for i in same]
        draws = resampled_means(vectors)
        for i, means in zip(same, draws, strict=True):
            intervals[i] = percentile_interval(means)
            low, high = percentile_interval([m - b for m, b in zip(means, draws[0], strict=True)])
            ties[i] = low <= 0.0 <= high
    for i, items in enumerate(per_item):
        if i not in same and i > 0:
            ties[i] = paired_tie(leader, items)
    if leader:
        ties[0] = True
    return intervals, ties


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
