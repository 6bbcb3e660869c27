"""Validation of an experiment's pipeline, parameter space and scorers.

Used by Experiment.clean(), the API serializers and the UI forms alike, so a
mistake is reported the same way everywhere: a ValidationError keyed by field,
with a message that names the stage, the field and the line.
"""

from collections.abc import Collection
from typing import Any

from django.core.exceptions import ValidationError

from endpoints.models import Endpoint
from engine.params import NOT_PARAMS, OBJECT_PARAMS, ParamError, check_param, check_params, check_range
from engine.scorers import validate_scorer
from engine.sweep import SweepError, is_linked, parse_space
from engine.templates import ENV as TEMPLATE_ENV
from engine.templates import check_limits, parse_template, template_variables
from engine.types import EngineError

STAGE_KEYS = {"name", "system", "user", "model", "params"}
RANGE_KEYS = {"min", "max", "log", "type"}
TEMPLATE_FIELDS = ("system", "user")
TEMPLATE_GLOBALS = frozenset(TEMPLATE_ENV.globals)  # range, dict, namespace, ...


def validate_pipeline(pipeline: Any, extra_params: Collection[str] = ()) -> None:
    """`extra_params`: the names the experiment's endpoints take beyond OpenAI's (engine/params.py)."""
    if not isinstance(pipeline, list) or not pipeline:
        raise ValidationError({"pipeline": "A pipeline needs at least one stage."})
    names: set[str] = set()
    for index, stage in enumerate(pipeline, start=1):
        where = f"stage {index}"
        if not isinstance(stage, dict):
            raise ValidationError({"pipeline": f"{where} must be an object with name and user."})
        unknown = set(stage) - STAGE_KEYS
        if unknown:
            raise ValidationError({"pipeline": f"{where} has unknown keys: {sorted(unknown)}."})
        name = stage.get("name")
        if not isinstance(name, str) or not name.strip() or "." in name:
            raise ValidationError({"pipeline": f"{where} needs a name without dots."})
        if name in names:
            raise ValidationError({"pipeline": f"Stage name '{name}' is used twice."})
        names.add(name)
        if not str(stage.get("user") or "").strip():
            raise ValidationError({"pipeline": f"Stage '{name}' needs a user template."})
        if not isinstance(stage.get("params", {}), dict):
            raise ValidationError({"pipeline": f"Stage '{name}' params must be an object."})
        try:
            check_params(stage.get("params") or {}, extra_params)
        except ParamError as exc:
            raise ValidationError({"pipeline": f"Stage '{name}' params: {exc}"}) from None
        for field in TEMPLATE_FIELDS:
            check_template(stage.get(field) or "", f"Stage '{name}' {field} template", "pipeline")


def check_template(source: Any, where: str, field: str) -> None:
    """Valid Jinja, and not over a render limit before any variable is known
    (`range(100000)` inside another such loop fails every row: say so now)."""
    if not isinstance(source, str):
        raise ValidationError({field: f"{where} must be text."})
    try:
        parse_template(source)
        check_limits(source, {"previous": "", "stages": {}})
    except EngineError as exc:
        raise ValidationError({field: f"{where}: {exc}"}) from None


def validate_parameter_space(space: Any, stage_names: set[str], extra_params: Collection[str] = ()) -> None:
    if not isinstance(space, dict):
        raise ValidationError({"parameter_space": "The parameter space must be an object."})
    for key, values in space.items():
        validate_space_key(key, stage_names)
        if is_linked(key, values):
            validate_bundles(key, values, stage_names, extra_params)
        elif isinstance(values, list):
            if not values:
                raise ValidationError({"parameter_space": f"'{key}' has an empty list of values."})
            if key.endswith((".system", ".user")):
                for n, variant in enumerate(values, start=1):
                    check_template(variant, f"'{key}' variant {n}", "parameter_space")
            check_values(key, values, extra_params)
        elif isinstance(values, dict):
            validate_range(key, values)
            check_values(key, values, extra_params)
        else:
            raise ValidationError(
                {"parameter_space": f"'{key}' must be a list of values or a range {{min, max}}."}
            )

    try:  # what only the whole space shows: a parameter set by a bundle and by another dimension
        parse_space(space)
    except SweepError as exc:
        raise ValidationError({"parameter_space": str(exc)}) from None


def param_of(key: str) -> str | None:
    """The LLM parameter a space key sets (`answer.temperature` -> temperature), or None
    for the keys the runner reads itself (model, endpoint, the templates)."""
    name = key.split(".", 1)[1] if "." in key else key
    return None if name in NOT_PARAMS else name


def check_values(key: str, values: list | dict, extra_params: Collection[str] = ()) -> None:
    """Each listed value, or both ends of a range, must be one the parameter takes."""
    name = param_of(key)
    if name is None:
        return
    try:
        if isinstance(values, dict):
            check_range(name, values, extra_params)
        for value in values if isinstance(values, list) else ():
            check_param(name, value, extra_params)
    except ParamError as exc:
        raise ValidationError({"parameter_space": where_in_space(key, str(exc))}) from None


def where_in_space(key: str, message: str) -> str:
    # Messages start with the key they are about: the definition loader finds its line so.
    return message if message.startswith(f"'{key}' ") else f"'{key}': {message}"


def validate_bundles(
    key: str, bundles: list[dict], stage_names: set[str], extra_params: Collection[str] = ()
) -> None:
    """A linked dimension: each bundle's keys are parameter names like any other."""
    for n, bundle in enumerate(bundles, start=1):
        if not bundle:
            raise ValidationError({"parameter_space": f"'{key}' bundle {n} is empty."})
        for name, value in bundle.items():
            validate_space_key(name, stage_names)
            if isinstance(value, (list, dict)) and name.rsplit(".", 1)[-1] not in OBJECT_PARAMS:
                raise ValidationError(
                    {
                        "parameter_space": f"'{key}' bundle {n}: '{name}' must be one value, not a list or object."
                    }
                )
            if name.endswith((".system", ".user")) or name in ("system", "user"):
                check_template(value, f"'{key}' bundle {n} '{name}'", "parameter_space")
            param = param_of(name)
            try:
                if param is not None:
                    check_param(param, value, extra_params)
            except ParamError as exc:
                raise ValidationError({"parameter_space": f"'{key}' bundle {n}: {exc}"}) from None


def validate_space_key(key: str, stage_names: set[str]) -> None:
    if not isinstance(key, str) or not key:
        raise ValidationError({"parameter_space": "Parameter names must be non-empty text."})
    if "." in key:
        stage = key.split(".", 1)[0]
        if stage not in stage_names:
            raise ValidationError(
                {"parameter_space": f"'{key}' names stage '{stage}', which the pipeline lacks."}
            )


def validate_range(key: str, spec: dict) -> None:
    unknown = set(spec) - RANGE_KEYS
    if unknown:
        raise ValidationError({"parameter_space": f"'{key}' range has unknown keys {sorted(unknown)}."})
    low, high = spec.get("min"), spec.get("max")
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
    if not numeric:
        raise ValidationError({"parameter_space": f"'{key}' range needs numeric min and max."})
    if low > high:
        raise ValidationError({"parameter_space": f"'{key}' range has min greater than max."})
    if spec.get("type", "float") not in ("int", "float"):
        raise ValidationError({"parameter_space": f"'{key}' range type must be int or float."})
    if spec.get("log") and low <= 0:
        raise ValidationError({"parameter_space": f"'{key}' log range needs min > 0."})


def validate_scorers(scorers: Any) -> None:
    if not isinstance(scorers, list):
        raise ValidationError({"scorers": "Scorers must be a list of {type, weight, config}."})
    names: set[str] = set()
    for index, scorer in enumerate(scorers, start=1):
        if not isinstance(scorer, dict) or not isinstance(scorer.get("type"), str):
            raise ValidationError({"scorers": f"Scorer {index} needs a type."})
        kind = scorer["type"]
        weight = scorer.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ValidationError({"scorers": f"Scorer {index} ({kind}): weight must be a number >= 0."})
        name = scorer.get("name") or kind
        if name in names:
            raise ValidationError({"scorers": f"Two scorers are named '{name}'; give one a name."})
        names.add(name)
        try:
            validate_scorer(kind, scorer.get("config") or {})
        except EngineError as exc:
            raise ValidationError({"scorers": f"Scorer {index} ({kind}): {exc}"}) from None


BUILT_INS = {"previous": "the previous stage's output", "stages": "stages.<name>, any earlier stage's output"}


def validate_variables(pipeline: list[dict], parameter_space: dict, columns: set[str]) -> None:
    """Every variable a prompt reads must exist: a dataset column or a built-in.
    A stage's output is {{ previous }} or {{ stages.<name> }}, never {{ <name> }}."""
    known = columns | set(BUILT_INS) | set(TEMPLATE_GLOBALS)
    sources = [
        (f"Stage '{s['name']}' {f} template", s.get(f) or "", "pipeline")
        for s in pipeline
        for f in TEMPLATE_FIELDS
    ]
    for key, values in parameter_space.items():
        if key.rsplit(".", 1)[-1] in TEMPLATE_FIELDS and isinstance(values, list):
            sources += [(f"'{key}' variant {n}", v, "parameter_space") for n, v in enumerate(values, start=1)]
    for where, source, field in sources:
        unknown = sorted(template_variables(source) - known)
        if unknown:
            raise ValidationError(
                {field: unknown_variables_message(where, unknown, columns, stage_names_of(pipeline))}
            )


def unknown_variables_message(where: str, unknown: list[str], columns: set[str], stages: set[str]) -> str:
    names = ", ".join("{{ " + name + " }}" for name in unknown)
    message = f"{where} uses {names}, which no dataset column, stage or built-in provides."
    for name in unknown:
        if name in stages:
            message += f" The output of stage '{name}' is {{{{ stages.{name} }}}} (or {{{{ previous }}}} in the next stage)."
    existing = [f"{c} (dataset column)" for c in sorted(columns)] + [
        f"{n} ({d})" for n, d in BUILT_INS.items()
    ]
    return f"{message} Variables that exist: {', '.join(existing)}."


def validate_experiment(
    pipeline: Any,
    parameter_space: Any,
    scorers: Any,
    columns: set[str] | None = None,
    extra_params: Collection[str] = (),
) -> None:
    """Validate all three, collecting one error per field. `columns`: the dataset's
    variables, to check the templates against (None: no dataset yet, nothing to check).
    `extra_params`: what extra_params_for() says the experiment's endpoints take."""
    errors: dict[str, list[str]] = {}
    for check in (
        lambda: validate_pipeline(pipeline, extra_params),
        lambda: validate_parameter_space(parameter_space, stage_names_of(pipeline), extra_params),
        lambda: validate_scorers(scorers),
    ):
        try:
            check()
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                errors.setdefault(field, []).extend(messages)
    if not errors and columns is not None:
        try:
            validate_variables(pipeline, parameter_space, columns)
        except ValidationError as exc:
            errors = exc.message_dict
    if errors:
        raise ValidationError(errors)


def stage_names_of(pipeline: Any) -> set[str]:
    if not isinstance(pipeline, list):
        return set()
    return {s.get("name") for s in pipeline if isinstance(s, dict) and isinstance(s.get("name"), str)}


def extra_params_for(
    project_id: int | None, endpoint: Endpoint | None, space: Any, scorers: Any = ()
) -> frozenset[str]:
    """The parameters beyond OpenAI's that an experiment may use: those its endpoint
    lists, and those of any endpoint its parameter space names. A launch checks each
    stage against the one endpoint it calls (engine.params.check_configs).

    Every endpoint the space or a judge (`scorers`) names must be one of the project's:
    a ValidationError names the dimension or the scorer otherwise. Every path that saves
    an experiment or launches a space asks this first, so each runs that check."""
    references = endpoint_references(space, scorers)
    names = {name for _, _, name in references}
    rows = (
        list(Endpoint.objects.filter(project_id=project_id, name__in=names)) if names and project_id else []
    )
    if project_id:
        check_endpoints_exist(project_id, references, {row.name for row in rows})
    in_space = set(endpoints_in_space(space))
    chosen = [row for row in rows if row.name in in_space] + ([endpoint] if endpoint is not None else [])
    return frozenset(name for row in chosen for name in row.extra_params or [])


def check_endpoints_exist(project_id: int, references: list[tuple[str, str, str]], found: set[str]) -> None:
    for field, where, name in references:
        if name not in found:
            known = Endpoint.objects.filter(project_id=project_id).values_list("name", flat=True)
            listed = ", ".join(known) or "(none)"
            raise ValidationError(
                {field: f"{where}: no endpoint '{name}' in the project; its endpoints: {listed}."}
            )


def endpoint_references(space: Any, scorers: Any = ()) -> list[tuple[str, str, str]]:
    """(field, where, name) of each endpoint the space can choose and each judge's endpoint."""
    found = [("parameter_space", where, name) for where, name in space_endpoints(space)]
    for index, scorer in enumerate(scorers if isinstance(scorers, list) else [], start=1):
        config = scorer.get("config") if isinstance(scorer, dict) else None
        name = config.get("endpoint") if isinstance(config, dict) else None
        if name:
            found.append(("scorers", f"Scorer {index} ({scorer.get('type')})", str(name)))
    return found


def space_endpoints(space: Any) -> list[tuple[str, str]]:
    """(where, name) of the endpoints a parameter space can choose: `endpoint` values, and
    bundles' `endpoint` keys. `where` starts with the key, as the definition loader reads it."""
    found: list[tuple[str, str]] = []
    for key, values in (space if isinstance(space, dict) else {}).items():
        if not isinstance(key, str):
            continue  # validate_space_key() refuses it
        if is_linked(key, values):
            found += [
                (f"'{key}' bundle {n}", str(v))
                for n, bundle in enumerate(values, start=1)
                for k, v in bundle.items()
                if _names_endpoint(k)
            ]
        elif _names_endpoint(key) and isinstance(values, list):
            found += [(f"'{key}'", str(v)) for v in values]
    return found


def endpoints_in_space(space: Any) -> list[str]:
    """The endpoint names a parameter space can choose."""
    return [name for _, name in space_endpoints(space)]


def _names_endpoint(key: Any) -> bool:
    return isinstance(key, str) and (key == "endpoint" or key.endswith(".endpoint"))
