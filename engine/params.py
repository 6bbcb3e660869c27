"""The LLM parameters a request may carry, with their types and ranges.

Checked wherever parameters enter (the API, the editor, definition files, a
sweep's launch), so that a typo or a value out of range is refused before any
call is made, not answered by the server with a 400 on every call of a sweep.

Names the OpenAI chat API defines are in PARAMS. A server that accepts more
(vLLM, llama.cpp, Ollama: top_k, min_p, ...) lists those names on its endpoint
(`extra_params`); the common ones have ranges in EXTRA_PARAMS, any other listed
name takes any value. Config keys that are not LLM parameters (`model`,
`endpoint`, the `system` / `user` templates, `<stage>.` prefixes) are the
runner's and never reach this module.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.types import EndpointConfig, EngineError, Stage

# Stage params never set these: the runner does (`messages` from the templates, `model` from the stage).
SET_BY_RUNNER = {
    "model": "set the stage's model (or sweep 'model') instead",
    "messages": "the messages are built from the stage's system and user templates",
    "extra_body": "an OpenAI SDK option, not a request field: give its keys as parameters "
    "and list them among the endpoint's extra parameters",
}
NOT_PARAMS = frozenset({"model", "endpoint", "system", "user"})  # config keys the runner reads itself
MAX_STOP = 4
EXTRA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_EXTRAS = 100
MAX_EXACT_NUMBER = 10**300  # beyond it a JSON number is no parameter value (and overflows a float)


class ParamError(EngineError):
    """An LLM parameter that no request may carry; `field` is where it was given."""

    def __init__(self, message: str, field: str = "parameter_space"):
        super().__init__(message, permanent=True)
        self.field = field


@dataclass(frozen=True)
class Rule:
    """What one parameter accepts. `check` returns why a value is refused, or None."""

    describe: str  # e.g. "a number from 0 to 2", for messages
    check: Callable[[Any], str | None]
    numeric: bool = False  # a sweep may give a range {min, max} of it
    integer: bool = False  # ...whose type must then be "int"
    takes_object: bool = False  # an object value is the value, not a linked bundle of parameters


def is_number(value: Any) -> bool:
    """A finite JSON number: not a bool, not NaN or infinity, and (isfinite overflows
    on a 400-digit integer) not an integer too large for a float."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) <= MAX_EXACT_NUMBER
    return isinstance(value, float) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    # Not 3.0: OpenAI refuses a decimal number where it expects an integer.
    return isinstance(value, int) and not isinstance(value, bool)


def _bounds(low: float | None, high: float | None, above: bool = False) -> str:
    if low is not None and high is not None:
        return f" from {low:g} to {high:g}"
    if low is not None:
        return f" above {low:g}" if above else f" of {low:g} or more"
    return ""


def number(low: float | None = None, high: float | None = None, above: bool = False) -> Rule:
    describe = "a number" + _bounds(low, high, above)

    def check(value: Any) -> str | None:
        inside = is_number(value) and (low is None or value > low or (not above and value == low))
        return None if inside and (high is None or value <= high) else f"must be {describe}"

    return Rule(describe, check, numeric=True)


def integer(low: int | None = None, high: int | None = None, above: bool = False) -> Rule:
    describe = "a whole number" + _bounds(low, high, above)
    as_number = number(low, high, above)

    def check(value: Any) -> str | None:
        return None if _is_int(value) and as_number.check(value) is None else f"must be {describe}"

    return Rule(describe, check, numeric=True, integer=True)


def boolean() -> Rule:
    return Rule("true or false", lambda v: None if isinstance(v, bool) else "must be true or false")


def text() -> Rule:
    return Rule("text", lambda v: None if isinstance(v, str) else "must be text")


def choice(*values: Any) -> Rule:
    shown = ", ".join(repr(v) if not isinstance(v, str) else v for v in values)
    return Rule(
        f"one of {shown}",
        lambda v: None if v in values and not isinstance(v, bool) else f"must be one of {shown}",
    )


def an_object() -> Rule:
    return Rule(
        "an object", lambda v: None if isinstance(v, dict) else "must be an object", takes_object=True
    )


def _stop(value: Any) -> str | None:
    if isinstance(value, str):
        return None
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        return "must be text or a list of texts"
    return None if len(value) <= MAX_STOP else f"takes at most {MAX_STOP} stop sequences, got {len(value)}"


def _logit_bias(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "must be an object of token id -> bias"
    for token, bias in value.items():
        if not str(token).isdigit():
            return f"key {token!r} is not a token id (a whole number)"
        if not is_number(bias) or not -100 <= bias <= 100:
            return f"bias of token {token} must be a number from -100 to 100, got {bias!r}"
    return None


RESPONSE_TYPES = ("text", "json_object", "json_schema")


def _response_format(value: Any) -> str | None:
    if not isinstance(value, dict) or value.get("type") not in RESPONSE_TYPES:
        return 'must be an object whose "type" is one of ' + ", ".join(RESPONSE_TYPES)
    if value["type"] == "json_schema" and not isinstance(value.get("json_schema"), dict):
        return 'of type json_schema needs a "json_schema" object (with name and schema)'
    return None


def _tool_choice(value: Any) -> str | None:
    if value in ("none", "auto", "required") or isinstance(value, dict):
        return None
    return "must be none, auto, required or an object naming a tool"


def _n(value: Any) -> str | None:
    if _is_int(value) and value == 1:
        return None
    return "must be 1: n > 1 is refused, samples are the sweep's `repeats` (each its own cached call)"


def _list_of(kind: type, what: str) -> Rule:
    def check(value: Any) -> str | None:
        ok = isinstance(value, list) and all(isinstance(v, kind) and not isinstance(v, bool) for v in value)
        return None if ok else f"must be a list of {what}"

    return Rule(f"a list of {what}", check)


# The OpenAI chat-completion request, less what the runner sets itself.
PARAMS: dict[str, Rule] = {
    "temperature": number(0, 2),
    "top_p": number(0, 1),
    "max_tokens": integer(0, above=True),
    "max_completion_tokens": integer(0, above=True),
    "presence_penalty": number(-2, 2),
    "frequency_penalty": number(-2, 2),
    "seed": integer(),
    "stop": Rule(f"text or a list of up to {MAX_STOP} texts", _stop),
    "logit_bias": Rule("an object of token id -> -100..100", _logit_bias, takes_object=True),
    "response_format": Rule(
        "an object with type text, json_object or json_schema", _response_format, takes_object=True
    ),
    "reasoning_effort": choice("none", "minimal", "low", "medium", "high", "xhigh"),
    "verbosity": choice("low", "medium", "high"),
    "logprobs": boolean(),
    "top_logprobs": integer(0, 20),
    "n": Rule("1", _n, numeric=True, integer=True),
    "user": text(),
    "safety_identifier": text(),
    "prompt_cache_key": text(),
    "service_tier": choice("auto", "default", "flex", "scale", "priority"),
    "parallel_tool_calls": boolean(),
    "tools": _list_of(dict, "tool objects"),
    "tool_choice": Rule("none, auto, required or an object", _tool_choice, takes_object=True),
    "stream": boolean(),
    "stream_options": an_object(),
    "store": boolean(),
    "metadata": an_object(),
    "modalities": _list_of(str, "texts"),
    "audio": an_object(),
    "prediction": an_object(),
    "web_search_options": an_object(),
}
# Their values in a parameter space are objects that are not linked bundles (engine/sweep.py).
OBJECT_PARAMS = frozenset(name for name, rule in PARAMS.items() if rule.takes_object)

# Parameters some servers accept beyond OpenAI's, with their ranges; they count
# only for an endpoint that lists them.
EXTRA_PARAMS: dict[str, Rule] = {
    "top_k": integer(-1),  # vLLM: -1 = off; llama.cpp, Ollama: 0 = off
    "min_p": number(0, 1),
    "typical_p": number(0, 1),
    "tfs_z": number(0),
    "repeat_penalty": number(0),  # llama.cpp, Ollama
    "repetition_penalty": number(0, above=True),  # vLLM
    "repeat_last_n": integer(-1),
    "mirostat": choice(0, 1, 2),
    "mirostat_tau": number(0),
    "mirostat_eta": number(0),
    "min_tokens": integer(0),
    "num_ctx": integer(0, above=True),
    "num_predict": integer(-2),
    "length_penalty": number(),
    "xtc_probability": number(0, 1),
    "xtc_threshold": number(0, 1),
    "dry_multiplier": number(0),
    "ignore_eos": boolean(),
    "skip_special_tokens": boolean(),
    "cache_prompt": boolean(),
    "stop_token_ids": _list_of(int, "token ids"),
}

ANY_VALUE = Rule("any value", lambda v: None)


def extra_name_problem(names: Any) -> str | None:
    """Why `names` cannot be an endpoint's list of extra parameters, or None."""
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return "give a list of parameter names, e.g. top_k, min_p"
    if len(names) > MAX_EXTRAS:
        return f"at most {MAX_EXTRAS} names"
    for name in names:
        if not EXTRA_NAME.match(name):
            return f"'{name}' is not a parameter name (letters, digits and _, not starting with a digit)"
        if name in PARAMS:
            return f"'{name}' is an OpenAI parameter, accepted and checked already; leave it out"
        if name in NOT_PARAMS or name in SET_BY_RUNNER:
            return f"'{name}' is not an LLM parameter PromptLooper passes on"
    return None


def rule_for(name: str, extras: Collection[str] = ()) -> Rule:
    """The rule of `name`; ParamError (with the closest known name) if no request may carry it."""
    if name in PARAMS:
        return PARAMS[name]
    if name in extras:
        return EXTRA_PARAMS.get(name, ANY_VALUE)
    raise ParamError(unknown_message(name, extras))


def unknown_message(name: str, extras: Collection[str] = ()) -> str:
    if name in SET_BY_RUNNER:
        return f"'{name}' is not a parameter to set: {SET_BY_RUNNER[name]}"
    known = [*PARAMS, *extras]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f" — did you mean {close[0]}?" if close else ""
    if name in EXTRA_PARAMS:
        return (
            f"unknown parameter '{name}'{hint} ('{name}' is a parameter of servers such as vLLM, "
            "llama.cpp or Ollama: list it among the endpoint's extra parameters if the server accepts it)"
        )
    return (
        f"unknown parameter '{name}'{hint} (not an OpenAI chat parameter; a server's own "
        "parameter must be listed among its endpoint's extra parameters)"
    )


def check_param(name: str, value: Any, extras: Collection[str] = ()) -> None:
    """ParamError if `value` is not one `name` takes; None always passes (it removes the parameter)."""
    rule = rule_for(name, extras)
    problem = None if value is None else rule.check(value)
    if problem:
        got = "" if "got" in problem else f", got {_short(value)}"
        raise ParamError(f"'{name}' {problem}{got}")


def _short(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def check_params(params: Mapping[str, Any], extras: Collection[str] = ()) -> None:
    for name, value in params.items():
        check_param(name, value, extras)


def check_range(name: str, spec: Mapping[str, Any], extras: Collection[str] = ()) -> None:
    """A sweep range {min, max, type?} over `name`: numeric, inside its bounds, whole if it must be."""
    rule = rule_for(name, extras)
    if rule is ANY_VALUE:
        return
    if not rule.numeric:
        raise ParamError(f"'{name}' takes {rule.describe}, not a range; list the values")
    if rule.integer and spec.get("type") != "int":
        raise ParamError(f'\'{name}\' is a whole number: give the range "type": "int"')
    for end in ("min", "max"):
        problem = rule.check(spec[end])
        if problem:
            raise ParamError(f"'{name}' range {end} {spec[end]!r}: '{name}' {problem}")


# -- a sweep's configurations against the endpoints they call ----------------------


def check_configs(
    configs: Iterable[Mapping[str, Any]],
    stages: list[Stage],
    endpoint: EndpointConfig | None,
    endpoints: Mapping[str, EndpointConfig],
) -> None:
    """Every parameter each stage sends must be one its endpoint takes: an extra
    parameter counts only where the stage's endpoint (the experiment's, or the one
    the config names) lists it. Values were checked with the space; names here."""
    seen: set[tuple[str, str, frozenset[str]]] = set()
    for config in configs:
        for stage in stages:
            target, names = _stage_call(stage, config, endpoint, endpoints)
            key = (stage.name, target.name if target else "", names)
            if key not in seen:
                seen.add(key)
                _check_names(stage, config, target, names)


def _stage_call(
    stage: Stage,
    config: Mapping[str, Any],
    endpoint: EndpointConfig | None,
    endpoints: Mapping[str, EndpointConfig],
) -> tuple[EndpointConfig | None, frozenset[str]]:
    """The endpoint the stage calls under `config`, and the parameter names it sends (as plan_stages)."""
    own = {k[len(stage.name) + 1 :]: v for k, v in config.items() if k.startswith(stage.name + ".")}
    common = {k: v for k, v in config.items() if "." not in k}
    merged = {**stage.params, **common, **own}
    names = frozenset(k for k, v in merged.items() if k not in NOT_PARAMS and v is not None)
    named = own.get("endpoint", common.get("endpoint"))
    if named is not None and (endpoint is None or named != endpoint.name):
        return endpoints.get(str(named)), names
    return endpoint, names


def _check_names(
    stage: Stage, config: Mapping[str, Any], target: EndpointConfig | None, names: frozenset[str]
) -> None:
    extras = target.extra_params if target else ()
    for name in sorted(names):
        if name in PARAMS or name in extras:
            continue
        given = name in stage.params and name not in config and f"{stage.name}.{name}" not in config
        where = f"Stage '{stage.name}' params" if given else f"'{_config_key(stage, name, config)}'"
        at = f" (stage '{stage.name}' calls endpoint '{target.name}')" if target else ""
        raise ParamError(
            f"{where}: {unknown_message(name, extras)}{at}", "pipeline" if given else "parameter_space"
        )


def _config_key(stage: Stage, name: str, config: Mapping[str, Any]) -> str:
    own = f"{stage.name}.{name}"
    return own if own in config else name
