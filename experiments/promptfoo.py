"""A promptfoo config (promptfooconfig.yaml) as a PromptLooper definition.

- `prompts` (text, `file://` references, chat-message JSON) become the stage's
  templates; several become a linked dimension `prompt` of {system, user} bundles.
- `providers` (`openai:chat:<model>`, `openai:<model>`, with `config.apiBaseUrl`,
  temperature, max_tokens, ...) become a linked dimension `provider` of
  {endpoint, model, params} bundles; endpoints are matched by base URL and created
  in the project, without a key, when missing.
- `tests` (inline, CSV or JSONL files, `defaultTest`) become dataset rows;
  assertions become scorers. An assertion whose value differs between tests
  (and every `similar`) reads it from a dataset column (`assert_<n>`) and skips
  rows without it.

What cannot be mapped is returned as a Note with its location, never dropped.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import PermissionDenied
from django.db import transaction

from endpoints.models import Endpoint
from endpoints.serializers import EndpointSerializer
from engine.templates import parse_template
from engine.types import EngineError
from experiments.definition import (
    NAME_LENGTH,
    DefinitionError,
    Imported,
    Source,
    import_definition,
    load_definition,
)

OPENAI_URL = "https://api.openai.com/v1"
STAGE = "main"
PARAMS = {"temperature", "max_tokens", "top_p", "frequency_penalty", "presence_penalty", "seed", "stop"}
PARAMS |= {"response_format"}
SIMILAR_THRESHOLD = 0.75  # promptfoo's default for `similar`
CASE_INSENSITIVE = {"icontains", "icontains-any", "icontains-all"}
CSV_EXPECT = re.compile(r"^(?P<type>[a-z-]+):\s*(?P<value>.*)$", re.DOTALL)
CSV_PREFIXES = {"grade": "llm-rubric", "fn": "javascript", "eval": "javascript", "file": "javascript"}


@dataclass
class Note:
    """Something of the config that was not imported, and where it was."""

    location: str
    item: str
    reason: str


@dataclass
class Converted:
    definition: dict[str, Any]
    notes: list[Note] = field(default_factory=list)
    endpoints: list[tuple[str, str]] = field(default_factory=list)  # (name, base URL) to create


# -- shapes -------------------------------------------------------------------------
def one_or_list(value: Any, where: str, what: str) -> list[Any]:
    """promptfoo takes one entry or a list of them; anything else is refused, naming where."""
    if value is None:
        return []
    if isinstance(value, str | dict):
        return [value]
    if not isinstance(value, list):
        raise DefinitionError(f"must be {what}, not {type_name(value)}", where)
    return value


def mapping(value: Any, where: str, what: str = "an object") -> dict:
    """An object where one is expected (None: empty); anything else is refused, naming where."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DefinitionError(f"must be {what}, not {type_name(value)}", where)
    return value


def listing(value: Any, where: str, what: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise DefinitionError(f"must be {what}, not {type_name(value)}", where)
    return value


def type_name(value: Any) -> str:
    names = {str: "text", dict: "an object", list: "a list", bool: "true/false", int: "a number"}
    return names.get(type(value), "a number" if isinstance(value, float) else type(value).__name__)


# -- prompts ------------------------------------------------------------------------
def read_prompts(config: dict, base: Path | None, notes: list[Note]) -> list[dict[str, str]]:
    raw = one_or_list(config.get("prompts"), "prompts", "a prompt or a list of prompts")
    prompts: list[dict[str, str]] = []
    for n, entry in enumerate(raw):
        where = f"prompts[{n}]"
        if isinstance(entry, dict):
            entry = entry.get("raw") or entry.get("id") or ""
        for text, at in prompt_texts(str(entry), base, where, notes):
            prompt = chat_prompt(text, at, notes)
            if prompt and templates_parse(prompt, at, notes):
                prompts.append(prompt)
    return prompts


def prompt_texts(entry: str, base: Path | None, where: str, notes: list[Note]) -> list[tuple[str, str]]:
    if not entry.startswith("file://"):
        return [(entry, where)]
    name = entry.removeprefix("file://")
    if name.endswith((".py", ".js", ".ts", ".mjs", ".cjs")) or ":" in name:
        notes.append(Note(where, entry, "prompt functions run code; write the prompt as a template"))
        return []
    text = read_relative(base, name, where)
    if name.endswith(".json"):
        return [(text, f"{where} ({name})")]
    parts = [p.strip() for p in re.split(r"^---$", text, flags=re.MULTILINE)]
    return [(p, f"{where} ({name} part {i + 1})") for i, p in enumerate(parts) if p]


def read_relative(base: Path | None, name: str, where: str) -> str:
    if base is None:
        raise DefinitionError(f"'{name}' is a file reference; import the config from a file", where)
    try:
        return (base / name).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError(f"cannot read {base / name}: {exc}", where) from None


def chat_prompt(text: str, where: str, notes: list[Note]) -> dict[str, str] | None:
    """A plain template, or a chat-message JSON list: its system and its one user message."""
    try:
        messages = json.loads(text) if text.lstrip().startswith("[") else None
    except json.JSONDecodeError:
        messages = None
    if not isinstance(messages, list):
        return {"user": text}
    system = [m.get("content", "") for m in messages if isinstance(m, dict) and m.get("role") == "system"]
    user = [m.get("content", "") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if len(user) != 1 or len(system) > 1 or len(system) + len(user) != len(messages):
        notes.append(Note(where, "chat prompt", "only one system and one user message map to a stage"))
        return None
    return {"system": system[0], "user": user[0]} if system else {"user": user[0]}


def templates_parse(prompt: dict[str, str], where: str, notes: list[Note]) -> bool:
    """Nunjucks is Jinja2's cousin: a filter Jinja2 lacks stops that prompt, and is reported."""
    for part, source in prompt.items():
        try:
            parse_template(source)
        except EngineError as exc:
            notes.append(Note(where, f"{part} template", f"Jinja2 cannot read it: {exc}"))
            return False
    return True


# -- providers ----------------------------------------------------------------------
def read_providers(config: dict, converted: Converted, project: Any) -> list[dict[str, Any]]:
    raw = one_or_list(config.get("providers"), "providers", "a provider or a list of providers")
    bundles = []
    for n, entry in enumerate(raw):
        where = f"providers[{n}]"
        if isinstance(entry, dict) and "id" not in entry and len(entry) == 1:  # {id: {config}}
            ((pid, rest),) = entry.items()
            entry = {"id": pid, **mapping(rest, f"{where}.{pid}", "the provider's settings (an object)")}
        if not isinstance(entry, str | dict):
            raise DefinitionError(f"must be a provider id or {{id, config}}, not {type_name(entry)}", where)
        spec = {"id": entry} if isinstance(entry, str) else dict(entry)
        bundle = provider_bundle(spec, where, converted, project)
        if bundle:
            bundles.append(bundle)
    return bundles


def provider_bundle(spec: dict, where: str, converted: Converted, project: Any) -> dict[str, Any] | None:
    pid = str(spec.get("id") or "")
    match = re.fullmatch(r"openai:(?:chat:)?([^:]+)", pid)
    if not match or match[1] in ("chat", "completion", "embedding", "embeddings"):  # no model named
        converted.notes.append(Note(where, pid, "only openai:chat:<model> and openai:<model> providers map"))
        return None
    for key in sorted(set(spec) - {"id", "label", "config"}, key=str):
        converted.notes.append(Note(f"{where}.{key}", key, "provider setting not imported"))
    options = dict(mapping(spec.get("config"), f"{where}.config", "an object of settings"))
    base_url, at = provider_url(options, where)
    bundle: dict[str, Any] = {
        "endpoint": endpoint_for(base_url, at, converted, project),
        "model": match[1],
    }
    for key, value in options.items():
        if key in PARAMS:
            bundle[key] = value
        else:
            reason = (
                "keys are not imported; set it on the endpoint" if "key" in key.lower() else "not imported"
            )
            converted.notes.append(Note(f"{where}.config.{key}", key, reason))
    return bundle


def provider_url(options: dict[str, Any], where: str) -> tuple[str, str]:
    """The base URL a provider calls, and where the config says it (for errors):
    `apiBaseUrl`, else `apiHost` (a host name: https://<host>/v1, as promptfoo calls it)."""
    if options.get("apiBaseUrl"):
        return str(options.pop("apiBaseUrl")).rstrip("/"), f"{where}.config.apiBaseUrl"
    host = str(options.pop("apiHost", "") or "").rstrip("/")
    if not host:
        return OPENAI_URL, where
    url = host if "://" in host else f"https://{host}/v1"
    return url, f"{where}.config.apiHost"


def endpoint_for(base_url: str, where: str, converted: Converted, project: Any) -> str:
    """The name of the project's endpoint at `base_url`, or of one to create: that one is
    checked as the endpoints API checks it (scheme, URL length, name), refused naming `where`."""
    for endpoint in Endpoint.objects.filter(project=project).order_by("id"):
        if endpoint.base_url.rstrip("/") == base_url:
            return endpoint.name
    for name, url in converted.endpoints:
        if url == base_url:
            return name
    try:
        host = urlsplit(base_url).hostname
    except ValueError:
        host = None
    name = unique_name((host or "endpoint")[:NAME_ROOM], project, converted)
    serializer = new_endpoint(name, base_url, project)
    if not serializer.is_valid():
        raise DefinitionError(f"no endpoint can be created for {base_url!r}: {refusal(serializer)}", where)
    converted.endpoints.append((name, base_url))
    return name


NAME_ROOM = 90  # of an endpoint name's 100 characters: room for a "-<n>" suffix


def new_endpoint(name: str, base_url: str, project: Any) -> EndpointSerializer:
    """An endpoint, without a key, through the endpoints API's serializer (the caller checked the role)."""
    return EndpointSerializer(data={"name": name, "base_url": base_url}, context={"project": project})


def refusal(serializer: EndpointSerializer) -> str:
    return "; ".join(f"{key}: {' '.join(map(str, errors))}" for key, errors in serializer.errors.items())


def unique_name(host: str, project: Any, converted: Converted) -> str:
    taken = set(Endpoint.objects.filter(project=project).values_list("name", flat=True))
    taken |= {name for name, _ in converted.endpoints}
    for n in itertools.count(1):
        name = host if n == 1 else f"{host}-{n}"
        if name not in taken:
            return name
    raise AssertionError("unreachable")


# -- tests --------------------------------------------------------------------------
@dataclass
class Test:
    vars: dict[str, Any]
    asserts: list[tuple[dict, str]]  # (assertion, location)


def read_tests(config: dict, base: Path | None, notes: list[Note]) -> list[Test]:
    default = config.get("defaultTest")
    if isinstance(default, str) and default.startswith("file://"):
        notes.append(Note("defaultTest", default, "not imported: write the default test in the config"))
        default = None
    default = mapping(default, "defaultTest", "an object of vars and assert")
    for key in sorted(set(default) - {"vars", "assert"}, key=str):
        notes.append(Note(f"defaultTest.{key}", key, "not imported"))
    default_asserts = listing(default.get("assert"), "defaultTest.assert", "a list of assertions")
    defaults = [(a, f"defaultTest.assert[{i}]") for i, a in enumerate(default_asserts)]
    default_vars = mapping(default.get("vars"), "defaultTest.vars", "an object of variables")
    tests = []
    for raw, where in test_entries(config.get("tests"), base, notes):
        for key in sorted(set(raw) - {"vars", "assert"}, key=str):
            notes.append(Note(f"{where}.{key}", key, "not imported"))
        asserts = listing(raw.get("assert"), f"{where}.assert", "a list of assertions")
        own = [(a, f"{where}.assert[{i}]") for i, a in enumerate(asserts)]
        variables = {**default_vars, **mapping(raw.get("vars"), f"{where}.vars", "an object of variables")}
        for combination in expand_vars(var_files(variables, base, f"{where}.vars", notes)):
            tests.append(Test(combination, own + defaults))
    return tests


def var_files(variables: dict[str, Any], base: Path | None, where: str, notes: list[Note]) -> dict[str, Any]:
    """A `file://` variable is the file's text, as promptfoo reads it (code files are not run)."""
    out = dict(variables)
    for name, value in variables.items():
        if not (isinstance(value, str) and value.startswith("file://")):
            continue
        path = value.removeprefix("file://")
        if base is None or path.endswith((".py", ".js", ".ts")):
            notes.append(Note(f"{where}.{name}", value, "kept as text: a file variable needs a config file"))
            continue
        out[name] = read_relative(base, path, f"{where}.{name}")
    return out


def test_entries(tests: Any, base: Path | None, notes: list[Note]) -> list[tuple[dict, str]]:
    if isinstance(tests, dict):
        raise DefinitionError("must be a list of tests or a tests file", "tests")
    tests = one_or_list(tests, "tests", "a list of tests or a tests file")
    entries: list[tuple[dict, str]] = []
    for n, entry in enumerate(tests):
        where = f"tests[{n}]"
        if isinstance(entry, dict):
            entries.append((entry, where))
        elif isinstance(entry, str):
            entries += tests_file(entry.removeprefix("file://"), base, where, notes)
        else:
            raise DefinitionError(f"a test is an object or a tests file, not {type_name(entry)}", where)
    return entries


def tests_file(name: str, base: Path | None, where: str, notes: list[Note]) -> list[tuple[dict, str]]:
    text = read_relative(base, name, where)
    if name.endswith(".csv"):
        try:
            return csv_tests(text, name)
        except csv.Error as exc:
            raise DefinitionError(f"{name} is not valid CSV: {exc}", where) from None
    if name.endswith(".jsonl"):
        lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
        return [(jsonl_test(line, f"{name} line {n}"), f"{name} line {n}") for n, line in lines]
    notes.append(Note(where, name, "tests files are read from CSV or JSONL"))
    return []


def jsonl_test(line: str, where: str) -> dict:
    try:
        test = json.loads(line, parse_constant=no_constant)
    except json.JSONDecodeError as exc:
        raise DefinitionError(f"not valid JSON ({exc.msg}, column {exc.colno})", where) from None
    except (ValueError, RecursionError) as exc:  # NaN / Infinity, nesting past Python's limit
        raise DefinitionError(f"not valid JSON ({exc or 'nested too deeply'})", where) from None
    return mapping(test, where, "a test object {vars, assert}")


def no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def csv_tests(text: str, name: str) -> list[tuple[dict, str]]:
    out = []
    for n, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        variables = {k: v for k, v in row.items() if k and not k.startswith("__")}
        asserts = [csv_assert(v) for k, v in row.items() if k and k.startswith("__expected") and v]
        extra = {k: v for k, v in row.items() if k and k.startswith("__") and not k.startswith("__expected")}
        test: dict[str, Any] = {"vars": variables, "assert": asserts}
        test.update({k.strip("_"): v for k, v in extra.items() if v})
        out.append((test, f"{name} line {n}"))
    return out


def csv_assert(text: str) -> dict[str, Any]:
    """`contains: Paris`, `grade: ...`, `is-json`, or a bare value (equals)."""
    if text in ("is-json", "is-valid-json"):
        return {"type": "is-json"}
    match = CSV_EXPECT.match(text)
    if not match:
        return {"type": "equals", "value": text}
    kind = CSV_PREFIXES.get(match["type"], match["type"])
    return {"type": kind, "value": match["value"]}


def expand_vars(variables: dict[str, Any]) -> list[dict[str, Any]]:
    """promptfoo runs a test once per value of each list-valued variable."""
    keys = [k for k, v in variables.items() if isinstance(v, list)]
    if not keys:
        return [variables]
    return [
        {**variables, **dict(zip(keys, combo, strict=True))}
        for combo in itertools.product(*(variables[k] for k in keys))
    ]


# -- assertions -> scorers ----------------------------------------------------------
KEYWORD_KINDS = {
    "contains",
    "contains-any",
    "contains-all",
    "equals",
    "starts-with",
    "regex",
} | CASE_INSENSITIVE
MATCHES = {"equals": "equals", "starts-with": "starts_with", "regex": "regex"}


def keyword_config(kind: str, value: Any) -> dict[str, Any] | None:
    negated, base = kind.startswith("not-"), kind.removeprefix("not-")
    values = value if isinstance(value, list) else [value]
    plain = all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in values)
    if base not in KEYWORD_KINDS or not plain or (base in MATCHES and isinstance(value, list)):
        return None
    # "any" of the keywords present; negated, "not all" present is "any" absent.
    any_of = base.endswith("-any") != (negated and base.endswith("-all"))
    return {
        "required_absent" if negated else "required_present": [str(v) for v in values],
        "case_sensitive": base not in CASE_INSENSITIVE,
        "match": MATCHES.get(base, "contains"),
        "mode": "any" if any_of else "all",
    }


def scorer_for(assertion: dict, value: Any) -> dict[str, Any] | None:
    """The scorer an assertion maps to (type and config), value as given; None if none does."""
    kind = str(assertion.get("type", ""))
    if kind == "is-json":
        if value in (None, ""):
            return {"type": "format", "config": {"check": "json"}}
        return (
            {"type": "format", "config": {"check": "structure", "schema": value}}
            if isinstance(value, dict)
            else None
        )
    if kind == "similar" and isinstance(value, str):
        field = re.fullmatch(r"\{\{\s*(assert_\d+)\s*\}\}", value)
        if field is None:  # the text to compare with is read from a column, never inline
            return {"type": "embedding", "config": {}}
        threshold = assertion.get("threshold", SIMILAR_THRESHOLD)
        return {"type": "embedding", "config": {"threshold": threshold, "reference_field": field[1]}}
    if kind == "llm-rubric" and isinstance(value, str):
        config: dict[str, Any] = {"prompt": rubric_prompt(value)}
        if "threshold" in assertion:
            config["threshold"] = assertion["threshold"]
        return {"type": "llm_judge", "config": config}
    config = keyword_config(kind, value)
    return {"type": "keyword", "config": config} if config else None


def rubric_prompt(rubric: str) -> str:
    field = re.fullmatch(r"\{\{\s*(assert_\d+)\s*\}\}", rubric)
    said = f"the rubric in the task input's field {field[1]}" if field else f"this rubric:\n{rubric}"
    return (
        f"Grade the answer against {said}\n\nTask input:\n{{{{ input }}}}\n\nAnswer:\n{{{{ output }}}}\n\n"
        "Rate from 1 (fails the rubric) to 10 (fully meets it). Reply with the number only."
    )


@dataclass
class Group:
    """One assertion shape across tests: one scorer."""

    kind: str
    weight: float
    threshold: Any
    values: dict[int, Any] = field(default_factory=dict)  # test index -> value
    where: str = ""


def group_asserts(tests: list[Test], notes: list[Note]) -> list[Group]:
    groups: dict[tuple, Group] = {}
    for t, test in enumerate(tests):
        seen: dict[str, int] = {}
        for assertion, where in test.asserts:
            kind = str(assertion.get("type", ""))
            if not mappable(assertion, where, notes):
                continue
            occurrence = seen[kind] = seen.get(kind, -1) + 1
            weight = float(assertion.get("weight", 1.0))
            key = (kind, weight, json.dumps(assertion.get("threshold")), occurrence)
            group = groups.setdefault(key, Group(kind, weight, assertion.get("threshold"), where=where))
            group.values[t] = assertion.get("value")
    return list(groups.values())


def mappable(assertion: Any, where: str, notes: list[Note]) -> bool:
    """Whether an assertion becomes a scorer; what of it does not is noted."""
    kind = str(assertion.get("type", "")) if isinstance(assertion, dict) else ""
    if not kind or scorer_for(assertion, assertion.get("value")) is None:
        notes.append(Note(where, kind or "assertion", "no PromptLooper scorer does this"))
        return False
    weight = assertion.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
        notes.append(Note(f"{where}.weight", kind, "a weight is a number, 0 or more"))
        return False
    for key in sorted(set(assertion) - {"type", "value", "weight", "threshold"}, key=str):
        notes.append(Note(f"{where}.{key}", key, "not imported"))
    if "threshold" in assertion and kind not in ("similar", "llm-rubric"):
        notes.append(Note(f"{where}.threshold", kind, "a threshold applies to similar and llm-rubric only"))
    return True


def scorers_and_rows(tests: list[Test], notes: list[Note]) -> tuple[list[dict], list[dict]]:
    rows = [{"input": dict(test.vars), "reference": ""} for test in tests]
    scorers: list[dict] = []
    for n, group in enumerate(group_asserts(tests, notes), start=1):
        scorer = group_scorer(group, n, rows, len(tests), notes)
        if scorer:
            scorer.update(name=f"{group.kind}-{n}", weight=group.weight)
            scorers.append(scorer)
    return scorers, rows


def group_scorer(group: Group, n: int, rows: list[dict], total: int, notes: list[Note]) -> dict | None:
    assertion = {
        "type": group.kind,
        **({"threshold": group.threshold} if group.threshold is not None else {}),
    }
    distinct = {json.dumps(v, sort_keys=True) for v in group.values.values()}
    if len(distinct) == 1 and group.kind != "similar" and len(group.values) == total:
        return scorer_for(assertion, next(iter(group.values.values())))
    placeholder = columns_for(group, n, rows)
    if placeholder is None:
        notes.append(
            Note(group.where, group.kind, "its value differs between tests in a way no column holds")
        )
        return None
    scorer = scorer_for(assertion, placeholder)
    if scorer and scorer["type"] == "keyword":
        scorer["config"]["skip_missing"] = True
    if scorer and scorer["type"] == "llm_judge":
        scorer["config"]["only_if_field"] = f"assert_{n}"
    return scorer


def columns_for(group: Group, n: int, rows: list[dict]) -> str | list[str] | None:
    """Put each test's value in dataset columns; the placeholder the scorer reads them by.
    Text goes in `assert_<n>`; lists of one length element-wise in `assert_<n>_<k>`."""
    values = list(group.values.values())
    if all(isinstance(v, str) for v in values):
        for t, value in group.values.items():
            rows[t]["input"][f"assert_{n}"] = value
        return "{{ assert_" + str(n) + " }}"
    lengths = {len(v) if isinstance(v, list) else -1 for v in values}
    if len(lengths) != 1 or -1 in lengths or not all(isinstance(x, str) for v in values for x in v):
        return None
    for t, value in group.values.items():
        rows[t]["input"].update({f"assert_{n}_{k}": x for k, x in enumerate(value, start=1)})
    return ["{{ assert_" + f"{n}_{k}" + " }}" for k in range(1, lengths.pop() + 1)]


# -- the whole config ---------------------------------------------------------------
def convert(config: Any, project: Any, base: Path | None = None, name: str = "") -> Converted:
    if not isinstance(config, dict):
        raise DefinitionError("a promptfoo config is an object with prompts, providers and tests")
    converted = Converted({})
    notes = converted.notes
    for key in sorted(set(config) - {"description", "prompts", "providers", "tests", "defaultTest"}, key=str):
        notes.append(Note(key, key, "not imported"))
    prompts = read_prompts(config, base, notes)
    if not prompts:
        raise DefinitionError("no prompt could be imported", "prompts")
    providers = read_providers(config, converted, project)
    if not providers:
        raise DefinitionError("no provider could be imported", "providers")
    tests = read_tests(config, base, notes)
    scorers, rows = scorers_and_rows(tests, notes)
    space: dict[str, Any] = {"provider": providers}
    if len(prompts) > 1:
        space["prompt"] = prompts
    converted.definition = {
        "name": experiment_name(config.get("description"), name),
        "endpoint": providers[0]["endpoint"],
        "pipeline": [{"name": STAGE, **prompts[0]}],
        "dataset": rows or [{"input": {}, "reference": ""}],
        "parameter_space": space,
        "scorers": scorers,
    }
    return converted


def field_path(field: str) -> tuple[str | int, ...]:
    """`tests[0].vars` as the path (tests, 0, vars) its line is looked up by."""
    return tuple(int(n) if n else key for n, key in re.findall(r"\[(\d+)\]|([^.\[\]]+)", field))


def experiment_name(description: Any, stem: str) -> str:
    """The config's description (its first line, cut to the 200 characters a name has), else the file's name."""
    first = str(description or "").strip().split("\n", 1)[0].strip()
    return (first or stem or "promptfoo import")[:NAME_LENGTH].strip()


def import_promptfoo(
    text: str,
    project: Any,
    user: Any = None,
    file: str = "",
    base: Path | None = None,
    update: bool = False,
    create_endpoints: bool = True,
) -> Imported:
    """`create_endpoints=False` (a caller below admin) refuses a config that needs new endpoints."""
    source = load_definition(text, file)
    stem = Path(file).stem if file else ""
    with transaction.atomic():
        try:
            converted = convert(source.data, project, base, stem)
        except DefinitionError as exc:
            line = exc.line or source.line(field_path(exc.field))
            raise DefinitionError(exc.message, exc.field, line, file) from None
        if converted.endpoints and not create_endpoints:
            urls = ", ".join(url for _, url in converted.endpoints)
            raise PermissionDenied(f"The config needs new endpoints ({urls}); that takes the admin role.")
        for name, url in converted.endpoints:
            serializer = new_endpoint(name, url, project)
            if not serializer.is_valid():  # taken meanwhile
                message = f"no endpoint can be created for {url!r}: {refusal(serializer)}"
                raise DefinitionError(message, "providers", None, file)
            serializer.save()
        imported = import_definition(Source(converted.definition, file), project, user, update)
    imported.notes = [asdict(note) for note in converted.notes]
    return imported
