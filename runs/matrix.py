"""The outputs of several configurations side by side, one row per dataset row.

A page costs a fixed number of queries whatever the dataset's size: the rows of
the page, then the final outputs and the per-scorer means of those rows only.
The filters are subqueries, so the database pages through what they keep.

An output passes a scorer when its score is at least PASS; "failures" are rows
where some chosen configuration failed a scorer or could not be scored, "where
they disagree" rows where, for one scorer, one configuration passes and another fails.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TypedDict

from django.db.models import Avg, Count, Max, Min, Q, QuerySet, TextField
from django.db.models.functions import Cast

from experiments.models import DatasetItem, Experiment
from runs.compare import final_outputs
from runs.leaderboard import ranked_runs
from runs.models import Run, Score, ScoreSource, StageResult

PASS = 0.5
DEFAULT_COLUMNS = 4
MAX_COLUMNS = 8
CHOICES = 20
FILTERS = {"": "Every row", "disagree": "Where they disagree", "failures": "Failures only"}


class Badge(TypedDict):
    scorer: str
    value: float | None
    passed: bool | None  # None: the scorer could not score this output


class Cell(TypedDict):
    run_id: int
    output: str | None  # None: the run has no output for this row
    badges: list[Badge]


def choosable_runs(experiment: Experiment, sweep_id: int | None) -> list[Run]:
    """The leaderboard's runs a column may show, best first."""
    return list(ranked_runs(experiment, sweep_id)[:CHOICES])


def chosen_runs(choices: list[Run], ids: list[int]) -> list[Run]:
    """The ticked runs in leaderboard order, or else the top DEFAULT_COLUMNS."""
    picked = [run for run in choices if run.pk in ids] if ids else choices[:DEFAULT_COLUMNS]
    return picked[:MAX_COLUMNS]


def matrix_rows(experiment: Experiment, run_ids: list[int], kind: str = "", text: str = "") -> QuerySet:
    items = experiment.items.order_by("position", "id")
    scores = Score.objects.filter(run_id__in=run_ids, source=ScoreSource.AUTO, item__isnull=False)
    if kind == "failures":
        failing = scores.filter(Q(value__lt=PASS) | Q(value__isnull=True))
        items = items.filter(pk__in=failing.values("item_id"))
    elif kind == "disagree":
        split = (
            scores.values("item_id", "scorer")
            .annotate(high=Max("value"), low=Min("value"))
            .filter(high__gte=PASS, low__lt=PASS)
            .values("item_id")
        )
        items = items.filter(pk__in=split)
    if text:
        outputs = StageResult.objects.filter(run_id__in=run_ids, output__icontains=text).values("item_id")
        items = items.annotate(input_text=Cast("input", TextField())).filter(
            Q(input_text__icontains=text) | Q(reference__icontains=text) | Q(pk__in=outputs)
        )
    return items


def matrix_cells(runs: list[Run], items: list[DatasetItem]) -> list[list[Cell]]:
    """For each item, one cell per run: its final output and per-scorer badges."""
    run_ids, item_ids = [run.pk for run in runs], [item.pk for item in items]
    outputs = final_outputs(run_ids, item_ids)
    badges = scorer_badges(run_ids, item_ids)
    return [
        [
            Cell(run_id=run, output=outputs.get((run, item)), badges=badges.get((run, item), []))
            for run in run_ids
        ]
        for item in item_ids
    ]


def scorer_badges(run_ids: list[int], item_ids: list[int]) -> dict[tuple[int, int], list[Badge]]:
    rows = (
        Score.objects.filter(run_id__in=run_ids, item_id__in=item_ids, source=ScoreSource.AUTO)
        .values("run_id", "item_id", "scorer")
        .annotate(mean=Avg("value"), scored=Count("value"))
        .order_by("run_id", "item_id", "scorer")
    )
    badges: dict[tuple[int, int], list[Badge]] = defaultdict(list)
    for row in rows:
        mean = row["mean"] if row["scored"] else None
        passed = None if mean is None else mean >= PASS
        badges[(row["run_id"], row["item_id"])].append(Badge(scorer=row["scorer"], value=mean, passed=passed))
    return badges
