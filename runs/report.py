"""The experiment's markdown report, from aggregates over one row per run.

Every figure is computed by the database over the summaries runs keep when they
complete (runs/aggregates.py): memory does not grow with the number of runs. The
report is kept once built (experiments.models.Report): built when a sweep ends,
or on the first read after a change, and forgotten on each change.

Distributions come from per-run values counted in bins of 0.001 (scores) or 1 ms
(latency), with each bin's count, sum, min and max: n, mean, min, max and the
histograms are exact; a quantile is exact when its bin holds one value (or one
distinct value), and otherwise interpolated inside its bin (within 0.001 / 1 ms).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Case, Count, F, FloatField, Max, Min, QuerySet, Sum, Value, When
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Floor
from django.utils import timezone

from experiments.models import Experiment, Report
from runs.judging import JudgeSummary, judges
from runs.leaderboard import leaderboard
from runs.models import Run, RunStatus

TOP_IN_REPORT = 5
HISTOGRAM_BINS = 10
HISTOGRAM_WIDTH = 30
QUARTILES = (0.25, 0.5, 0.75)
SCORE_BINS = 1000  # per unit: bins of 0.001
LATENCY_BIN_MS = 1.0


def report_markdown(experiment: Experiment) -> str:
    """The report as last built, or built now and kept until something changes."""
    kept = Report.objects.filter(experiment=experiment).values_list("markdown", flat=True).first()
    if kept is not None:
        return kept
    markdown = build_report(experiment)
    Report.keep(experiment.pk, markdown)
    return markdown


def build_report(experiment: Experiment) -> str:
    runs = Run.objects.filter(experiment=experiment)
    totals = _totals(runs)
    done = runs.filter(status=RunStatus.COMPLETED)
    columns = _columns(experiment)
    figures = _figures(done, columns)
    sections = [
        f"# Report: {experiment.name}\n\n{_runs_line(totals)}",
        _space_section(runs),
        _top_section(experiment),
        _judge_section(judges(experiment)),
        _distribution_section(columns, figures),
        _token_section(experiment, totals),
        _timing_section(experiment, figures),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


Totals = list[dict[str, Any]]  # per status and model: runs, tokens, calls, cached calls and tokens


def _totals(runs: QuerySet[Run]) -> Totals:
    """One grouped scan. By model too: what a run costs depends on its model."""
    rows = (
        runs.order_by()
        .values("status", model=KT("config__model"))
        .annotate(
            n=Count("id"),
            tin=Sum("tokens_in"),
            tout=Sum("tokens_out"),
            calls=Sum("calls"),
            cached=Sum("cached_calls"),
            cached_tokens=Sum("cached_tokens"),
        )
    )
    return list(rows)


def _runs_line(totals: Totals) -> str:
    counts = {status: sum(r["n"] for r in totals if r["status"] == status) for status in RunStatus.values}
    parts = [f"{n} {status}" for status, n in counts.items() if n]
    return f"{sum(counts.values())} runs" + (f" ({', '.join(parts)})." if parts else ".")


def _cell(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("|", "\\|")


def _space_section(runs: QuerySet[Run]) -> str:
    tried: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for key, value, n in _values_tried(runs.exclude(status=RunStatus.CANCELLED)):
        tried[key][json.dumps(value, sort_keys=True, ensure_ascii=False)] += n
    lines = ["## Configuration space explored", ""]
    if not tried:
        return "\n".join([*lines, "No configuration has been run yet."])
    lines += ["| parameter | values tried (runs) |", "| --- | --- |"]
    for key in sorted(tried):
        values = sorted(tried[key].items(), key=lambda kv: kv[0])
        shown = ", ".join(f"`{_cell(json.loads(v), 40)}` ({n})" for v, n in values)
        lines.append(f"| `{_cell(key)}` | {shown} |")
    return "\n".join(lines)


def _values_tried(runs: QuerySet[Run]) -> Iterator[tuple[str, Any, int]]:
    """(parameter, value, runs) for every value tried: runs counted per configuration
    (by hash), then one config read per configuration, never one per run."""
    per_config = runs.order_by().values("config_hash").annotate(first=Min("id"), n=Count("id"))
    per_config = per_config.values_list("first", "n")
    if connection.vendor == "postgresql":
        inner, params = per_config.query.sql_with_params()
        sql = (
            f"SELECT e.key, e.value, sum(c.n) FROM ({inner}) AS c (first, n) "
            "JOIN runs_run r ON r.id = c.first CROSS JOIN LATERAL jsonb_each(r.config) e GROUP BY 1, 2"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            for key, value, n in cursor.fetchall():
                yield key, json.loads(value), int(n)  # Django reads jsonb as text
        return
    counts = dict(per_config)
    ids = sorted(counts)
    for start in range(0, len(ids), 2000):
        for run_id, config in Run.objects.filter(id__in=ids[start : start + 2000]).values_list(
            "id", "config"
        ):
            for key, value in (config or {}).items():
                yield key, value, counts[run_id]


def _top_section(experiment: Experiment) -> str:
    rows = leaderboard(experiment, n=TOP_IN_REPORT)
    lines = [f"## Top {TOP_IN_REPORT} configurations", ""]
    if not rows:
        return "\n".join([*lines, "No completed run has a score yet."])
    lines += [
        f"| rank | run | score | 95% CI | tied with #1 | configuration | tokens in / out | cost ({settings.CURRENCY}) | latency ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        ci = "–" if row["ci_low"] is None else f"{row['ci_low']:.3f}–{row['ci_high']:.3f}"
        tied = {True: "yes", False: "no", None: "–"}[row["tied_with_leader"]]
        lines.append(
            f"| {row['rank']} | {row['run_id']} | {row['weighted_score']:.3f} | {ci} | {tied} | "
            f"{_cell(row['config'], 120)} | {row['tokens_in']} / {row['tokens_out']} | "
            f"{experiment.cost(row['config'], row['tokens_in'], row['tokens_out']):.4f} | {row['latency_ms']:.0f} |"
        )
    total = sum(experiment.cost(r["config"], r["tokens_in"], r["tokens_out"]) for r in rows)
    return "\n".join([*lines, "", f"Cost of these {len(rows)}: {total:.4f} {settings.CURRENCY}."])


def _judge_section(summaries: list[JudgeSummary]) -> str:
    """Per LLM judge: who judges, outputs it could not rate (apart from low scores),
    its rating spread and its agreement with people; nothing without a judge."""
    if not summaries:
        return ""
    lines = [
        "## Judges",
        "",
        "Spread: the std of a judge's ratings of one output over its samples, on the 1-10 scale. "
        "Agreement: outputs rated by the judge and by people (Spearman ρ, mean |difference|).",
        "",
        "| judge | endpoint · model | samples | rated | could not rate | mean spread | pairs | ρ | mean abs. diff | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [_judge_line(summary) for summary in summaries]
    warnings = [f"- Warning: {summary['warning']}" for summary in summaries if summary["warning"]]
    return "\n".join([*lines, *([""] + warnings if warnings else [])])


def _judge_line(summary: JudgeSummary) -> str:
    agree = summary["agreement"]
    return (
        f"| {_cell(summary['scorer'])} | {_cell(summary['endpoint'] or '(none)')} · "
        f"{_cell(summary['model'] or '(none)')} | {summary['samples']} | {summary['rated']} | "
        f"{summary['could_not_rate']} | {_figure(summary['mean_spread'], 2)} | {agree['pairs']} | "
        f"{_figure(agree['spearman'], 2)} | {_figure(agree['mean_abs_diff'], 2)} | {_cell(agree['verdict'])} |"
    )


def _figure(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _columns(experiment: Experiment) -> dict[str, Any]:
    """Per-run values the report summarises: each scorer's run mean (kept in
    Run.scorer_means), the weighted score and the run's call latency summary."""
    names = sorted({s.get("name") or s["type"] for s in experiment.scorers})
    columns: dict[str, Any] = {name: _scorer_mean(name) for name in names if "__" not in name}
    columns["weighted score"] = F("weighted_score")
    return columns


def _scorer_mean(name: str) -> Any:
    """A run's mean for the scorer; SQL NULL when it scored nothing (a JSON null,
    which SQLite's text extraction would otherwise read as 0)."""
    mean = Cast(KT(f"scorer_means__{name}"), FloatField())
    if connection.vendor == "postgresql":
        return mean  # ->> gives SQL NULL for a JSON null
    return Case(When(**{f"scorer_means__{name}": None}, then=Value(None)), default=mean)


# -- distributions from binned per-run values ---------------------------------------
def _figures(done: QuerySet[Run], columns: dict[str, Any]) -> dict[str, Any]:
    """Per column: n, min, max, mean, quartiles and a histogram; and call latency as
    the median of runs' p50 and the p95 of their p95 (nearest rank)."""
    binned = {name: (expr, SCORE_BINS) for name, expr in columns.items()}
    binned |= {
        "p50": (F("latency_p50_ms"), 1 / LATENCY_BIN_MS),
        "p95": (F("latency_p95_ms"), 1 / LATENCY_BIN_MS),
    }
    bins = _bins_in_one_scan(done, binned) if connection.vendor == "postgresql" else _bins(done, binned)
    found: dict[str, Any] = {name: _distribution_of(bins[name]) for name in columns}
    latency = (_rank_value(bins["p50"], 0.5), _rank_value(bins["p95"], 0.95))
    return found | {"latency": latency}


Bin = tuple[int, float, float, float]  # (count, sum, min, max) of the values in one bin


def _bins(done: QuerySet[Run], binned: dict[str, tuple[Any, float]]) -> dict[str, list[Bin]]:
    """Each column's bins, one grouped query per column (SQLite)."""
    found = {}
    for name, (expr, scale) in binned.items():
        rows = (
            done.annotate(v=expr)
            .filter(v__isnull=False)
            .annotate(b=Floor(F("v") * scale))
            .values("b")
            .annotate(n=Count("id"), s=Sum("v"), lo=Min("v"), hi=Max("v"))
            .order_by("b")
            .values_list("n", "s", "lo", "hi")
        )
        found[name] = list(rows)
    return found


def _bins_in_one_scan(done: QuerySet[Run], binned: dict[str, tuple[Any, float]]) -> dict[str, list[Bin]]:
    """Every column's bins from one scan (PostgreSQL's GROUPING SETS)."""
    names = list(binned)
    inner, params = (
        done.order_by().values_list(*(expr for expr, _ in binned.values())).query.sql_with_params()
    )
    columns = range(len(names))
    keys = ", ".join(f"b{i}" for i in columns)
    bins = ", ".join(f"floor(v{i} * {scale}) AS b{i}" for i, (_, scale) in enumerate(binned.values()))
    stats = ", ".join(f"count(v{i}), sum(v{i}), min(v{i}), max(v{i})" for i in columns)
    sql = (
        f"SELECT GROUPING({keys}), {keys}, {stats} "
        f"FROM (SELECT *, {bins} FROM ({inner}) AS r ({', '.join(f'v{i}' for i in columns)})) AS t "
        f"GROUP BY GROUPING SETS ({', '.join(f'(b{i})' for i in columns)})"
    )
    found: dict[str, list[tuple[float, Bin]]] = {name: [] for name in names}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for row in cursor.fetchall():
            i = _grouped_column(row[0], len(names))
            key = row[1 + i]
            count, total, low, high = row[1 + len(names) + 4 * i : 1 + len(names) + 4 * i + 4]
            if key is not None:
                found[names[i]].append((key, (count, total, low, high)))
    return {name: [b for _, b in sorted(rows)] for name, rows in found.items()}


def _grouped_column(mask: int, columns: int) -> int:
    """Which column a GROUPING SETS row is grouped by: the bit of GROUPING() that is 0."""
    return next(i for i in range(columns) if not mask & (1 << (columns - 1 - i)))


def _distribution_of(bins: list[Bin]) -> dict[str, Any]:
    n = sum(b[0] for b in bins)
    if not n:
        return {"n": 0}
    histogram = [0] * HISTOGRAM_BINS
    for count, _, low, _ in bins:
        histogram[min(HISTOGRAM_BINS - 1, max(0, int(low * HISTOGRAM_BINS)))] += count
    quartiles = [_interpolated(bins, n, q) for q in QUARTILES]
    return {
        "n": n,
        "min": bins[0][2],
        "max": bins[-1][3],
        "mean": sum(b[1] for b in bins) / n,
        "q0": quartiles[0],
        "q1": quartiles[1],
        "q2": quartiles[2],
        "bins": histogram,
    }


def _kth(bins: list[Bin], k: int) -> float:
    """The k-th smallest value (from 0): exact when its bin holds one distinct value,
    else placed evenly between the bin's min and max by its rank in the bin."""
    seen = 0
    for count, _, low, high in bins:
        if k < seen + count:
            return low if count == 1 or low == high else low + (high - low) * (k - seen) / (count - 1)
        seen += count
    return bins[-1][3]


def _interpolated(bins: list[Bin], n: int, q: float) -> float:
    """As statistics.quantiles(method="inclusive") and percentile_cont."""
    h = q * (n - 1)
    below = math.floor(h)
    low = _kth(bins, below)
    return low if below == h else low + (h - below) * (_kth(bins, below + 1) - low)


def _rank_value(bins: list[Bin], q: float) -> float | None:
    """percentile_disc: the first value whose cumulative share reaches q."""
    n = sum(b[0] for b in bins)
    return _kth(bins, max(0, math.ceil(q * n) - 1)) if n else None


def _distribution_section(columns: dict[str, Any], figures: dict[str, Any]) -> str:
    """Per scorer: the distribution of run means (one value per completed run)."""
    lines = ["## Score distributions", "", "One value per completed run: the run's mean for that scorer.", ""]
    for name in columns:
        lines += [f"### {name}", "", *_distribution(figures[name]), ""]
    return "\n".join(lines).rstrip()


def _distribution(f: dict[str, Any]) -> list[str]:
    if not f["n"]:
        return ["No values."]
    lines = [
        f"n={f['n']} · min {f['min']:.3f} · q1 {f['q0']:.3f} · median {f['q1']:.3f} · "
        f"q3 {f['q2']:.3f} · max {f['max']:.3f} · mean {f['mean']:.3f}",
        "",
        "```histogram",  # plain text in any markdown viewer; an SVG chart on the report page
    ]
    top = max(f["bins"])
    for i, count in enumerate(f["bins"]):
        bar = "█" * round(HISTOGRAM_WIDTH * count / top) if count else ""
        lines.append(f"{i / HISTOGRAM_BINS:.1f}–{(i + 1) / HISTOGRAM_BINS:.1f} | {bar} {count}")
    return [*lines, "```"]


def _token_section(experiment: Experiment, totals: Totals) -> str:
    def total(key: str) -> int:
        return sum(row[key] or 0 for row in totals)

    # Prices are per token: the cost of a model's summed tokens is the sum of its runs' costs.
    cost = sum(experiment.cost({"model": r["model"]}, r["tin"] or 0, r["tout"] or 0) for r in totals)
    return "\n".join(
        [
            "## Token usage",
            "",
            f"- Tokens in: {total('tin'):,}",
            f"- Tokens out: {total('tout'):,}",
            f"- Saved by the cache: {total('cached_tokens'):,} tokens "
            f"({total('cached'):,} of {total('calls'):,} calls answered from the cache)",
            f"- Cost: {cost:.4f} {settings.CURRENCY}",
        ]
    )


def _timing_section(experiment: Experiment, figures: dict[str, Any]) -> str:
    p50, p95 = figures["latency"]
    lines = ["## Timing", ""]
    if p50 is None:
        lines.append("- Call latency: no calls yet.")
    else:
        lines.append(
            f"- Call latency (uncached calls; the median of completed runs' p50, the p95 of their p95): "
            f"p50 {p50:.0f} ms, p95 {p95:.0f} ms"
        )
    for sweep in experiment.sweeps.order_by("-created_at")[:10]:
        lines.append(f"- Sweep {sweep.pk} ({sweep.type}, {sweep.status}): wall time {_wall_time(sweep)}")
    return "\n".join(lines)


def _wall_time(sweep) -> str:
    if sweep.started_at is None:
        return "not started"
    end = sweep.finished_at or timezone.now()
    seconds = (end - sweep.started_at).total_seconds()
    return f"{seconds:.1f} s" + ("" if sweep.finished_at else " so far")
