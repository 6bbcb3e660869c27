"""The best configuration as a file to deploy (JSON, .env or YAML), and the
experiment's markdown report."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any, TypedDict

import yaml
from django.conf import settings
from django.db.models import Avg, Count, F, QuerySet, Sum
from django.utils import timezone

from engine.runner import StagePlan, plan_stages
from engine.types import EndpointConfig
from experiments.models import Experiment
from runs.bridge import all_endpoints, stages_of
from runs.judging import JudgeSummary, judges
from runs.leaderboard import leaderboard, ranked_runs
from runs.models import Run, RunStatus, Score, ScoreSource, StageResult

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
def report_markdown(experiment: Experiment) -> str:
    runs = Run.objects.filter(experiment=experiment)
    sections = [
        f"# Report: {experiment.name}\n\n{_runs_line(runs)}",
        _space_section(runs),
        _top_section(experiment),
        _judge_section(judges(experiment)),
        _distribution_section(runs),
        _token_section(runs),
        _timing_section(experiment, runs),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def _runs_line(runs: QuerySet[Run]) -> str:
    found = dict(runs.order_by().values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    counts = {status: found.get(status, 0) for status in RunStatus.values}
    parts = [f"{n} {status}" for status, n in counts.items() if n]
    return f"{sum(counts.values())} runs" + (f" ({', '.join(parts)})." if parts else ".")


def _cell(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("|", "\\|")


def _space_section(runs: QuerySet[Run]) -> str:
    tried: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    configs = runs.exclude(status=RunStatus.CANCELLED).values_list("config", flat=True)
    for config in configs.iterator(chunk_size=2000):
        for key, value in (config or {}).items():
            tried[key][json.dumps(value, sort_keys=True, ensure_ascii=False)] += 1
    lines = ["## Configuration space explored", ""]
    if not tried:
        return "\n".join([*lines, "No configuration has been run yet."])
    lines += ["| parameter | values tried (runs) |", "| --- | --- |"]
    for key in sorted(tried):
        values = sorted(tried[key].items(), key=lambda kv: kv[0])
        shown = ", ".join(f"`{_cell(json.loads(v), 40)}` ({n})" for v, n in values)
        lines.append(f"| `{_cell(key)}` | {shown} |")
    return "\n".join(lines)


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


def _distribution_section(runs: QuerySet[Run]) -> str:
    """Per scorer: the distribution of run means (one value per completed run)."""
    done = runs.filter(status=RunStatus.COMPLETED)
    per_scorer: dict[str, list[float]] = defaultdict(list)
    for scorer, mean in _run_means(done):
        per_scorer[scorer].append(mean)
    per_scorer["weighted score"] = list(
        done.exclude(weighted_score=None).values_list("weighted_score", flat=True)
    )
    lines = ["## Score distributions", "", "One value per completed run: the run's mean for that scorer.", ""]
    for name in [*sorted(k for k in per_scorer if k != "weighted score"), "weighted score"]:
        lines += [f"### {name}", "", *_distribution(per_scorer[name]), ""]
    return "\n".join(lines).rstrip()


def _run_means(done: QuerySet[Run]) -> list[tuple[str, float]]:
    rows = (
        Score.objects.filter(run__in=done, source=ScoreSource.AUTO, value__isnull=False)
        .values("run_id", "scorer")
        .annotate(mean=Avg("value"))
        .order_by()
    )
    return [(row["scorer"], row["mean"]) for row in rows]


def _distribution(values: list[float]) -> list[str]:
    if not values:
        return ["No values."]
    q1, median, q3 = (
        statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    )
    lines = [
        f"n={len(values)} · min {min(values):.3f} · q1 {q1:.3f} · median {median:.3f} · "
        f"q3 {q3:.3f} · max {max(values):.3f} · mean {statistics.fmean(values):.3f}",
        "",
        "```histogram",  # plain text in any markdown viewer; an SVG chart on the report page
    ]
    counts = [0] * HISTOGRAM_BINS
    for value in values:
        counts[min(HISTOGRAM_BINS - 1, max(0, int(value * HISTOGRAM_BINS)))] += 1
    top = max(counts)
    for i, count in enumerate(counts):
        bar = "█" * round(HISTOGRAM_WIDTH * count / top) if count else ""
        lines.append(f"{i / HISTOGRAM_BINS:.1f}–{(i + 1) / HISTOGRAM_BINS:.1f} | {bar} {count}")
    return [*lines, "```"]


def _token_section(runs: QuerySet[Run]) -> str:
    totals = runs.aggregate(
        tin=Sum("tokens_in"), tout=Sum("tokens_out"), calls=Sum("calls"), cached=Sum("cached_calls")
    )
    cached = StageResult.objects.filter(run__in=runs, cached=True).aggregate(
        tokens=Sum(F("tokens_in") + F("tokens_out"))
    )
    return "\n".join(
        [
            "## Token usage",
            "",
            f"- Tokens in: {totals['tin'] or 0:,}",
            f"- Tokens out: {totals['tout'] or 0:,}",
            f"- Saved by the cache: {cached['tokens'] or 0:,} tokens "
            f"({totals['cached'] or 0:,} of {totals['calls'] or 0:,} calls answered from the cache)",
            f"- Cost: {runs_cost(runs):.4f} {settings.CURRENCY}",
        ]
    )


def runs_cost(runs: QuerySet[Run]) -> float:
    spent = (
        runs.filter(tokens_in__gt=0)
        .select_related(None)
        .values_list("experiment_id", "config", "tokens_in", "tokens_out")
    )
    experiments: dict[int, Experiment] = {}
    total = 0.0
    for experiment_id, config, tokens_in, tokens_out in spent.iterator(chunk_size=2000):
        if experiment_id not in experiments:
            experiments[experiment_id] = Experiment.objects.select_related("endpoint").get(pk=experiment_id)
        total += experiments[experiment_id].cost(config, tokens_in, tokens_out)
    return total


def _timing_section(experiment: Experiment, runs: QuerySet[Run]) -> str:
    calls = StageResult.objects.filter(run__in=runs, cached=False)
    p50, p95 = percentiles(calls, "latency_ms", (0.50, 0.95))
    lines = ["## Timing", ""]
    if p50 is None:
        lines.append("- Call latency: no calls yet.")
    else:
        lines.append(f"- Call latency (uncached calls): p50 {p50:.0f} ms, p95 {p95:.0f} ms")
    for sweep in experiment.sweeps.order_by("-created_at")[:10]:
        lines.append(f"- Sweep {sweep.pk} ({sweep.type}, {sweep.status}): wall time {_wall_time(sweep)}")
    return "\n".join(lines)


def percentiles(rows: QuerySet, field: str, qs: tuple[float, ...]) -> list[float | None]:
    """The q-quantiles of `field` (nearest rank), each found by the database."""
    count = rows.count()
    if not count:
        return [None] * len(qs)
    ordered = rows.order_by(field).values_list(field, flat=True)
    return [ordered[round(q * (count - 1))] for q in qs]


def _wall_time(sweep) -> str:
    if sweep.started_at is None:
        return "not started"
    end = sweep.finished_at or timezone.now()
    seconds = (end - sweep.started_at).total_seconds()
    return f"{seconds:.1f} s" + ("" if sweep.finished_at else " so far")
