"""Sweeps: which configurations to run, in what order, and what they will cost.

A parameter space maps each key to a list of values or to a range
`{min, max, log?, type?: int|float}` (see experiments/validation.py); a
configuration is a plain dict over those keys, applied to the stages by
`engine.runner.plan_stages`. Grid and random sweeps plan everything up front;
a guided sweep proposes rounds from the scores of the runs that finished; a
racing sweep plans its candidates up front and drops the clear losers between
rounds (engine/racing.py).

Decisions worth knowing:
* A grid refuses ranges: list the values, or use a random or guided sweep.
* Float samples are rounded to 4 significant digits, so configs read well and
  hash the same every time; int ranges are inclusive.
* `seed=None` means seed 0: a sweep is reproducible unless asked otherwise.
* Call `check_size()` before `initial_configs()`: sizes are computed, grids are listed.
* A list of objects is a linked dimension: each object is a bundle of parameters
  that vary together (`{"provider": [{"endpoint": "a", "model": "m"}, ...]}`),
  crossed with the other dimensions like any list. Configurations hold the
  bundle's keys, not the dimension's name, so the cache key, the leaderboard and
  the exports see flat parameters. Object-valued LLM parameters (OBJECT_PARAMS)
  stay plain lists of values.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, TypedDict, TypeVar

from engine import racing
from engine.adapters import ADAPTERS, BaseAdapter
from engine.cache import compute_config_hash
from engine.params import OBJECT_PARAMS, is_number
from engine.runner import ENDPOINT_KEY, MODEL_KEY, StagePlan, plan_stages
from engine.scorers import SCORERS, ModelCalls
from engine.templates import render, template_variables
from engine.types import EndpointConfig, EngineError, Item, ScorerSpec, Stage, TemplateError

Config = dict[str, Any]

RANGE_KEYS = frozenset({"min", "max", "log", "type"})
SIGNIFICANT_DIGITS = 4
STEP = 0.15  # a range neighbour's gaussian step, as a share of the range (log-space for log ranges)
MAX_MISSES = 200  # duplicate draws in a row before sampling gives up
ENUMERATE_LIMIT = 100_000  # finite spaces up to this size are listed instead of sampled when nearly used up
NEIGHBOUR_TRIES = 20  # attempts per wanted neighbour
PARENT_DECAY = 0.25  # a guided parent's weight: 1 for the best, then 0.25, 0.0625, ...
TWO_KEY_SHARE = 0.25  # neighbours that change two keys rather than one
ESTIMATE_SAMPLE = 50  # dataset rows rendered for an estimate; the rest are scaled from them
ESTIMATE_SECONDS = 2.0  # after this, templates still to estimate count as their text

# What a sweep may be asked for: the launch API (runs/serializers.py) and an
# experiment's stored sweep defaults (experiments/definition.py) check the same limits.
MAX_SEED = 2**32 - 1
MAX_REPEATS = 100
MAX_CONCURRENT = 1000
MAX_TOKEN_BUDGET = 10**12
SWEEP_LIMITS: dict[str, tuple[int, int | None]] = {  # (least, most) of each whole-number setting
    "n_samples": (1, None),
    "seed": (0, MAX_SEED),
    "repeats": (1, MAX_REPEATS),
    "max_concurrent": (1, MAX_CONCURRENT),
    "max_tokens": (1, MAX_TOKEN_BUDGET),
}
# LLM parameters whose values are objects: a list of these is a list of values, not of bundles.


class SweepError(EngineError):
    """A sweep that cannot be planned; the message says what to change."""

    def __init__(self, message: str, field: str = "parameter_space"):
        super().__init__(message, permanent=True)
        self.field = field  # the part of the sweep request to change


class SweepTooLarge(SweepError):
    """More configurations than MAX_SWEEP_RUNS allows."""


def config_key(config: Config) -> str:
    """SHA-256 of the canonical config (the cache's encoding): Run.config_hash."""
    return compute_config_hash(None, "", {}, config)


def check_size(size: int, limit: int) -> None:
    if size > limit:
        raise SweepTooLarge(
            f"This sweep has {size:,} configurations; the limit is {limit:,} (MAX_SWEEP_RUNS). "
            "List fewer values, or use a random or guided sweep with fewer samples."
        )


# -- the parameter space ---------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    key: str
    values: tuple[Any, ...]  # distinct, in the order given

    def count(self) -> int:
        return len(self.values)

    def all(self) -> Sequence[Any]:
        return self.values

    def sample(self, rng: random.Random) -> Any:
        return rng.choice(self.values)

    def neighbour(self, value: Any, rng: random.Random) -> Any:
        """An adjacent value for numbers (in sorted order), any other value for the rest."""
        if value not in self.values:
            return self.sample(rng)
        if not all(is_number(v) for v in self.values):
            return rng.choice([v for v in self.values if v != value])
        ordered = sorted(self.values)
        i = ordered.index(value)
        steps = [j for j in (i - 1, i + 1) if 0 <= j < len(ordered)]
        return ordered[rng.choice(steps)]


@dataclass(frozen=True)
class Range:
    key: str
    low: float
    high: float
    log: bool = False
    integer: bool = False

    def count(self) -> int | None:
        if self.integer:
            return int(self.high - self.low) + 1
        return 1 if self.low == self.high else None

    def all(self) -> Sequence[Any]:
        return range(int(self.low), int(self.high) + 1) if self.integer else [self.snap(self.low)]

    def sample(self, rng: random.Random) -> Any:
        if self.log:
            return self.snap(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return self.snap(rng.uniform(self.low, self.high))

    def neighbour(self, value: Any, rng: random.Random) -> Any:
        if not is_number(value) or (self.log and value <= 0):
            return self.sample(rng)
        if self.log:
            moved = self.snap(value * math.exp(rng.gauss(0, STEP * math.log(self.high / self.low))))
        else:
            moved = self.snap(value + rng.gauss(0, STEP * (self.high - self.low)))
        if moved == value and self.integer:  # a small step rounds back: take one unit
            moved = self.snap(value + rng.choice((-1, 1)))
        return moved

    def snap(self, x: float) -> Any:
        x = min(max(x, self.low), self.high)
        return int(round(x)) if self.integer else min(max(round_significant(x), self.low), self.high)


@dataclass(frozen=True)
class Linked(Choice):
    """Bundles of parameters that vary together; a configuration takes all of one bundle's keys."""

    def put(self, config: Config, bundle: Any) -> None:
        config.update(bundle)

    def get(self, config: Config) -> Any:
        """The bundle a configuration holds (the largest that fits), or None."""
        fits = [b for b in self.values if all(k in config and config[k] == v for k, v in b.items())]
        return max(fits, key=len, default=None)


Dimension = Choice | Range | Linked


def put_value(config: Config, dim: Dimension, value: Any) -> None:
    if isinstance(dim, Linked):
        dim.put(config, value)
    else:
        config[dim.key] = value


def get_value(config: Config, dim: Dimension) -> Any:
    return dim.get(config) if isinstance(dim, Linked) else config.get(dim.key)


def assemble(dims: Sequence[Dimension], values: Iterable[Any]) -> Config:
    """A configuration from one value per dimension, linked bundles spread out flat."""
    config: Config = {}
    for dim, value in zip(dims, values, strict=True):
        put_value(config, dim, value)
    return config


def is_linked(key: str, values: Any) -> bool:
    """Whether a list of values is a linked dimension: every value an object, the
    key not one of the LLM parameters whose values are objects."""
    plain = key.rsplit(".", 1)[-1] in OBJECT_PARAMS
    return (
        isinstance(values, list) and bool(values) and not plain and all(isinstance(v, dict) for v in values)
    )


def round_significant(x: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    if x == 0:
        return 0.0
    return round(x, digits - 1 - math.floor(math.log10(abs(x))))


def parse_space(space: Any) -> list[Dimension]:
    if not isinstance(space, dict):
        raise SweepError("The parameter space must be an object of {name: [values] or {min, max}}.")
    dims = [_dimension(key, values) for key, values in space.items()]
    _check_linked_keys(dims)
    return dims


def _check_linked_keys(dims: Sequence[Dimension]) -> None:
    """A parameter set by two dimensions would make one of them meaningless."""
    owner: dict[str, str] = {d.key: d.key for d in dims if not isinstance(d, Linked)}
    for dim in dims:
        if not isinstance(dim, Linked):
            continue
        for name in sorted({k for bundle in dim.values for k in bundle}):
            if name in owner and owner[name] != dim.key:
                raise SweepError(
                    f"'{name}' is set both by '{owner[name]}' and by the bundles of '{dim.key}'."
                )
            owner[name] = dim.key


def _dimension(key: Any, values: Any) -> Dimension:
    if not isinstance(key, str) or not key:
        raise SweepError("Parameter names must be non-empty text.")
    if isinstance(values, list):
        if not values:
            raise SweepError(f"'{key}' has an empty list of values; give at least one.")
        if is_linked(key, values):
            return _linked(key, values)
        return Choice(key, tuple(_distinct(values)))
    if isinstance(values, dict):
        return _range(key, values)
    raise SweepError(f"'{key}' must be a list of values or a range {{min, max}}.")


def _distinct(values: Iterable[Any]) -> list[Any]:
    by_key: dict[str, Any] = {}
    for value in values:  # 0.7 and 0.70, 1 and 1.0 are one value
        by_key.setdefault(config_key({"v": value}), value)
    return list(by_key.values())


def _linked(key: str, bundles: list[dict[str, Any]]) -> Linked:
    for n, bundle in enumerate(bundles, start=1):
        if not bundle:
            raise SweepError(f"'{key}' bundle {n} is empty; give it the parameters that vary together.")
        bad = [k for k in bundle if not isinstance(k, str) or not k]
        if bad:
            raise SweepError(f"'{key}' bundle {n} has a parameter without a name.")
    return Linked(key, tuple(_distinct(bundles)))


def _range(key: str, spec: dict[str, Any]) -> Range:
    unknown = set(spec) - RANGE_KEYS
    if unknown:
        raise SweepError(f"'{key}' range has unknown keys {sorted(unknown)}; use min, max, log and type.")
    low, high, kind = spec.get("min"), spec.get("max"), spec.get("type", "float")
    if not (is_number(low) and is_number(high)):
        raise SweepError(f"'{key}' range needs numeric min and max.")
    if low > high:
        raise SweepError(f"'{key}' range has min greater than max.")
    if kind not in ("int", "float"):
        raise SweepError(f"'{key}' range type must be int or float, not {kind!r}.")
    if spec.get("log") and low <= 0:
        raise SweepError(f"'{key}' log range needs min > 0.")
    if kind == "int":
        low, high = math.ceil(low), math.floor(high)
        if low > high:
            raise SweepError(f"'{key}' int range holds no whole number; widen it.")
    return Range(key, low, high, bool(spec.get("log")), kind == "int")


def space_count(dims: Sequence[Dimension]) -> int | None:
    """Distinct configurations in the space; None when a float range makes it unbounded."""
    counts = [d.count() for d in dims]
    return None if None in counts else math.prod(c for c in counts if c is not None)


def enumerate_space(dims: Sequence[Dimension]) -> Iterator[Config]:
    for values in itertools.product(*(d.all() for d in dims)):
        yield assemble(dims, values)


def _add(config: Config, seen: set[str], out: list[Config]) -> bool:
    key = config_key(config)
    if key in seen:
        return False
    seen.add(key)
    out.append(config)
    return True


def draw(dims: Sequence[Dimension], rng: random.Random, n: int, seen: set[str]) -> list[Config]:
    """Up to n random configurations not in `seen` (which they join); fewer when the space runs out."""
    out: list[Config] = []
    count = space_count(dims)
    listable = count is not None and count <= ENUMERATE_LIMIT
    # A space nearly used up is listed: sampling would mostly redraw what was seen.
    if not (listable and count is not None and count <= 2 * (n + len(seen))):
        misses = 0
        while len(out) < n and misses < MAX_MISSES:
            misses = 0 if _add(assemble(dims, [d.sample(rng) for d in dims]), seen, out) else misses + 1
    if len(out) < n and listable:
        rest = [c for c in enumerate_space(dims) if config_key(c) not in seen]
        rng.shuffle(rest)
        for config in rest[: n - len(out)]:
            _add(config, seen, out)
    return out


# -- the sweeps ---------------------------------------------------------------------


class Sweep:
    """Grid and random sweeps plan everything in `initial_configs()`; adaptive
    ones propose more with `next_round()` until it returns []."""

    type: ClassVar[str] = ""
    options: ClassVar[tuple[str, ...]] = ()
    adaptive: ClassVar[bool] = False

    def __init__(self, space: dict[str, Any], *, n_samples: int | None = None, seed: int | None = None):
        self.space = space
        self.n_samples = n_samples
        self.seed = 0 if seed is None else seed
        self.dims: list[Dimension] = []
        self.validate()

    def validate(self) -> None:
        self.dims = parse_space(self.space)

    def size(self) -> int:
        raise NotImplementedError

    def check_size(self, limit: int) -> None:
        check_size(self.size(), limit)

    def initial_configs(self) -> list[Config]:
        raise NotImplementedError

    def next_round(self, results: list[tuple[Config, float | None]], remaining: int) -> list[Config]:
        return []

    def _require_n_samples(self) -> int:
        n = self.n_samples
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise SweepError(
                f"A {self.type} sweep needs n_samples, the number of configurations to try "
                f"(a whole number, 1 or more); got {n!r}.",
                "n_samples",
            )
        return n


SWEEPS: dict[str, type[Sweep]] = {}


S = TypeVar("S", bound=type[Sweep])


def register_sweep(cls: S) -> S:
    SWEEPS[cls.type] = cls
    return cls


def build_sweep(
    type: str, space: dict[str, Any], *, n_samples: int | None = None, seed: int | None = None, **options: Any
) -> Sweep:
    cls = SWEEPS.get(type)
    if cls is None:
        raise SweepError(f"Unknown sweep type '{type}'; known types: {', '.join(sorted(SWEEPS))}.", "type")
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        allowed = ", ".join(cls.options) or "none"
        raise SweepError(
            f"A {type} sweep has no option {', '.join(unknown)}; its options: {allowed}.", "options"
        )
    return cls(space, n_samples=n_samples, seed=seed, **options)


@register_sweep
class GridSweep(Sweep):
    """Every combination of the listed values; the first key varies slowest."""

    type = "grid"

    def validate(self) -> None:
        super().validate()
        ranges = [d.key for d in self.dims if isinstance(d, Range)]
        if ranges:
            raise SweepError(
                f"A grid needs lists of values, but {', '.join(ranges)} is a range; "
                "use a random or guided sweep for ranges, or list the values."
            )

    def size(self) -> int:
        return space_count(self.dims) or 0

    def initial_configs(self) -> list[Config]:
        return list(enumerate_space(self.dims))


@register_sweep
class RandomSweep(Sweep):
    """n_samples distinct configurations drawn uniformly (log-uniformly for log ranges)."""

    type = "random"

    def validate(self) -> None:
        super().validate()
        self._require_n_samples()

    def size(self) -> int:
        n, count = self._require_n_samples(), space_count(self.dims)
        return n if count is None else min(n, count)

    def initial_configs(self) -> list[Config]:
        return draw(self.dims, random.Random(self.seed), self._require_n_samples(), set())


@register_sweep
class GuidedSweep(RandomSweep):
    """Random first, then rounds of neighbours of the best configurations so far.

    `initial` random configs (default max(4, n/4)), then rounds of `round_size`
    (default max(4, n/8)): `exploit_ratio` of each round are neighbours of the
    `top_k` best (the best weighted most), the rest random. A neighbour changes one or two keys: a number list moves to an adjacent value
    (sorted), another list takes any other value, a range takes a gaussian step.
    `results` carry every finished (or failed: score None) run of the sweep; each
    round is a function of the seed and the configurations seen, so a resumed
    sweep that feeds the same results proposes the same round.
    """

    type = "guided"
    options = ("top_k", "initial", "exploit_ratio", "round_size")
    adaptive = True

    def __init__(
        self,
        space: dict[str, Any],
        *,
        n_samples: int | None = None,
        seed: int | None = None,
        top_k: int = 3,
        initial: int | None = None,
        exploit_ratio: float = 0.8,
        round_size: int | None = None,
    ):
        self.top_k = top_k
        self.initial = initial
        self.exploit_ratio = exploit_ratio
        self.round_size = round_size
        self.tried: set[str] = set()
        super().__init__(space, n_samples=n_samples, seed=seed)

    def validate(self) -> None:
        super().validate()
        for name in ("top_k", "initial", "round_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise SweepError(f"Guided sweep option {name} must be a whole number, 1 or more.", "options")
        if not is_number(self.exploit_ratio) or not 0 <= self.exploit_ratio <= 1:
            raise SweepError("Guided sweep option exploit_ratio must be between 0 and 1.", "options")

    def initial_configs(self) -> list[Config]:
        n = self._require_n_samples()
        first = min(self.initial or max(4, n // 4), n)
        return draw(self.dims, random.Random(self.seed), first, self.tried)

    def next_round(self, results: list[tuple[Config, float | None]], remaining: int) -> list[Config]:
        for config, _ in results:
            self.tried.add(config_key(config))
        want = min(self.round_size or max(4, self._require_n_samples() // 8), remaining)
        if want <= 0:
            return []
        rng = random.Random(f"{self.seed}:{_digest(self.tried)}")
        parents = _best(results, self.top_k)
        exploit = round(want * self.exploit_ratio) if parents else 0
        out = self._neighbours(parents, exploit, rng)
        return out + draw(self.dims, rng, want - len(out), self.tried)

    def _neighbours(self, parents: list[Config], n: int, rng: random.Random) -> list[Config]:
        movable = [d for d in self.dims if d.count() != 1]
        weights = [PARENT_DECAY**rank for rank in range(len(parents))]  # mostly the best
        out: list[Config] = []
        for _ in range(n * NEIGHBOUR_TRIES if movable else 0):
            if len(out) >= n:
                break
            parent = rng.choices(parents, weights)[0]
            child = dict(parent)
            changes = 2 if rng.random() < TWO_KEY_SHARE else 1
            for dim in rng.sample(movable, min(len(movable), changes)):
                put_value(child, dim, dim.neighbour(get_value(parent, dim), rng))
            _add(child, self.tried, out)
        return out


@register_sweep
class RacingSweep(Sweep):
    """Candidates raced over growing slices of the dataset (engine/racing.py):
    every configuration of a list-valued space, or n_samples drawn from it
    (needed when it has ranges). Options: min_items (rows in the first round;
    default 10% of the dataset and at least 10), eta (how much larger each next
    slice is; default 2) and confidence (default 0.95)."""

    type = "racing"
    options = ("min_items", "eta", "confidence")

    def __init__(
        self,
        space: dict[str, Any],
        *,
        n_samples: int | None = None,
        seed: int | None = None,
        min_items: int | None = None,
        eta: float = racing.DEFAULT_ETA,
        confidence: float = racing.DEFAULT_CONFIDENCE,
    ):
        self.min_items, self.eta, self.confidence = min_items, eta, confidence
        super().__init__(space, n_samples=n_samples, seed=seed)

    def validate(self) -> None:
        super().validate()
        problem = racing.options_problem(self.min_items, self.eta, self.confidence)
        if problem:
            raise SweepError(problem, "options")
        if self.n_samples is not None or space_count(self.dims) is None:
            self._require_n_samples()  # ranges: candidates are drawn, as in a random sweep

    def size(self) -> int:
        count = space_count(self.dims)
        if self.n_samples is None:
            return count or 0
        n = self._require_n_samples()
        return n if count is None else min(n, count)

    def initial_configs(self) -> list[Config]:
        if self.n_samples is None:
            return list(enumerate_space(self.dims))
        return draw(self.dims, random.Random(self.seed), self._require_n_samples(), set())

    def schedule(self, n_items: int) -> list[int]:
        return racing.schedule(n_items, self.min_items, self.eta)


def _best(results: list[tuple[Config, float | None]], k: int) -> list[Config]:
    scored = {config_key(c): (s, c) for c, s in results if s is not None}
    ranked = sorted(scored.items(), key=lambda item: (-item[1][0], item[0]))
    return [config for _, (_, config) in ranked[:k]]


def _digest(keys: set[str]) -> str:
    return hashlib.sha256("".join(sorted(keys)).encode()).hexdigest()


# -- dispatch order and cost --------------------------------------------------------


def models_of(config: Config, default_model: str) -> tuple[str, ...]:
    """The models a config loads: its `model` (or the default), then stage-level ones by key."""
    staged = sorted((k, str(v)) for k, v in config.items() if k.endswith("." + MODEL_KEY) and v)
    return (str(config.get(MODEL_KEY) or default_model), *(model for _, model in staged))


def order_by_model(configs: Iterable[Config], default_model: str) -> list[Config]:
    """Stable, with each model's configs together: a local server must not swap models back and forth."""
    groups: dict[tuple[str, ...], list[Config]] = {}
    for config in configs:
        groups.setdefault(models_of(config, default_model), []).append(config)
    return [config for group in groups.values() for config in group]


class Estimate(TypedDict):
    runs: int
    calls: int  # stage calls and judge calls, all repeats
    judge_calls: int
    prompt_tokens: int
    max_tokens: int  # worst case: every call's prompt plus its max_tokens


# plan_stages needs an endpoint with a model; the estimate needs neither.
_ANY_ENDPOINT = EndpointConfig(name="estimate", base_url="", default_model="estimate")
COST_KEYS = frozenset({"system", "user", "max_tokens"})  # the config keys that change a run's tokens


def estimate(
    configs: Sequence[Config],
    stages: list[Stage],
    items: list[Item],
    *,
    repeats: int = 1,
    scorers: Iterable[ScorerSpec] = (),
    default_max_tokens: int = 512,
    adapter: str = "openai",
) -> Estimate:
    """Calls and a token bound before launch. Earlier stages' outputs (`previous`,
    `stages.x`) are rendered as empty text and counted at their max_tokens each;
    a template that fails to render is counted as its source text. Tokens are
    counted as the adapter named `adapter` counts them; what a scorer asks of a
    model is its class's `model_calls()`."""
    judges = [calls for calls in map(_model_calls, scorers) if calls is not None]
    counter = ADAPTERS.get(adapter, BaseAdapter)
    costs = _RunCosts(stages, items, judges, default_max_tokens, counter.estimate_tokens)
    total = Estimate(runs=len(configs), calls=0, judge_calls=0, prompt_tokens=0, max_tokens=0)
    for config in configs:
        prompt, bound = costs.of(config)
        total["prompt_tokens"] += prompt * repeats
        total["max_tokens"] += bound * repeats
    asks = sum(j.calls for j in judges)  # e.g. a judge asks `samples` times
    total["judge_calls"] = len(configs) * asks * len(items) * repeats
    total["calls"] = len(configs) * len(stages) * len(items) * repeats + total["judge_calls"]
    return total


def _model_calls(spec: ScorerSpec) -> ModelCalls | None:
    scorer = SCORERS.get(spec.type)  # an unknown type is validation's to report
    return scorer.model_calls(spec.config) if scorer else None


def _without_endpoints(config: Config) -> Config:
    # Which endpoint answers does not change the cost, and this module knows none by name.
    return {k: v for k, v in config.items() if k != ENDPOINT_KEY and not k.endswith("." + ENDPOINT_KEY)}


def _limit(value: Any, default: int) -> int:
    return int(value) if is_number(value) and value > 0 else default


class _RunCosts:
    """One run's prompt tokens and token bound (all items, one repeat), cached by
    what decides them: configs that differ only in e.g. temperature cost the same."""

    def __init__(
        self,
        stages: list[Stage],
        items: list[Item],
        judges: list[ModelCalls],
        default_max_tokens: int,
        tokens: Callable[[str], int],
    ):
        self.stages, self.items, self.judges = stages, items, judges
        self.tokens = tokens
        # Rendering every row of a large dataset would hold a web request for
        # minutes: render an even sample and scale, and stop rendering at a deadline.
        self.sample = _even_sample(items, ESTIMATE_SAMPLE)
        self.scale = len(items) / len(self.sample) if self.sample else 0.0
        self.deadline = time.monotonic() + ESTIMATE_SECONDS
        self.default = default_max_tokens
        self.runs: dict[tuple[tuple[str, str], ...], tuple[int, int]] = {}
        self.templates: dict[tuple[str, ...], int] = {}  # (source, earlier stages...) -> tokens
        self.judge_prompts: dict[tuple[str, Any], int] = {}

    def of(self, config: Config) -> tuple[int, int]:
        key = tuple(sorted((k, str(v)) for k, v in config.items() if k.rsplit(".", 1)[-1] in COST_KEYS))
        if key not in self.runs:
            self.runs[key] = self._cost(config)
        return self.runs[key]

    def _cost(self, config: Config) -> tuple[int, int]:
        plans = plan_stages(self.stages, _without_endpoints(config), _ANY_ENDPOINT)
        limits = [_limit(p.params.get("max_tokens"), self.default) for p in plans]
        prompt = sum(self._stage(p, [q.name for q in plans[: p.index]], limits) for p in plans)
        prompt += sum(self._judge(j, limits[-1]) * j.calls for j in self.judges)
        outputs = sum(limits) + sum(j.max_tokens * j.calls for j in self.judges)
        return prompt, prompt + outputs * len(self.items)

    def _stage(self, plan: StagePlan, earlier: list[str], limits: list[int]) -> int:
        used = _variables(plan.system) | _variables(plan.user)
        allowance = limits[plan.index - 1] if "previous" in used and plan.index else 0
        allowance += sum(limits[: plan.index]) if "stages" in used else 0
        text = self._template(plan.system, earlier) + self._template(plan.user, earlier)
        return text + allowance * len(self.items)

    def _template(self, source: str, earlier: list[str]) -> int:
        key = (source, *earlier)
        if key not in self.templates:
            outputs = dict.fromkeys(earlier, "")
            variables = [{**i.input, "previous": "", "stages": outputs} for i in self.sample]
            self.templates[key] = self._scaled(source, variables)
        return self.templates[key]

    def _judge(self, calls: ModelCalls, output_limit: int) -> int:
        key = (calls.prompt, calls.variables)
        if key not in self.judge_prompts:
            variables = [calls.variables(i.input, i.reference) for i in self.sample]
            self.judge_prompts[key] = self._scaled(calls.prompt, variables)
        return self.judge_prompts[key] + output_limit * len(self.items)

    def _scaled(self, source: str, variables: list[dict[str, Any]]) -> int:
        """Tokens of `source` over every item, from the sample. A row it fails on
        (a missing variable, a render limit) counts as the template's text; so do
        all rows once the estimate's deadline has passed."""
        total = 0
        for v in variables:
            in_time = time.monotonic() < self.deadline
            total += self._tokens_of(source, v) if in_time else self.tokens(source)
        return math.ceil(total * self.scale)

    def _tokens_of(self, source: str, variables: dict[str, Any]) -> int:
        if not source:
            return 0
        try:
            return self.tokens(render(source, variables))
        except TemplateError:
            return self.tokens(source)


def _even_sample(items: list[Item], n: int) -> list[Item]:
    if len(items) <= n:
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


@lru_cache(maxsize=1024)
def _variables(source: str) -> frozenset[str]:
    return frozenset(template_variables(source))  # plan_stages has already parsed it
