"""The scorer plug-in base class and registry.

A scorer is one file: a `BaseScorer` subclass with a `type`, a nested
`Options` dataclass and `evaluate()` (or `score_async()` when it calls a
model), decorated with `@register_scorer`, plus one import line in
`engine/scorers/__init__.py`.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar, Literal, TypeVar, Union

from engine.types import ScoreContext, ScoreOutcome, ScorerError, ScorerSpec

# Floating-point noise (a cosine of 1.0000000002) is clamped; anything further
# out means the scorer is broken, and a silent clamp would hide that.
_TOLERANCE = 1e-6


class ScorerCallError(ScorerError):
    """A scorer that spent tokens on a model call could not turn the answer into
    a score. The tokens still count toward the sweep budget."""

    def __init__(self, message: str, tokens_in: int = 0, tokens_out: int = 0, details: dict | None = None):
        super().__init__(message, permanent=True)
        self.tokens_in = tokens_in
        self.tokens_out = tokens_out
        self.details = details or {}


@dataclasses.dataclass(frozen=True)
class ModelCalls:
    """What scoring one output asks of a model, for a sweep's estimate before launch."""

    prompt: str  # a template over variables(item input, reference), the output left empty
    calls: int  # per scored output (a sampled judge asks more than once)
    max_tokens: int  # the most each call answers
    variables: Callable[[dict[str, Any], str], dict[str, Any]]


class BaseScorer:
    type: ClassVar[str] = ""
    description: ClassVar[str] = ""
    costs_tokens: ClassVar[bool] = False  # True when scoring may call a model

    @dataclasses.dataclass
    class Options:
        """No options; subclasses declare theirs as typed dataclass fields."""

    def __init__(self, config: dict[str, Any] | None = None, name: str = ""):
        self.name = name or self.type
        self.options = parse_options(self.type, self.Options, config or {})
        self.check_options()

    @classmethod
    def spends_tokens(cls, config: dict[str, Any], endpoint: Any = None) -> bool:
        """Whether this scorer, so configured, calls a model that may bill for it
        (`endpoint`: the experiment's, or None)."""
        return cls.costs_tokens

    @classmethod
    def model_calls(cls, config: dict[str, Any]) -> ModelCalls | None:
        """What this scorer, so configured, asks of a model per output; None when it
        calls none (it costs no tokens). Read from the raw config: an estimate builds no scorer."""
        return None

    @property
    def label(self) -> str:
        if self.name and self.name != self.type:
            return f"{self.type} scorer '{self.name}'"
        return f"{self.type} scorer"

    def config_error(self, message: str) -> ScorerError:
        return ScorerError(f"{self.label}: {message}", permanent=True)

    def check_options(self) -> None:
        """Cross-option checks that types alone cannot express; raise config_error()."""

    def outcome(
        self,
        value: float | None,
        details: dict[str, Any] | None = None,
        tokens_in: int = 0,
        tokens_out: int = 0,
        spread: float | None = None,
    ) -> ScoreOutcome:
        checked = None if value is None else checked_score(value, self.label)
        return ScoreOutcome(checked, details or {}, tokens_in, tokens_out, spread)

    def evaluate(self, input_data: dict, output: str, context: ScoreContext) -> ScoreOutcome:
        """The sync score with details. Override this, or only score() for a scorer
        without details, or only score_async() for one that awaits a model."""
        cls = type(self)
        if cls.score is not BaseScorer.score:
            return self.outcome(self.score(input_data, output, context))
        if cls.score_async is not BaseScorer.score_async:
            return run_sync(self.score_async(input_data, output, context), self.label)
        raise NotImplementedError(f"{cls.__name__} must override evaluate(), score() or score_async()")

    def score(self, input_data: dict, output: str, context: ScoreContext) -> float:
        value = self.evaluate(input_data, output, context).value
        if value is None:
            raise ScorerError(f"{self.label} has no score for this item yet", permanent=False)
        return checked_score(value, self.label)

    async def score_async(self, input_data: dict, output: str, context: ScoreContext) -> ScoreOutcome:
        outcome = self.evaluate(input_data, output, context)
        return self.outcome(
            outcome.value, outcome.details, outcome.tokens_in, outcome.tokens_out, outcome.spread
        )


SCORERS: dict[str, type[BaseScorer]] = {}

S = TypeVar("S", bound=type[BaseScorer])


def register_scorer(cls: S) -> S:
    if not cls.type:
        raise ValueError(f"{cls.__name__} needs a `type` class attribute to be registered")
    if cls.type in SCORERS and SCORERS[cls.type] is not cls:
        raise ValueError(f"scorer type '{cls.type}' is already registered by {SCORERS[cls.type]}")
    SCORERS[cls.type] = cls
    return cls


def scorer_class(scorer_type: str) -> type[BaseScorer]:
    try:
        return SCORERS[scorer_type]
    except KeyError:
        known = ", ".join(sorted(SCORERS)) or "(none registered)"
        raise ScorerError(
            f"unknown scorer type '{scorer_type}'; use one of: {known}", permanent=True
        ) from None


def build_scorer(spec: ScorerSpec) -> BaseScorer:
    return scorer_class(spec.type)(spec.config, name=spec.name)


def validate_scorer(type: str, config: dict[str, Any]) -> None:
    """Raise ScorerError if `config` is not valid for a scorer of `type`."""
    scorer_class(type)(config)


def checked_score(value: Any, who: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ScorerError(f"{who} produced {value!r}, not a number; this is a bug in the scorer")
    if not -_TOLERANCE <= value <= 1 + _TOLERANCE:
        raise ScorerError(f"{who} produced {value}, outside [0, 1]; this is a bug in the scorer")
    return min(1.0, max(0.0, float(value)))


def run_sync(coro: Coroutine[Any, Any, ScoreOutcome], who: str) -> ScoreOutcome:
    """Run an async scorer from sync code; inside an event loop that would block it."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise ScorerError(
        f"{who} calls a model and cannot score synchronously inside a running event loop; "
        "use `await scorer.score_async(...)` instead"
    )


# --- options -----------------------------------------------------------------

OptionsT = TypeVar("OptionsT")


def parse_options(scorer_type: str, options_cls: type[OptionsT], config: dict[str, Any]) -> OptionsT:
    """Build `options_cls` from a config dict, rejecting unknown keys and wrong types."""
    who = f"{scorer_type} scorer"
    if not isinstance(config, dict):
        raise ScorerError(f"{who}: config must be an object, got {type(config).__name__}", True)
    fields = {f.name: f for f in dataclasses.fields(options_cls)}  # type: ignore[arg-type]
    hints = _type_hints(options_cls)
    allowed = ", ".join(fields) or "(none)"
    for key, value in config.items():
        if key not in fields:
            raise ScorerError(f"{who}: unknown option '{key}'; allowed options: {allowed}", True)
        if not _matches(value, hints[key]):
            raise ScorerError(
                f"{who}: option '{key}' must be {describe_type(hints[key])}, "
                f"got {type(value).__name__} {value!r}",
                True,
            )
    for key, field in fields.items():
        if _is_required(field) and key not in config:
            raise ScorerError(f"{who}: option '{key}' is required ({describe_type(hints[key])})", True)
    # A copy, so later edits to the caller's dict or lists cannot change a built scorer.
    return options_cls(**copy.deepcopy(config))


@functools.cache
def _type_hints(options_cls: type) -> dict[str, Any]:
    # Every run builds its scorers: resolving the annotations each time cost more than scoring.
    return typing.get_type_hints(options_cls)


def _is_required(field: dataclasses.Field) -> bool:
    no_default = field.default is dataclasses.MISSING
    return no_default and field.default_factory is dataclasses.MISSING


def _matches(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if origin is Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    return isinstance(value, hint)


def describe_type(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(describe_type(arg) for arg in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is list:
        return f"a list of {describe_type(args[0])}"
    if origin is dict:
        return "an object"
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, "null" if hint is type(None) else getattr(hint, "__name__", str(hint)))


# --- the options as form fields ----------------------------------------------------


class OptionField(typing.TypedDict):
    """One option of a scorer, described for a form that edits it."""

    name: str
    kind: str  # bool | int | float | text | lines (a list of strings) | choice | json
    choices: list[Any]  # kind "choice": the allowed values
    default: Any  # None where the option has no default (required) or defaults to None
    required: bool
    optional: bool  # None is allowed: a blank field leaves the option out
    help: str  # the type as the validation error would say it


def option_fields(options_cls: type) -> list[OptionField]:
    """The typed Options of a scorer as form fields, in declaration order."""
    hints = _type_hints(options_cls)
    fields = []
    for field in dataclasses.fields(options_cls):
        hint = hints[field.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = typing.get_origin(hint) in (Union, types.UnionType) and len(args) < len(
            typing.get_args(hint)
        )
        base = args[0] if optional and len(args) == 1 else hint
        kind, choices = _kind(base)
        fields.append(
            OptionField(
                name=field.name,
                kind=kind,
                choices=choices,
                default=_default(field),
                required=_is_required(field),
                optional=optional,
                help=describe_type(hint),
            )
        )
    return fields


def _kind(hint: Any) -> tuple[str, list[Any]]:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "choice", list(typing.get_args(hint))
    if origin is list and typing.get_args(hint) == (str,):
        return "lines", []
    simple = {bool: "bool", int: "int", float: "float", str: "text"}
    return simple.get(hint, "json"), []


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None
