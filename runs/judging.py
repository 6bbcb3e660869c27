"""How far an experiment's LLM judges can be trusted.

Per judge scorer (type llm_judge): which endpoint and model judge and whether that
model also wrote what it rates; over the experiment's runs, how many outputs it
could not rate (kept apart from low scores) and its mean rating spread when asked
several times; and its agreement with the people who rated the same outputs
(engine/agreement.py). The report, the experiment page and the API share these.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any, TypedDict

from django.db.models import Exists, OuterRef, QuerySet

from endpoints.models import Endpoint
from engine.agreement import Agreement, agreement
from experiments.models import Experiment
from runs.models import Run, Score, ScoreSource

JUDGE_TYPE = "llm_judge"


class JudgeRunStats(TypedDict):
    could_not_rate: int  # outputs with no rating: unparseable replies, failed calls
    mean_spread: float | None  # std of a sampled judge's ratings, mean over outputs (1-10 points)


class JudgeSummary(TypedDict):
    scorer: str
    endpoint: str | None
    model: str
    samples: int
    self_judging: bool
    warning: str
    rated: int  # outputs rated, over all runs
    could_not_rate: int
    mean_spread: float | None
    agreement: Agreement


def judge_names(experiment: Experiment) -> list[str]:
    return [s.get("name") or s["type"] for s in experiment.scorers if s.get("type") == JUDGE_TYPE]


def run_judge_stats(scorer_stats: dict[str, Any], names: list[str]) -> dict[str, JudgeRunStats]:
    """One run's figures per judge, from Run.scorer_stats (engine.runner.ScorerStats)."""
    found = {}
    for name in names:
        stats = scorer_stats.get(name)
        if stats is not None:
            found[name] = JudgeRunStats(could_not_rate=stats["errors"], mean_spread=stats["mean_spread"])
    return found


def judges(experiment: Experiment) -> list[JudgeSummary]:
    """Every judge scorer of the experiment: who judges, how steadily, how close to people."""
    specs = [s for s in experiment.scorers if s.get("type") == JUDGE_TYPE]
    if not specs:
        return []
    # The project's own endpoints: a judge names one of those, never another project's.
    endpoints = {e.name: e for e in Endpoint.objects.filter(project_id=experiment.project_id)}
    written = models_writing(experiment, endpoints)
    totals = judge_totals(Run.objects.filter(experiment=experiment), judge_names(experiment))
    return [_summary(experiment, spec, endpoints, written, totals) for spec in specs]


def _summary(
    experiment: Experiment,
    spec: dict[str, Any],
    endpoints: dict[str, Endpoint],
    written: dict[str, list[str]],
    totals: dict[str, dict[str, Any]],
) -> JudgeSummary:
    name = spec.get("name") or spec["type"]
    config = spec.get("config") or {}
    endpoint = config.get("endpoint") or (experiment.endpoint.name if experiment.endpoint else None)
    known = endpoints.get(endpoint or "")
    model = config.get("model") or (known.default_model if known else "")
    stages = written.get(model, []) if model else []
    return JudgeSummary(
        scorer=name,
        endpoint=endpoint,
        model=model,
        samples=int(config.get("samples", 1)),
        self_judging=bool(stages),
        warning=self_judging_warning(model, stages),
        rated=totals[name]["rated"],
        could_not_rate=totals[name]["could_not_rate"],
        mean_spread=totals[name]["mean_spread"],
        agreement=agreement(*rating_pairs(experiment, name)),
    )


def self_judging_warning(model: str, stages: list[str]) -> str:
    if not stages:
        return ""
    named = ", ".join(f"'{s}'" for s in stages)
    return (
        f"{model} judges outputs it wrote itself (stage {named}); a model tends to rate its own "
        "writing higher. Judge with another model, or check the judge's agreement with people."
    )


def models_writing(experiment: Experiment, endpoints: dict[str, Endpoint]) -> dict[str, list[str]]:
    """Each model a stage may answer with, and those stages: a swept `model`, else the
    stage's own, else the default model of its (possibly swept) endpoint."""
    space = experiment.parameter_space or {}
    own = [experiment.endpoint.name] if experiment.endpoint else []
    found: dict[str, list[str]] = defaultdict(list)
    for stage in experiment.pipeline:
        name = stage["name"]
        models = _listed(space, "model") + _listed(space, f"{name}.model")
        if not models and stage.get("model"):
            models = [stage["model"]]
        if not models:
            names = _listed(space, "endpoint") + _listed(space, f"{name}.endpoint") or own
            models = [endpoints[n].default_model for n in names if n in endpoints]
        for model in dict.fromkeys(str(m) for m in models if m):
            found[model].append(name)
    return found


def _listed(space: dict[str, Any], key: str) -> list[Any]:
    values = space.get(key)
    return list(values) if isinstance(values, list) else []


def judge_totals(runs: QuerySet[Run], names: list[str]) -> dict[str, dict[str, Any]]:
    """Per judge over `runs`: outputs rated, outputs not rated, and the mean spread
    weighted by the outputs each run's spread was taken over."""
    sums = {name: {"rated": 0, "could_not_rate": 0, "spread": 0.0, "spread_outputs": 0} for name in names}
    for stats in runs.values_list("scorer_stats", flat=True).iterator(chunk_size=2000):
        for name in names:
            mine = (stats or {}).get(name)
            if mine is None:
                continue
            total = sums[name]
            total["rated"] += mine["scored"]
            total["could_not_rate"] += mine["errors"]
            if mine["mean_spread"] is not None:
                total["spread"] += mine["mean_spread"] * mine["spread_outputs"]
                total["spread_outputs"] += mine["spread_outputs"]
    for total in sums.values():
        n = total.pop("spread_outputs")
        spread = total.pop("spread")
        total["mean_spread"] = spread / n if n else None
    return sums


def rating_pairs(experiment: Experiment, scorer: str) -> tuple[list[float], list[float]]:
    """(judge, human) ratings on the 1-10 scale of each output both rated: a run's
    dataset row, the judge's rating averaged over repeats, the people's over raters.
    A rating of a whole run rates no one output, so it is left out."""
    scores = Score.objects.filter(run__experiment=experiment, item__isnull=False, value__isnull=False)
    people_scores = scores.filter(source=ScoreSource.HUMAN)
    # Only the judge's ratings of outputs people rated: a few, of maybe many thousand.
    rated = people_scores.filter(run_id=OuterRef("run_id"), item_id=OuterRef("item_id"))
    judge = _means(scores.filter(source=ScoreSource.AUTO, scorer=scorer).filter(Exists(rated)))
    people = _means(people_scores)
    shared = sorted(judge.keys() & people.keys())
    return [to_rating(judge[k]) for k in shared], [to_rating(people[k]) for k in shared]


def _means(scores: QuerySet[Score]) -> dict[tuple[int, int], float]:
    values: dict[tuple[int, int], list[float]] = defaultdict(list)
    for run_id, item_id, value in scores.values_list("run_id", "item_id", "value").order_by():
        values[run_id, item_id].append(value)
    return {key: statistics.fmean(v) for key, v in values.items()}


def to_rating(score: float) -> float:
    """A score in [0, 1] back on the 1-10 scale (engine.scorers.human.rating_to_score inverted)."""
    return 1 + 9 * score
