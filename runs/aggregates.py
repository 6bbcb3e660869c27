"""What pages need of a run, kept on the run when it completes (and again after
a rating, a re-run or a deletion), so that the leaderboard, the run list, the
charts and the report read one row per run instead of one per call or score.

`summarize(run_id)` recomputes everything from the run's scores and stage
results; a sweep's worker instead keeps a `RunTally` of the rows as it writes
them and stores the same figures without reading the rows back.
`refresh_latest()` moves the "latest completed run of this configuration" mark
(Run.is_latest) that the ranking index is built on.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from django.db import transaction
from django.db.models import Avg, Case, F, FloatField, Q, Sum, Value, When

from engine import bootstrap
from engine.runner import ScoreRecord, StageOutcome
from experiments.models import Report
from runs.models import Run, RunStatus, Score, ScoreSource, StageResult, Sweep


def scorer_weights(experiment: Any) -> dict[str, float]:
    return {(s.get("name") or s["type"]): float(s.get("weight", 1.0)) for s in experiment.scorers}


def item_scores(run_ids: list[int], weights: dict[str, float]) -> dict[int, dict[int | None, float]]:
    """{run: {item: weighted score}}: per item and sample Σ w·v / Σ w over automatic
    scores with a value, then the mean over samples; the weighting done in SQL."""
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


def scorer_means(run_id: int) -> dict[str, float | None]:
    """Mean automatic score per scorer (None when it scored nothing)."""
    rows = (
        Score.objects.filter(run_id=run_id, source=ScoreSource.AUTO)
        .values("scorer")
        .annotate(mean=Avg("value"))
        .order_by()
    )
    return {row["scorer"]: row["mean"] for row in rows}


def call_summary(run_id: int) -> dict[str, Any]:
    """Tokens the cache answered and the nearest-rank p50/p95 of uncached calls."""
    calls = StageResult.objects.filter(run_id=run_id)
    cached = calls.filter(cached=True).aggregate(t=Sum(F("tokens_in") + F("tokens_out")))["t"] or 0
    latencies = sorted(calls.filter(cached=False).values_list("latency_ms", flat=True))
    return {
        "cached_tokens": cached,
        "latency_p50_ms": nearest_rank(latencies, 0.50),
        "latency_p95_ms": nearest_rank(latencies, 0.95),
    }


def nearest_rank(ordered: list[float], q: float) -> float | None:
    return ordered[round(q * (len(ordered) - 1))] if ordered else None


def summary(run: Run) -> dict[str, Any]:
    """Every stored aggregate of `run`, computed in full from its rows."""
    weights = scorer_weights(run.experiment)
    items = item_scores([run.pk], weights).get(run.pk, {})
    own_input = run.scores.filter(source=ScoreSource.AUTO, item__isnull=True).exists()
    return {**stored_summary(items, scorer_means(run.pk), own_input), **call_summary(run.pk)}


SUMMARY_FIELDS = (
    "own_input",
    "ci_low",
    "ci_high",
    "n_items",
    "item_scores",
    "scorer_means",
    "cached_tokens",
    "latency_p50_ms",
    "latency_p95_ms",
)  # what summary() and RunTally.summary() give


def stored_summary(items: dict[Any, float], scorer_means: dict[str, float | None], own_input: bool) -> dict:
    """The aggregates as stored, from a run's item scores and scorer means."""
    low, high = bootstrap.interval(items)
    return {
        "own_input": own_input or None in items,
        "ci_low": low,
        "ci_high": high,
        "n_items": len(items),
        # JSON keys are text; the dataset item ids they name.
        "item_scores": {str(item): value for item, value in items.items() if item is not None},
        "scorer_means": scorer_means,
    }


class RunTally:
    """What `summary()` would read back from a run's rows, counted as the rows go
    to the database: a sweep's worker sees every row of the runs it claims (the
    claim cleared any earlier attempt's), and a run then costs one UPDATE to
    summarize instead of reading back a row per call and per score."""

    def __init__(self, weights: dict[str, float]):
        self.weights = {name: w for name, w in weights.items() if w > 0}
        self.samples: dict[tuple[Any, int], list[float]] = defaultdict(lambda: [0.0, 0.0])  # num, den
        self.by_scorer: dict[str, list[float]] = {}  # name: [sum, count of values]
        self.own_input = False
        self.cached_tokens = 0
        self.latencies: list[float] = []

    def add_stage_results(self, rows: list[StageOutcome]) -> None:
        for row in rows:
            if row.cached:
                self.cached_tokens += row.tokens_in + row.tokens_out
            else:
                self.latencies.append(row.latency_ms)

    def add_scores(self, rows: list[ScoreRecord]) -> None:
        for row in rows:
            self.own_input = self.own_input or row.item_id is None
            total = self.by_scorer.setdefault(row.scorer, [0.0, 0])
            if row.value is None:
                continue
            total[0] += row.value
            total[1] += 1
            weight = self.weights.get(row.scorer)
            if weight:
                tally = self.samples[row.item_id, row.sample_index]
                tally[0] += weight * row.value
                tally[1] += weight

    def summary(self) -> dict[str, Any]:
        per_item: dict[Any, list[float]] = defaultdict(list)
        for (item, _), (num, den) in self.samples.items():
            if den > 0:
                per_item[item].append(num / den)
        items = {item: statistics.fmean(values) for item, values in per_item.items()}
        means = {name: (s / n if n else None) for name, (s, n) in self.by_scorer.items()}
        latencies = sorted(self.latencies)
        return {
            **stored_summary(items, means, self.own_input),
            "cached_tokens": self.cached_tokens,
            "latency_p50_ms": nearest_rank(latencies, 0.50),
            "latency_p95_ms": nearest_rank(latencies, 0.95),
        }


def summarize(run_id: int, known: dict[str, Any] | None = None) -> None:
    """Store the run's aggregates (`known`: already counted, see RunTally), then
    move its configuration's latest-run mark."""
    summarize_many({run_id: known})


def summarize_many(runs: dict[int, dict[str, Any] | None], fields: dict[int, dict] | None = None) -> None:
    """`summarize` for many runs in one transaction; `fields` (by run) are stored
    with their aggregates, in the same UPDATE."""
    # Only what the writes need: a run's JSON columns (its experiment's too) are many and large.
    # In id order, as every transaction that changes several runs takes them.
    rows = list(
        Run.objects.filter(pk__in=runs)
        .order_by("id")
        .values_list("id", "sweep_id", "experiment_id", "config_hash")
    )
    with transaction.atomic():
        # The sweeps first, as a racing round's close takes its sweep (then the runs):
        # the deferred foreign-key checks of this transaction lock the sweep at
        # commit, so taking it last would deadlock against a closing round.
        sweeps = {sweep_id for _, sweep_id, _, _ in rows if sweep_id is not None}
        if sweeps:
            list(Sweep.objects.select_for_update(no_key=True).filter(pk__in=sweeps).values_list("pk"))
        by_experiment: dict[int, set[str]] = defaultdict(set)
        updated = []
        for run_id, _, experiment_id, config_hash in rows:
            aggregates = runs[run_id]
            if aggregates is None:
                aggregates = summary(Run.objects.select_related("experiment").get(pk=run_id))
            updated.append(Run(pk=run_id, **aggregates, **(fields or {}).get(run_id, {})))
            by_experiment[experiment_id].add(config_hash)
        if updated:  # every run gets the same columns: one UPDATE for the batch
            names = [*SUMMARY_FIELDS, *next(iter((fields or {}).values()), {})]
            Run.objects.bulk_update(updated, names)
        for experiment_id, hashes in by_experiment.items():
            refresh_latest_many(experiment_id, hashes)
            Report.forget(experiment_id)


def rankable() -> Q:
    """Runs that take part in the ranking: completed, scored, on the dataset."""
    return Q(status=RunStatus.COMPLETED, weighted_score__isnull=False, own_input=False)


def refresh_latest(experiment_id: int, config_hash: str) -> None:
    """Mark the most recently finished rankable run of the configuration, and only it."""
    refresh_latest_many(experiment_id, {config_hash})


def refresh_latest_many(experiment_id: int, config_hashes: set[str]) -> None:
    """`refresh_latest` for several configurations of one experiment, in two UPDATEs."""
    runs = Run.objects.filter(experiment_id=experiment_id, config_hash__in=config_hashes)
    with transaction.atomic():
        # Lock the configurations' runs so two completing at once leave one mark each.
        list(runs.select_for_update().values_list("id", flat=True))
        latest: dict[str, int] = {}
        ordered = runs.filter(rankable()).order_by(F("finished_at").desc(nulls_last=True), "-id")
        for run_id, config_hash in ordered.values_list("id", "config_hash"):
            latest.setdefault(config_hash, run_id)
        marked = list(latest.values())
        runs.filter(is_latest=True).exclude(id__in=marked).update(is_latest=False)
        if marked:
            Run.objects.filter(id__in=marked, is_latest=False).update(is_latest=True)


def run_deleted(sender: type, instance: Run, **kwargs: Any) -> None:
    """The configuration's previous run takes over the mark of a deleted latest run."""
    if instance.is_latest:
        refresh_latest(instance.experiment_id, instance.config_hash)
    Report.forget(instance.experiment_id)
