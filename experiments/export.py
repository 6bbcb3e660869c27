"""The best configuration as a file to deploy (JSON, .env or YAML), and the
experiment's markdown report."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypedDict

import yaml
from django.db import connection
from django.db.models import Aggregate, Avg, Count, F, FloatField, Max, Min, Q, QuerySet, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.utils import timezone

from engine.runner import StagePlan, plan_stages
from engine.types import EndpointConfig
from experiments.models import Experiment, Report
from runs.bridge import all_endpoints, stages_of
from runs.judging import JudgeSummary, judges
from runs.leaderboard import leaderboard, ranked_runs
from runs.models import Run, RunStatus

ENV_PREFIX = "PROMPTLOOPER_"
TOP_IN_REPORT = 5
HISTOGRAM_BINS = 10
HISTOGRAM_WIDTH = 30


class ExportMetadata(TypedDict):
    experiment: str
    experiment_id: int
    run_id: int
    sweep_id: int | None
    config_hash: str
    weighted_score: float | None
    exported_at: str


class ExportedStage(TypedDict):
    name: str
    model: str
    params: dict[str, Any]
    system: str
    user: str


class ExportedConfig(TypedDict):
    metadata: ExportMetadata
    config: dict[str, Any]  # the parameters as the sweep set them
    stages: list[ExportedStage]  # each stage with the config applied


# -- configs resolved -------------------------------------------------------------
def resolved_stages(experiment: Experiment, config: dict[str, Any]) -> list[StagePlan]:
    """Each stage with `config` applied; raises engine.runner.RunFailure if it cannot run."""
    endpoints = all_endpoints(experiment.project_id, with_keys=False)
    own = experiment.endpoint
    endpoint = endpoints[own.name] if own else EndpointConfig(name="(none)", base_url="")
    return plan_stages(stages_of(experiment), config, endpoint, endpoints)


def best_run(experiment: Experiment) -> Run | None:
    return ranked_runs(experiment).first()


def exported_config(run: Run) -> ExportedConfig:
    experiment = run.experiment
    metadata = ExportMetadata(
        experiment=experiment.name,
        experiment_id=experiment.pk,
        run_id=run.pk,
        sweep_id=run.sweep_id,
        config_hash=run.config_hash,
        weighted_score=run.weighted_score,
        exported_at=timezone.now().isoformat(timespec="seconds"),
    )
    stages = [
        ExportedStage(name=p.name, model=p.model, params=dict(p.params), system=p.system, user=p.user)
        for p in resolved_stages(experiment, run.config)
    ]
    return ExportedConfig(metadata=metadata, config=dict(run.config), stages=stages)


# -- file formats -----------------------------------------------------------------
def to_json(export: ExportedConfig) -> str:
    return json.dumps(export, indent=2, ensure_ascii=False) + "\n"


def to_yaml(export: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(export), sort_keys=False, allow_unicode=True, width=100)


# A `$` or a backquote cannot be written inside double quotes the same way for a
# shell (which needs `\$`) and for python-dotenv (which keeps the backslash), but
# `${NAME}` means the same to both: these two carry the characters.
DOLLAR, BACKQUOTE = f"{ENV_PREFIX}DOLLAR", f"{ENV_PREFIX}BACKQUOTE"
ENV_HELPERS = f"{DOLLAR}='$'\n{BACKQUOTE}='`'\n"


def env_quote(value: str) -> str:
    """`value` as bash, dash and python-dotenv's dotenv_values (which expands ${...}) read it back.

    Single quotes are literal to a shell, and to dotenv but for `\\`, `\'` and
    `${...}`: values without those go in single quotes. The rest go in double
    quotes, where both decode `\\` and `\"` alike and nothing else is escaped."""
    if "'" not in value and "\\" not in value and "${" not in value:
        return f"'{value}'"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("$", "${" + DOLLAR + "}").replace("`", "${" + BACKQUOTE + "}")
    return f'"{escaped}"'


def to_env(export: ExportedConfig) -> str:
    meta = export["metadata"]
    values: dict[str, str] = {
        "EXPERIMENT": meta["experiment"],
        "EXPERIMENT_ID": str(meta["experiment_id"]),
        "RUN_ID": str(meta["run_id"]),
        "SWEEP_ID": "" if meta["sweep_id"] is None else str(meta["sweep_id"]),
        "CONFIG_HASH": meta["config_hash"],
        "SCORE": "" if meta["weighted_score"] is None else repr(meta["weighted_score"]),
        "EXPORTED_AT": meta["exported_at"],
        "CONFIG": json.dumps(export["config"], ensure_ascii=False),
        "STAGES": str(len(export["stages"])),
    }
    for n, stage in enumerate(export["stages"], start=1):
        values[f"STAGE_{n}_NAME"] = stage["name"]
        values[f"STAGE_{n}_MODEL"] = stage["model"]
        values[f"STAGE_{n}_PARAMS"] = json.dumps(stage["params"], ensure_ascii=False)
        values[f"STAGE_{n}_SYSTEM"] = stage["system"]
        values[f"STAGE_{n}_USER"] = stage["user"]
    header = (
        f"# PromptLooper: best configuration of {meta['experiment']!r} (run {meta['run_id']}).\n"
        "# Safe to source in a shell (set -a; . ./this.env) and to read with python-dotenv\n"
        f"# (dotenv_values): both read every value back exactly. {DOLLAR} and {BACKQUOTE}\n"
        "# carry the characters a double-quoted value cannot hold literally.\n"
    )
    lines = [f"{ENV_PREFIX}{key}={env_quote(value)}\n" for key, value in values.items()]
    return header + ENV_HELPERS + "".join(lines)


# Each way to export a configuration: how to write it, and its media type.
FORMATS: dict[str, tuple[Callable[[Any], str], str]] = {
    "json": (to_json, "application/json"),
    "yaml": (to_yaml, "application/yaml"),
    "env": (to_env, "text/plain"),
}


def export_filename(run: Run, fmt: str) -> str:
    return f"promptlooper-{run.experiment_id}-run-{run.pk}.{fmt}"


def from_env(values: Mapping[str, str | None]) -> ExportedConfig:
    """The inverse of to_env, from what dotenv_values read."""

    def get(key: str) -> str:
        return values.get(ENV_PREFIX + key) or ""

    metadata = ExportMetadata(
        experiment=get("EXPERIMENT"),
        experiment_id=int(get("EXPERIMENT_ID")),
        run_id=int(get("RUN_ID")),
        sweep_id=int(get("SWEEP_ID")) if get("SWEEP_ID") else None,
        config_hash=get("CONFIG_HASH"),
        weighted_score=float(get("SCORE")) if get("SCORE") else None,
        exported_at=get("EXPORTED_AT"),
    )
    stages = [
        ExportedStage(
            name=get(f"STAGE_{n}_NAME"),
            model=get(f"STAGE_{n}_MODEL"),
            params=json.loads(get(f"STAGE_{n}_PARAMS") or "{}"),
            system=get(f"STAGE_{n}_SYSTEM"),
            user=get(f"STAGE_{n}_USER"),
        )
        for n in range(1, int(get("STAGES") or 0) + 1)
    ]
    return ExportedConfig(metadata=metadata, config=json.loads(get("CONFIG") or "{}"), stages=stages)


# -- the report -------------------------------------------------------------------
# Every figure is an aggregate the database computes over one row per run (the
# summaries runs keep when they complete, runs/aggregates.py): memory does not
# grow with the runs. The report is kept once built (experiments.models.Report).
def report_markdown(experiment: Experiment) -> str:
    """The report as last built, or built now and kept until something changes."""
    kept = Report.objects.filter(experiment=experiment).values_list("markdown", flat=True).first()
    if kept is not None:
        return kept
    markdown = build_report(experiment)
    Report.objects.update_or_create(experiment=experiment, defaults={"markdown": markdown})
    return markdown


def forget_report(experiment_id: int) -> None:
    Report.forget(experiment_id)


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
        _token_section(totals),
        _timing_section(experiment, figures),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def _totals(runs: QuerySet[Run]) -> dict[str, dict[str, int]]:
    """Per status: runs, tokens, calls, cached calls and tokens (one grouped scan)."""
    rows = (
        runs.order_by()
        .values("status")
        .annotate(
            n=Count("id"),
            tin=Sum("tokens_in"),
            tout=Sum("tokens_out"),
            calls=Sum("calls"),
            cached=Sum("cached_calls"),
            cached_tokens=Sum("cached_tokens"),
        )
    )
    return {row.pop("status"): row for row in rows}


def _runs_line(totals: dict[str, dict[str, int]]) -> str:
    counts = {status: totals.get(status, {}).get("n", 0) for status in RunStatus.values}
    parts = [f"{n} {status}" for status, n in counts.items() if n]
    return f"{sum(counts.values())} runs" + (f" ({', '.join(parts)})." if parts else ".")


def _cell(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("|", "\\|")


def _space_section(runs: QuerySet[Run]) -> str:
    tried: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for config, n in _configurations(runs.exclude(status=RunStatus.CANCELLED)):
        for key, value in (config or {}).items():
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


def _configurations(runs: QuerySet[Run]) -> Iterator[tuple[dict, int]]:
    """Each configuration tried and its number of runs: counted by hash in SQL,
    then one config read per configuration, not per run."""
    counts = dict(
        runs.order_by()
        .values("config_hash")
        .annotate(first=Min("id"), n=Count("id"))
        .values_list("first", "n")
    )
    ids = sorted(counts)
    for start in range(0, len(ids), 2000):
        chunk = ids[start : start + 2000]
        for run_id, config in Run.objects.filter(id__in=chunk).values_list("id", "config"):
            yield config, counts[run_id]


def _top_section(experiment: Experiment) -> str:
    rows = leaderboard(experiment, n=TOP_IN_REPORT)
    lines = [f"## Top {TOP_IN_REPORT} configurations", ""]
    if not rows:
        return "\n".join([*lines, "No completed run has a score yet."])
    lines += [
        "| rank | run | score | 95% CI | tied with #1 | configuration | tokens in / out | latency ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        ci = "–" if row["ci_low"] is None else f"{row['ci_low']:.3f}–{row['ci_high']:.3f}"
        tied = {True: "yes", False: "no", None: "–"}[row["tied_with_leader"]]
        lines.append(
            f"| {row['rank']} | {row['run_id']} | {row['weighted_score']:.3f} | {ci} | {tied} | "
            f"{_cell(row['config'], 120)} | {row['tokens_in']} / {row['tokens_out']} | {row['latency_ms']:.0f} |"
        )
    return "\n".join(lines)


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


# -- distributions from per-run figures ------------------------------------------------
def _columns(experiment: Experiment) -> dict[str, Any]:
    """Per-run values the report summarises: each scorer's run mean (kept in
    Run.scorer_means), the weighted score and the run's call latency summary."""
    names = sorted({s.get("name") or s["type"] for s in experiment.scorers})
    columns: dict[str, Any] = {
        name: Cast(KT(f"scorer_means__{name}"), FloatField()) for name in names if "__" not in name
    }
    columns["weighted score"] = F("weighted_score")
    return columns


def _figures(done: QuerySet[Run], columns: dict[str, Any]) -> dict[str, Any]:
    """n, min, max, mean, quartiles and histogram counts of each column, and the
    median run p50 / the p95 of run p95s of call latency: one scan on PostgreSQL."""
    aliases = {name: f"c{i}" for i, name in enumerate(columns)}
    runs = done.annotate(**{aliases[name]: expr for name, expr in columns.items()})
    aggregates: dict[str, Any] = {}
    for alias in aliases.values():
        aggregates |= _column_aggregates(alias)
    if connection.vendor == "postgresql":
        aggregates |= {
            f"{alias}_q{i}": Quantile(alias, q) for alias in aliases.values() for i, q in enumerate(QUARTILES)
        }
        aggregates |= {
            "p50": Quantile("latency_p50_ms", 0.50, "disc"),
            "p95": Quantile("latency_p95_ms", 0.95, "disc"),
        }
        found = runs.aggregate(**aggregates)
    else:  # SQLite, a small installation: the quantiles from the values themselves.
        found = runs.aggregate(**aggregates) | _quantiles_in_python(runs, aliases.values())
    return {name: _column(found, alias) for name, alias in aliases.items()} | {
        "latency": (found["p50"], found["p95"])
    }


QUARTILES = (0.25, 0.5, 0.75)


class Quantile(Aggregate):
    """PostgreSQL's percentile_cont (interpolated, as statistics.quantiles(method="inclusive"))
    or percentile_disc (the first value at or past the fraction)."""

    template = "percentile_%(kind)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: str, fraction: float, kind: str = "cont") -> None:
        super().__init__(expression, fraction=float(fraction), kind=kind)


def _column_aggregates(alias: str) -> dict[str, Any]:
    bins = {f"{alias}_b{i}": Count("id", filter=_bin(alias, i)) for i in range(HISTOGRAM_BINS)}
    return {
        f"{alias}_n": Count(alias),
        f"{alias}_min": Min(alias),
        f"{alias}_max": Max(alias),
        f"{alias}_mean": Avg(alias),
        **bins,
    }


def _bin(alias: str, i: int) -> Q:
    """Bin i of [0, 1]; the last one holds 1.0 too."""
    low = Q() if i == 0 else Q(**{f"{alias}__gte": i / HISTOGRAM_BINS})
    high = Q() if i == HISTOGRAM_BINS - 1 else Q(**{f"{alias}__lt": (i + 1) / HISTOGRAM_BINS})
    return low & high & Q(**{f"{alias}__isnull": False})


def _quantiles_in_python(runs: QuerySet[Run], aliases: Any) -> dict[str, float | None]:
    found: dict[str, float | None] = {}
    for alias in aliases:
        values = sorted(v for v in runs.values_list(alias, flat=True) if v is not None)
        qs = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
        found |= {f"{alias}_q{i}": (qs[i] if qs else None) for i in range(len(QUARTILES))}
    for name, q in (("p50", 0.50), ("p95", 0.95)):
        field = f"latency_{name}_ms"
        values = sorted(v for v in runs.values_list(field, flat=True) if v is not None)
        found[name] = values[max(0, math.ceil(q * len(values)) - 1)] if values else None
    return found


def _column(found: dict[str, Any], alias: str) -> dict[str, Any]:
    figures = {key: found[f"{alias}_{key}"] for key in ("n", "min", "max", "mean", "q0", "q1", "q2")}
    return figures | {"bins": [found[f"{alias}_b{i}"] for i in range(HISTOGRAM_BINS)]}


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
        "```",
    ]
    top = max(f["bins"])
    for i, count in enumerate(f["bins"]):
        bar = "█" * round(HISTOGRAM_WIDTH * count / top) if count else ""
        lines.append(f"{i / HISTOGRAM_BINS:.1f}–{(i + 1) / HISTOGRAM_BINS:.1f} | {bar} {count}")
    return [*lines, "```"]


def _token_section(totals: dict[str, dict[str, int]]) -> str:
    def total(key: str) -> int:
        return sum(row[key] or 0 for row in totals.values())

    return "\n".join(
        [
            "## Token usage",
            "",
            f"- Tokens in: {total('tin'):,}",
            f"- Tokens out: {total('tout'):,}",
            f"- Saved by the cache: {total('cached_tokens'):,} tokens "
            f"({total('cached'):,} of {total('calls'):,} calls answered from the cache)",
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
