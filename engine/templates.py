"""Jinja rendering of stage prompts, sandboxed, bounded and cached.

Dataset values are data: they are passed in as variables and never rendered
again, so a `{{` inside an input value reaches the prompt verbatim.

Every render is bounded (`LIMITS`, set from the settings by the apps): loop
iterations, characters built, and wall time. Jinja's sandbox alone lets
`{% for i in range(100000) %}{% for j in range(100000) %}` spin for hours and
`'a' * 10**8` allocate 100 MB, inside a web request.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache, wraps
from typing import Any

from jinja2 import (
    ChainableUndefined,
    StrictUndefined,
    Template,
    TemplateSyntaxError,
    UndefinedError,
    meta,
    nodes,
)
from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment, safe_range

from engine.types import TemplateError

TEMPLATE_CACHE_SIZE = 1024
LOOP_FILTER = "_bounded_loop"
WORK_FACTOR = 4  # text built along the way (captures, joins) may be this many times the output limit
MAX_POWER_BITS = 64 * 1024  # `**` results beyond this many bits are refused before they are computed
_DIGITS = re.compile(r"\d{4,}")


@dataclass(frozen=True)
class RenderLimits:
    loop_iterations: int = 10_000  # all the loops of one render together
    output_chars: int = 200_000  # the rendered prompt
    seconds: float = 1.0  # wall time of one render


LIMITS = RenderLimits()


def configure(limits: RenderLimits) -> None:
    global LIMITS
    LIMITS = limits


class TemplateLimitError(TemplateError):
    """A render went over one of LIMITS; the message names the limit and its setting."""

    def __init__(self, message: str):
        super().__init__(f"The template went over a limit: {message}.", permanent=True)


class _Budget:
    """What one render may still spend. Checked at every loop iteration, call,
    intercepted operator and output chunk, so a template cannot run away between checks."""

    def __init__(self, limits: RenderLimits):
        self.limits = limits
        self.iterations = 0
        self.built = 0
        self.output = 0
        self.deadline = time.monotonic() + limits.seconds

    def tick(self, iterations: int = 0, built: int = 0) -> None:
        self.iterations += iterations
        self.built += built
        if self.iterations > self.limits.loop_iterations:
            raise TemplateLimitError(
                f"more than {self.limits.loop_iterations:,} loop iterations (TEMPLATE_MAX_LOOP_ITERATIONS)"
            )
        if self.built > self.limits.output_chars * WORK_FACTOR:
            raise TemplateLimitError(
                self._too_long("builds more than", self.limits.output_chars * WORK_FACTOR)
            )
        if time.monotonic() > self.deadline:
            raise TemplateLimitError(f"rendering took over {self.limits.seconds:g} s (TEMPLATE_MAX_RENDER_S)")

    def emit(self, chars: int) -> None:
        self.output += chars
        if self.output > self.limits.output_chars:
            raise TemplateLimitError(self._too_long("output of more than", self.limits.output_chars))
        self.tick()

    def size(self, chars: int) -> None:
        """A value about to be built: refused before the memory is taken."""
        if chars > self.limits.output_chars * WORK_FACTOR:
            raise TemplateLimitError(
                self._too_long("a value of more than", self.limits.output_chars * WORK_FACTOR)
            )
        self.tick(built=chars)

    def _too_long(self, what: str, limit: int) -> str:
        return f"{what} {limit:,} characters (TEMPLATE_MAX_OUTPUT_CHARS is {self.limits.output_chars:,})"


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("template_budget", default=None)


def _spend(**kwargs: int) -> None:
    budget = _budget.get()
    if budget is not None:
        budget.tick(**kwargs)


def _check_size(chars: int) -> None:
    budget = _budget.get()
    if budget is not None:
        budget.size(chars)


def _check_numbers(args: Iterable[Any]) -> None:
    """A number passed to a call or filter (a width, a count) asking for a huge string."""
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool):
            _check_size(abs(arg))


def _check_growth(method: str, text: str, args: tuple) -> tuple:
    """`sep.join(items)` and `text.replace(old, new)` multiply what they are given
    (a 4,000-character separator between 4,000 items): their result's size, checked
    before they build it. The items come back as a list, counted once."""
    if method == "join" and args and not isinstance(args[0], str):
        items = list(args[0]) if not isinstance(args[0], (list, tuple)) else args[0]
        _check_size(len(text) * max(0, len(items) - 1) + sum(len(str(item)) for item in items))
        return (items, *args[1:])
    if method == "replace" and len(args) >= 2 and isinstance(args[0], str):
        old, new = args[0], str(args[1])
        found = len(text) + 1 if old == "" else text.count(old)
        _check_size(len(text) + found * max(0, len(new) - len(old)))
    return args


def _check_format(spec: str) -> None:
    """A format string whose widths or precisions ask for a huge string (`%099999999d`)."""
    for digits in _DIGITS.findall(spec):
        _check_size(int(digits))


def _bounded_loop(iterable: Any, body_chars: int = 0) -> Iterator[Any]:
    """Wraps every `for` loop's iterable: each iteration costs one iteration and
    the literal text its body writes."""
    for item in iterable:
        _spend(iterations=1, built=body_chars)
        yield item


def _product_size(left: Any, right: Any) -> int:
    for seq, n in ((left, right), (right, left)):
        if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
            return len(seq) * max(0, n)
    return 0


def _power_bits(base: Any, exponent: Any) -> float:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        return exponent * math.log2(abs(base))
    return 0.0


class _BoundedCodeGenerator(CodeGenerator):
    def visit_Concat(self, node: nodes.Concat, frame: Any) -> None:
        # `a ~ b` would build its string with no check; doubling one in a loop exhausts memory.
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class BoundedEnvironment(SandboxedEnvironment):
    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.filters = {name: _bounded_filter(f) for name, f in self.filters.items()}
        self.filters[LOOP_FILTER] = _bounded_loop

    def _generate(self, source: nodes.Template, *args: Any, **kwargs: Any) -> str:
        for loop in source.find_all(nodes.For):
            body = sum(len(d.data) for d in loop.find_all(nodes.TemplateData))
            loop.iter = nodes.Filter(loop.iter, LOOP_FILTER, [nodes.Const(body)], [], None, None)
            loop.iter.set_lineno(loop.lineno)
        return super()._generate(source, *args, **kwargs)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_size(_product_size(left, right))
        elif operator == "**" and _power_bits(left, right) > MAX_POWER_BITS:
            raise TemplateLimitError(f"a power of more than {MAX_POWER_BITS:,} bits")
        elif operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, type(left)):
            _check_size(len(left) + len(right))
        elif operator == "%" and isinstance(left, str):
            _check_format(left)
        else:
            _spend()
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        if __obj is not safe_range:  # lazy, at most MAX_RANGE long, and its loops are counted
            _check_numbers([*args, *kwargs.values()])
        method = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        if isinstance(getattr(method, "__self__", None), str):  # '{:>99999999}'.format(x)
            _check_format(method.__self__)
            args = _check_growth(method.__name__, method.__self__, args)
        return SandboxedEnvironment.call(__self, __context, __obj, *args, **kwargs)

    @staticmethod
    def bounded_concat(parts: tuple[Any, ...]) -> str:
        texts = [str(part) for part in parts]
        _check_size(sum(len(t) for t in texts))
        return "".join(texts)


def _bounded_filter(f: Any) -> Any:
    """The filter, refusing arguments that ask for a huge string (`center(10**8)`)."""
    first = 2 if getattr(f, "jinja_pass_arg", None) is not None else 1  # after the context, the value

    @wraps(f)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_numbers([*args[first:], *kwargs.values()])
        if f.__name__ == "do_format" and len(args) >= first and isinstance(args[first - 1], str):
            _check_format(args[first - 1])
        if f.__name__ == "do_join" and len(args) > first:  # value|join(separator)
            sequence = _check_growth("join", str(args[first]), (args[first - 1],))[0]
            args = (*args[: first - 1], sequence, *args[first:])
        elif f.__name__ == "do_replace" and len(args) >= first + 2 and isinstance(args[first - 1], str):
            _check_growth("replace", args[first - 1], args[first:])
        return f(*args, **kwargs)

    return bounded


ENV = BoundedEnvironment(undefined=StrictUndefined, autoescape=False)
# For checking limits at validation time, when the variables are not known yet.
_TRIAL_ENV = BoundedEnvironment(undefined=ChainableUndefined, autoescape=False)


def parse_template(source: str) -> None:
    """Raise TemplateError (with the line number) if `source` is not valid Jinja."""
    _compile(source)


def render(source: str, variables: dict[str, Any], limits: RenderLimits | None = None) -> str:
    # Every Jinja construct starts with "{", so plain text needs no template at all.
    if "{" not in source:
        return source
    template = _compile(source)
    try:
        return _render_bounded(template, variables, limits or LIMITS)
    except TemplateError:
        raise
    except SecurityError as exc:
        raise TemplateError(f"The template tried something unsafe: {exc}", permanent=True) from None
    except UndefinedError as exc:
        raise TemplateError(_undefined_message(exc, variables), permanent=True) from None
    except Exception as exc:  # e.g. `{{ a / 0 }}`: any failure inside a template is the template's
        raise TemplateError(f"The template failed: {type(exc).__name__}: {exc}", permanent=True) from None


@contextlib.contextmanager
def _bounded(limits: RenderLimits) -> Iterator[_Budget]:
    budget = _Budget(limits)
    token = _budget.set(budget)
    try:
        yield budget
    finally:
        _budget.reset(token)


def _render_bounded(template: Template, variables: dict[str, Any], limits: RenderLimits) -> str:
    with _bounded(limits) as budget:
        chunks = []
        for chunk in template.generate(variables):
            budget.emit(len(chunk))
            chunks.append(chunk)
        return "".join(chunks)


def render_compiled(template: Template, variables: dict[str, Any]) -> str:
    """A template compiled elsewhere (by from_string below), rendered within LIMITS."""
    return _render_bounded(template, variables, LIMITS)


def from_string(env: BoundedEnvironment, source: str) -> Template:
    return _from_string(env, source)


def _from_string(env: BoundedEnvironment, source: str) -> Template:
    # Compiling folds constant expressions (`{{ 'x'|center(10**8) }}`): bounded too. What
    # goes over a limit then is left to run time, where the render fails with the limit.
    with _bounded(LIMITS):
        template = env.from_string(source)
    # A plain dict instead of Jinja's ChainMap over the environment's globals (which
    # never change here): every render copies them, and a ChainMap is slow to walk.
    template.globals = dict(template.globals)
    return template


def check_limits(source: str, variables: dict[str, Any] | None = None) -> None:
    """Render `source` as far as it goes without its variables (missing ones are
    empty) and raise TemplateLimitError if that alone goes over a limit, e.g. a
    loop over range(100000) inside another. Every other failure waits for run time."""
    if "{" not in source:
        return
    try:
        template = _from_string(_TRIAL_ENV, source)
        _render_bounded(template, variables or {}, LIMITS)
    except TemplateLimitError:
        raise
    except Exception:  # a missing variable used as a number, say: nothing to learn here
        return


def template_variables(source: str) -> set[str]:
    """The names a template reads that it does not set itself (for the UI)."""
    try:
        ast = ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(_syntax_message(exc), permanent=True) from None
    return set(meta.find_undeclared_variables(ast))


@lru_cache(maxsize=TEMPLATE_CACHE_SIZE)
def _compile(source: str) -> Template:
    try:
        return _from_string(ENV, source)
    except TemplateSyntaxError as exc:
        raise TemplateError(_syntax_message(exc), permanent=True) from None
    except TemplateError:
        raise
    except Exception as exc:  # e.g. constant folding that overflows
        raise TemplateError(
            f"The template failed to compile: {type(exc).__name__}: {exc}", permanent=True
        ) from None


def _syntax_message(exc: TemplateSyntaxError) -> str:
    return f"Template syntax error on line {exc.lineno}: {exc.message}"


def _undefined_message(exc: UndefinedError, variables: dict[str, Any]) -> str:
    known = ", ".join(sorted(variables)) or "none"
    return (
        f"Template variable missing: {exc.message}. "
        f"Available variables: {known}. Add the column to the dataset or fix the template."
    )
