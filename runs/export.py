"""The best configuration as a file to deploy (JSON, .env or YAML); the report is
in runs/report.py."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypedDict

import yaml
from django.utils import timezone

from engine.runner import StagePlan, plan_stages
from engine.types import EndpointConfig
from experiments.models import Experiment
from runs.bridge import all_endpoints, stages_of
from runs.leaderboard import ranked_runs
from runs.models import Run

ENV_PREFIX = "PROMPTLOOPER_"


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
