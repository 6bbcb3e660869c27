"""The CI gate over a finished sweep: its leaderboard, the best score against a
floor and against a baseline sweep, and the reports (a table, JSON, JUnit XML).

A regression fails the gate only when it is both larger than the allowance and
real: the best run's per-row scores minus the baseline best's, over the rows both
scored, have a mean below -max_regression and a paired 95% bootstrap interval
entirely below 0 (engine noise alone does not fail a build).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any
from xml.etree import ElementTree

from engine.bootstrap import percentile_intervals, resampled_means
from experiments.models import Experiment
from runs.aggregates import item_scores, scorer_weights
from runs.leaderboard import leaderboard
from runs.models import Score, StageResult, Sweep

ROW_PASS = 0.5  # a JUnit row's score floor when --fail-under is not given


class GateError(Exception):
    """The gate cannot be evaluated (exit 2)."""


@dataclass
class Regression:
    baseline_sweep: int
    baseline_score: float
    delta: float  # best - baseline, mean over shared rows
    ci_low: float
    ci_high: float
    rows: int


@dataclass
class Verdict:
    sweep: int
    status: str
    best_score: float
    best_run: int
    passed: bool
    reasons: list[str] = field(default_factory=list)
    regression: Regression | None = None
    leaderboard: list[dict[str, Any]] = field(default_factory=list)


def judge(
    sweep: Sweep, fail_under: float | None, baseline: Sweep | None, max_regression: float, n: int = 10
) -> Verdict:
    rows = leaderboard(sweep.experiment, n=n, sweep_id=sweep.pk)
    if not rows:
        raise GateError(f"Sweep #{sweep.pk} ({sweep.status}) has no completed, scored run.")
    best = rows[0]
    verdict = Verdict(sweep.pk, sweep.status, best["weighted_score"], best["run_id"], True, leaderboard=rows)
    if fail_under is not None and best["weighted_score"] < fail_under:
        verdict.reasons.append(f"best score {best['weighted_score']:.4f} is under --fail-under {fail_under}")
    if baseline is not None:
        verdict.regression = compare(sweep.experiment, best["run_id"], baseline)
        if regressed(verdict.regression, max_regression):
            r = verdict.regression
            verdict.reasons.append(
                f"best score is {-r.delta:.4f} worse than baseline sweep #{r.baseline_sweep} "
                f"(95% interval {r.ci_low:.4f} to {r.ci_high:.4f}, allowance {max_regression})"
            )
    verdict.passed = not verdict.reasons
    return verdict


def compare(experiment: Experiment, run_id: int, baseline: Sweep) -> Regression:
    if baseline.experiment_id != experiment.pk:
        raise GateError(f"Baseline sweep #{baseline.pk} is of another experiment; compare sweeps of one.")
    base = leaderboard(experiment, n=1, sweep_id=baseline.pk)
    if not base:
        raise GateError(f"Baseline sweep #{baseline.pk} has no completed, scored run.")
    per_item = item_scores([run_id, base[0]["run_id"]], scorer_weights(experiment))
    mine, theirs = per_item.get(run_id, {}), per_item.get(base[0]["run_id"], {})
    shared = sorted(set(mine) & set(theirs), key=str)
    if not shared:
        raise GateError(f"The best run and baseline sweep #{baseline.pk} share no scored dataset row.")
    diffs = [mine[i] - theirs[i] for i in shared]
    low, high = (float(x) for x in percentile_intervals(resampled_means([diffs]))[0])
    return Regression(baseline.pk, base[0]["weighted_score"], statistics.fmean(diffs), low, high, len(shared))


def regressed(r: Regression | None, allowance: float) -> bool:
    return r is not None and r.delta < -allowance and r.ci_high < 0


# -- reports ------------------------------------------------------------------------
def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'rank':>4}  {'score':>6}  {'95% interval':>15}  {'tokens':>8}  configuration"]
    for row in rows:
        interval = f"{row['ci_low']:.3f} – {row['ci_high']:.3f}" if row["ci_low"] is not None else "–"
        config = json.dumps(row["config"], sort_keys=True, ensure_ascii=False)
        tokens = row["tokens_in"] + row["tokens_out"]
        lines.append(
            f"{row['rank']:>4}  {row['weighted_score']:>6.3f}  {interval:>15}  {tokens:>8}  {config}"
        )
    return "\n".join(lines)


def as_json(verdict: Verdict) -> str:
    return json.dumps(asdict(verdict), indent=2, ensure_ascii=False, default=str)


def junit(verdict: Verdict, experiment: Experiment, floor: float | None) -> bytes:
    """One test case per dataset row of the best configuration; a row under the floor fails."""
    floor = ROW_PASS if floor is None else floor
    scores = item_scores([verdict.best_run], scorer_weights(experiment)).get(verdict.best_run, {})
    outputs = dict(
        StageResult.objects.filter(run_id=verdict.best_run, sample_index=0)
        .order_by("item_id", "stage_index")
        .values_list("item_id", "output")
    )  # the last stage's output wins
    by_scorer: dict[int, dict[str, float | None]] = {}
    for item, scorer, value in Score.objects.filter(run_id=verdict.best_run, sample_index=0).values_list(
        "item_id", "scorer", "value"
    ):
        by_scorer.setdefault(item, {})[scorer] = value
    suite = ElementTree.Element("testsuite", name=experiment.name, tests="0", failures="0")
    for item in experiment.items.order_by("position", "id"):
        case = ElementTree.SubElement(
            suite,
            "testcase",
            classname=experiment.name,
            name=f"row {item.position}: {json.dumps(item.input)[:80]}",
        )
        score = scores.get(item.pk)
        detail = json.dumps({"score": score, "scores": by_scorer.get(item.pk, {})}, ensure_ascii=False)
        if score is None or score < floor:
            failure = ElementTree.SubElement(case, "failure", message=f"score {score} is under {floor}")
            failure.text = detail
        ElementTree.SubElement(case, "system-out").text = outputs.get(item.pk, "")
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    return ElementTree.tostring(suite, encoding="utf-8", xml_declaration=True)
