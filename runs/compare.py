"""Two runs of one experiment, item by item: what changed from run a to run b.

delta = b − a per dataset item both runs scored (the weighted item score of the
leaderboard); the mean delta's 95% interval is the leaderboard's paired bootstrap
over those items. A regression is an item that scored lower in b than in a.
"""

from __future__ import annotations

import difflib
import statistics
from typing import TypedDict

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from engine import bootstrap
from runs.aggregates import item_scores, scorer_weights
from runs.leaderboard import ranked_runs
from runs.models import Run, StageResult, Sweep

EPSILON = 1e-9  # a difference smaller than this is float noise, not a regression


class ComparedItem(TypedDict):
    item_id: int
    position: int
    a_score: float
    b_score: float
    delta: float
    a_output: str
    b_output: str


class Comparison(TypedDict):
    a: int
    b: int
    mean_delta: float | None
    ci_low: float | None
    ci_high: float | None
    items: list[ComparedItem]
    regressions: list[int]


def compare_runs(a: Run, b: Run) -> Comparison:
    """Both runs must belong to one experiment (the caller checks)."""
    scores = item_scores([a.pk, b.pk], scorer_weights(a.experiment))
    a_items, b_items = scores.get(a.pk, {}), scores.get(b.pk, {})
    shared = [item for item in a_items.keys() & b_items.keys() if item is not None]
    positions = dict(a.experiment.items.filter(pk__in=shared).values_list("pk", "position"))
    shared = sorted((i for i in shared if i in positions), key=lambda i: (positions[i], i))
    outputs = final_outputs([a.pk, b.pk], shared)
    items = [
        ComparedItem(
            item_id=item,
            position=positions[item],
            a_score=a_items[item],
            b_score=b_items[item],
            delta=b_items[item] - a_items[item],
            a_output=outputs.get((a.pk, item), ""),
            b_output=outputs.get((b.pk, item), ""),
        )
        for item in shared
    ]
    return Comparison(
        a=a.pk,
        b=b.pk,
        **mean_with_interval([i["delta"] for i in items]),
        items=items,
        regressions=[i["item_id"] for i in items if i["delta"] < -EPSILON],
    )


def mean_with_interval(deltas: list[float]) -> dict[str, float | None]:
    if not deltas:
        return {"mean_delta": None, "ci_low": None, "ci_high": None}
    low, high = bootstrap.percentile_intervals(bootstrap.resampled_means([deltas]))[0]
    return {"mean_delta": statistics.fmean(deltas), "ci_low": low, "ci_high": high}


def final_outputs(run_ids: list[int], item_ids: list[int]) -> dict[tuple[int, int], str]:
    """{(run, item): the last stage's output of the first sample}, in one query."""
    rows = (
        StageResult.objects.filter(run_id__in=run_ids, item_id__in=item_ids, sample_index=0)
        .order_by("run_id", "item_id", "stage_index")
        .values_list("run_id", "item_id", "output")
    )
    return {(run, item): output for run, item, output in rows}  # later stages overwrite earlier


def best_run(sweep: Sweep) -> Run | None:
    return ranked_runs(sweep.experiment, sweep.pk).first()


def previous_sweep(sweep: Sweep) -> Sweep | None:
    earlier = Sweep.objects.filter(experiment_id=sweep.experiment_id, pk__lt=sweep.pk)
    return earlier.order_by("-pk").first()


def marked_diff(old: str, new: str) -> tuple[SafeString, SafeString]:
    """Both texts as HTML, the words only one of them has wrapped in <del> / <ins>."""
    a, b = old.split(" "), new.split(" ")
    left, right = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        old_part, new_part = escape(" ".join(a[i1:i2])), escape(" ".join(b[j1:j2]))
        if op == "equal":
            left.append(old_part)
            right.append(new_part)
            continue
        if old_part:
            left.append(f"<del>{old_part}</del>")
        if new_part:
            right.append(f"<ins>{new_part}</ins>")
    return mark_safe(" ".join(left)), mark_safe(" ".join(right))  # noqa: S308 - every part is escaped
