"""What pages need of a run, kept on the run when it completes (and again after
a rating, a re-run or a deletion), so that the leaderboard, the run list, the
charts and the report read one row per run instead of one per call or score.

`summarize(run_id)` recomputes everything from the run's scores and stage
results; `refresh_latest()` moves the "latest completed run of this
configuration" mark (Run.is_latest) that the ranking index is built on.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from django.db import transaction
from django.db.models import Avg, Case, F, FloatField, Q, Sum, Value, When

from engine import bootstrap
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
    own_input = None in items or run.scores.filter(source=ScoreSource.AUTO, item__isnull=True).exists()
    low, high = bootstrap.interval(items)
    return {
        "own_input": own_input,
        "ci_low": low,
        "ci_high": high,
        "n_items": len(items),
        # JSON keys are text; the dataset item ids they name.
        "item_scores": {str(item): value for item, value in items.items() if item is not None},
        "scorer_means": scorer_means(run.pk),
        **call_summary(run.pk),
    }


def summarize(run_id: int) -> None:
    """Store the run's aggregates, then move its configuration's latest-run mark."""
    run = Run.objects.select_related("experiment").get(pk=run_id)
    with transaction.atomic():
        if run.sweep_id is not None:
            # The sweep first, as a racing round's close takes it (then its runs): the
            # deferred foreign-key checks of this transaction lock the sweep at commit,
            # so taking it last would deadlock against a closing round.
            list(Sweep.objects.select_for_update(no_key=True).filter(pk=run.sweep_id).values_list("pk"))
        Run.objects.filter(pk=run_id).update(**summary(run))
        refresh_latest(run.experiment_id, run.config_hash)
        Report.forget(run.experiment_id)


def rankable() -> Q:
    """Runs that take part in the ranking: completed, scored, on the dataset."""
    return Q(status=RunStatus.COMPLETED, weighted_score__isnull=False, own_input=False)


def refresh_latest(experiment_id: int, config_hash: str) -> None:
    """Mark the most recently finished rankable run of the configuration, and only it."""
    runs = Run.objects.filter(experiment_id=experiment_id, config_hash=config_hash)
    latest = (
        runs.filter(rankable()).order_by(F("finished_at").desc(nulls_last=True), "-id").values_list("id")[:1]
    )
    with transaction.atomic():
        # Lock the configuration's runs so two completing at once leave one mark.
        list(runs.select_for_update().values_list("id", flat=True))
        latest_id = next(iter(latest), (None,))[0]
        runs.filter(is_latest=True).exclude(id=latest_id).update(is_latest=False)
        if latest_id is not None:
            runs.filter(id=latest_id, is_latest=False).update(is_latest=True)


def run_deleted(sender: type, instance: Run, **kwargs: Any) -> None:
    """The configuration's previous run takes over the mark of a deleted latest run."""
    if instance.is_latest:
        refresh_latest(instance.experiment_id, instance.config_hash)
    Report.forget(instance.experiment_id)
