"""Experiments as code: one YAML or JSON file per experiment.

    version: 1
    name: Capitals
    description: ...
    endpoint: local                  # the experiment's endpoint, by name (in the project)
    pipeline: [{name, system, user, model?, params?}, ...]
    dataset: [{input: {...}, reference: ...}, ...]   # or a CSV / JSONL path, relative to the file
    parameter_space: {...}           # lists, ranges, linked bundles
    scorers: [{type, weight, config, name?}, ...]
    sweep: {type, n_samples, seed, repeats, max_concurrent, max_tokens, options}

`definition_of()` writes it, `load_definition()` reads a file's text into a dict
(remembering where each key sits), `import_definition()` makes or updates the
experiment. Errors name the file, the line (when the parser knows it) and the field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.db import transaction

from endpoints.models import Endpoint
from engine.sweep import SWEEP_LIMITS, SWEEPS, SweepError, build_sweep
from experiments.dataset_import import (
    DatasetImportError,
    Row,
    check_row_count,
    has_nul,
    json_problem,
    read_dataset,
    reference_text,
    row_problem,
    write_rows,
)
from experiments.models import Experiment, ExperimentFrozen
from experiments.validation import extra_params_for, validate_experiment

VERSION = 1
KEYS = (
    "version",
    "name",
    "description",
    "endpoint",
    "pipeline",
    "dataset",
    "parameter_space",
    "scorers",
    "sweep",
)
SWEEP_KEYS = {"type", *SWEEP_LIMITS, "options"}
NAME_LENGTH = Experiment._meta.get_field("name").max_length
Path_ = tuple[str | int, ...]


class DefinitionConflict(Exception):
    """An update refused while a sweep runs on the experiment (HTTP 409)."""


class DefinitionError(ValueError):
    """A definition that cannot be imported: `file:line: field: message`."""

    def __init__(self, message: str, field: str = "", line: int | None = None, file: str = ""):
        self.message, self.field, self.line, self.file = message, field, line, file
        where = ":".join(str(p) for p in (file, line) if p not in ("", None))
        super().__init__(
            " ".join(p for p in (f"{where}:" if where else "", f"{field}:" if field else "", message) if p)
        )

    def as_dict(self) -> dict[str, list[str]]:
        """The API's 400 body: keyed by the field, the message naming file and line."""
        return {self.field or "definition": [str(self)]}


# -- writing ------------------------------------------------------------------------
def definition_of(experiment: Experiment) -> dict[str, Any]:
    rows = experiment.items.order_by("position", "id").values_list("input", "reference")
    return {
        "version": VERSION,
        "name": experiment.name,
        "description": experiment.description,
        "endpoint": experiment.endpoint.name if experiment.endpoint_id else None,
        "pipeline": experiment.pipeline,
        "dataset": [{"input": inp, "reference": ref} for inp, ref in rows],
        "parameter_space": experiment.parameter_space,
        "scorers": experiment.scorers,
        "sweep": experiment.sweep_defaults,
    }


class _Dumper(yaml.SafeDumper):
    pass


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Prompts read best as blocks; a block cannot keep trailing spaces on a line, so those stay quoted.
    block = "\n" in value and not re.search(r"[ \t]\n|[ \t]$", value)
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if block else None)


_Dumper.add_representer(str, _text)


def dump(definition: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(definition, indent=2, ensure_ascii=False) + "\n"
    return yaml.dump(definition, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def filename_of(experiment: Experiment, fmt: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", experiment.name.lower()).strip("-") or "experiment"
    return f"{slug}.{'json' if fmt == 'json' else 'yaml'}"


# -- reading ------------------------------------------------------------------------
@dataclass
class Source:
    """A definition's text, parsed, with the line of each key where YAML knows it."""

    data: Any
    file: str = ""
    base_dir: Path | None = None
    root: yaml.Node | None = None

    def line(self, path: Path_) -> int | None:
        """Where the key (or the list entry) at `path` starts; its parent's line if it is absent."""
        node, found = self.root, None
        for part in path:
            step = _child(node, part)
            if step is None:
                break
            mark, node = step
            found = mark.line + 1
        return found

    def error(self, message: str, path: Path_ = (), field: str = "") -> DefinitionError:
        return DefinitionError(message, field or ".".join(str(p) for p in path), self.line(path), self.file)


def _child(node: yaml.Node | None, part: str | int) -> tuple[yaml.Mark, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        return next(((k.start_mark, v) for k, v in node.value if k.value == part), None)
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return node.value[part].start_mark, node.value[part]
    return None


def load_definition(text: str, file: str = "", base_dir: Path | None = None) -> Source:
    """Parse YAML (JSON is YAML too); a syntax error names its line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise DefinitionError(f"not valid YAML or JSON: {exc.problem}", "", line, file) from None
    if not isinstance(data, dict):
        raise DefinitionError("the file must hold an object with name and pipeline", "", 1, file)
    return Source(data, file, base_dir, root)


def read_file(path: str | Path) -> Source:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError(f"cannot read the file: {exc}", "", None, str(path)) from None
    return load_definition(text, str(path), path.parent)


@dataclass
class Parsed:
    """A definition checked against a project, ready to write."""

    fields: dict[str, Any]
    rows: list[Row] | None
    warnings: list[str] = field(default_factory=list)


def parse(source: Source, project: Any) -> Parsed:
    data = source.data
    unknown = [k for k in data if k not in KEYS]
    if unknown:
        raise source.error(f"unknown key; the keys are {', '.join(KEYS)}", (unknown[0],))
    if data.get("version", VERSION) != VERSION:
        raise source.error(f"this PromptLooper reads version {VERSION}", ("version",))
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise source.error("give the experiment a name", ("name",), "name")
    if len(name.strip()) > NAME_LENGTH:
        raise source.error(f"at most {NAME_LENGTH} characters, not {len(name.strip())}", ("name",))
    fields = {
        "name": name.strip(),
        "description": _text_field(source, "description"),
        "endpoint": endpoint_named(source, project, data.get("endpoint")),
        "pipeline": data.get("pipeline"),
        "parameter_space": data.get("parameter_space") or {},
        "scorers": data.get("scorers") or [],
    }
    rows = dataset_rows(source)
    check_experiment(source, fields, project, columns_of(rows, project, fields["name"]))
    fields["sweep_defaults"] = sweep_defaults(source)  # after the space: a sweep plans over it
    return Parsed(fields, rows)


def columns_of(rows: list[Row] | None, project: Any, name: str) -> set[str] | None:
    """What the templates may read, as the API checks it: the rows imported, else (rows
    left out) those of the experiment an update replaces; None: no rows, nothing to check."""
    if rows:
        return {column for row in rows for column in row["input"]}
    existing = Experiment.objects.filter(project=project, name=name).first() if rows is None else None
    return existing.dataset_columns() if existing is not None else None


def _text_field(source: Source, key: str) -> str:
    value = source.data.get(key) or ""
    if not isinstance(value, str):
        raise source.error("must be text", (key,))
    return value


def endpoint_named(source: Source, project: Any, name: Any) -> Endpoint | None:
    if name in (None, ""):
        return None
    endpoint = Endpoint.objects.filter(project=project, name=name).first() if isinstance(name, str) else None
    if endpoint is None:
        known = ", ".join(Endpoint.objects.filter(project=project).values_list("name", flat=True)) or "(none)"
        raise source.error(f"no endpoint '{name}' in the project; its endpoints: {known}", ("endpoint",))
    return endpoint


def check_experiment(
    source: Source, fields: dict[str, Any], project: Any, columns: set[str] | None = None
) -> None:
    """validate_experiment(), as Experiment.clean() and the API run it (extra_params_for()
    refuses an endpoint the space or a judge names that the project lacks); `columns`: the
    dataset's variables, which every template variable must be among (None: no rows)."""
    try:
        space, scorers = fields["parameter_space"], fields["scorers"]
        extra_params = extra_params_for(project.pk, fields["endpoint"], space, scorers)
        validate_experiment(fields["pipeline"], space, scorers, columns, extra_params=extra_params)
    except ValidationError as exc:
        key, messages = next(iter(exc.message_dict.items()))
        raise source.error(messages[0], _path_of(key, messages[0], source.data), key) from None
    for key in ("pipeline", "parameter_space", "scorers"):
        if has_nul(fields[key]):
            raise source.error("text here may not contain NUL characters", (key,))
        problem = json_problem(fields[key])
        if problem:
            raise source.error(problem, (key,))


def _path_of(key: str, message: str, data: dict) -> Path_:
    """The most precise place a validation message points at."""
    numbered = re.match(r"(?:Scorer|stage) (\d+)", message)
    if numbered:
        return (key, int(numbered[1]) - 1)
    quoted = re.match(r"(?:Stage )?'([^']+)'( bundle (\d+))?", message)
    if quoted and key == "parameter_space" and quoted[1] in (data.get(key) or {}):
        return (key, quoted[1], int(quoted[3]) - 1) if quoted[3] else (key, quoted[1])
    if quoted and key == "pipeline":
        names = [s.get("name") if isinstance(s, dict) else None for s in data.get(key) or []]
        return (key, names.index(quoted[1])) if quoted[1] in names else (key,)
    return (key,)


def sweep_defaults(source: Source) -> dict[str, Any]:
    sweep = source.data.get("sweep") or {}
    if not isinstance(sweep, dict):
        raise source.error("must be an object of sweep settings", ("sweep",))
    for key in sweep:
        if key not in SWEEP_KEYS:
            raise source.error(f"unknown sweep setting; use {', '.join(sorted(SWEEP_KEYS))}", ("sweep", key))
    if "type" in sweep and sweep["type"] not in SWEEPS:
        raise source.error(f"unknown sweep type; known: {', '.join(sorted(SWEEPS))}", ("sweep", "type"))
    for key, (least, most) in SWEEP_LIMITS.items():  # the launch API's limits (engine/sweep.py)
        value = sweep.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise source.error("must be a whole number", ("sweep", key))
        if value < least or (most is not None and value > most):
            span = f"from {least} to {most:,}" if most is not None else f"{least} or more"
            raise source.error(f"must be a whole number {span}, not {value:,}", ("sweep", key))
    if not isinstance(sweep.get("options", {}), dict):
        raise source.error("must be an object", ("sweep", "options"))
    if sweep:
        check_launchable(source, sweep)
    return dict(sweep)


def check_launchable(source: Source, sweep: dict[str, Any]) -> None:
    """Defaults that could never launch (a grid over a range, a random sweep without
    n_samples, an option the type lacks) are refused now rather than in CI."""
    try:
        build_sweep(
            sweep.get("type", "grid"),
            source.data.get("parameter_space") or {},
            n_samples=sweep.get("n_samples"),
            seed=sweep.get("seed"),
            **(sweep.get("options") or {}),
        )
    except SweepError as exc:
        key = exc.field if exc.field in sweep else "type"
        raise source.error(str(exc), ("sweep", key)) from None


def dataset_rows(source: Source) -> list[Row] | None:
    """Inline rows, or the rows of a CSV / JSONL file next to the definition; None: leave them."""
    dataset = source.data.get("dataset")
    if dataset is None:
        return None
    if isinstance(dataset, str):
        return rows_from_file(source, dataset)
    if not isinstance(dataset, list):
        raise source.error("must be a list of {input, reference} rows or a CSV/JSONL path", ("dataset",))
    try:
        check_row_count(len(dataset))
    except DatasetImportError as exc:
        raise source.error(str(exc), ("dataset",)) from None
    return [inline_row(source, n, row) for n, row in enumerate(dataset)]


def rows_from_file(source: Source, name: str) -> list[Row]:
    if source.base_dir is None:
        raise source.error(
            "a file path needs a definition read from a file; send the rows inline", ("dataset",)
        )
    path = source.base_dir / name
    try:
        return read_dataset(path.read_bytes(), path.name)[0]
    except OSError as exc:
        raise source.error(f"cannot read {path}: {exc.strerror}", ("dataset",)) from None
    except DatasetImportError as exc:
        raise source.error(f"{path}: {exc}", ("dataset",)) from None


def inline_row(source: Source, n: int, row: Any) -> Row:
    if (
        not isinstance(row, dict)
        or not isinstance(row.get("input", {}), dict)
        or set(row) - {"input", "reference"}
    ):
        raise source.error("a row is {input: {...}, reference: text}", ("dataset", n))
    # The checks of a CSV/JSONL import (dataset_import): text reference, no NUL, JSON values, depth.
    reference, variables = reference_text(row.get("reference")), row.get("input") or {}
    if reference is None:
        raise source.error("reference must be text", ("dataset", n, "reference"))
    problem = row_problem(variables, reference)
    if problem:
        raise source.error(problem, ("dataset", n))
    return Row(input=variables, reference=reference)


# -- importing ----------------------------------------------------------------------
@dataclass
class Imported:
    experiment: Experiment
    created: bool
    notes: list[dict[str, Any]] = field(default_factory=list)  # what could not be mapped (promptfoo)


def import_definition(source: Source, project: Any, user: Any = None, update: bool = False) -> Imported:
    """Create the experiment, or with `update` replace the one of that name in the project."""
    parsed = parse(source, project)
    name = parsed.fields["name"]
    with transaction.atomic():
        existing = Experiment.objects.select_for_update().filter(project=project, name=name).first()
        if existing is not None and not update:
            raise source.error(
                f"the project already has an experiment '{name}'; import with update", ("name",)
            )
        if existing is None:
            experiment = Experiment.objects.create(project=project, created_by=user, **parsed.fields)
        else:
            experiment = _update(source, existing, parsed)
        if parsed.rows is not None:
            write_rows(experiment, parsed.rows)
    return Imported(experiment, existing is None)


def _update(source: Source, experiment: Experiment, parsed: Parsed) -> Experiment:
    changing = experiment.changed_sweep_inputs(parsed.fields)
    try:
        experiment.check_changeable(changing + (["its dataset"] if parsed.rows is not None else []))
    except ExperimentFrozen as exc:
        raise DefinitionConflict(str(exc)) from None
    for key, value in parsed.fields.items():
        setattr(experiment, key, value)
    experiment.save()
    return experiment
