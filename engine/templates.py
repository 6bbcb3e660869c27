"""Jinja rendering of stage prompts, sandboxed and cached.

Dataset values are data: they are passed in as variables and never rendered
again, so a `{{` inside an input value reaches the prompt verbatim.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError, meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from engine.types import TemplateError

ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)

TEMPLATE_CACHE_SIZE = 1024


def parse_template(source: str) -> None:
    """Raise TemplateError (with the line number) if `source` is not valid Jinja."""
    _compile(source)


def render(source: str, variables: dict[str, Any]) -> str:
    # Every Jinja construct starts with "{", so plain text needs no template at all.
    if "{" not in source:
        return source
    template = _compile(source)
    try:
        return template.render(variables)
    except SecurityError as exc:
        raise TemplateError(f"The template tried something unsafe: {exc}", permanent=True) from None
    except UndefinedError as exc:
        raise TemplateError(_undefined_message(exc, variables), permanent=True) from None
    except Exception as exc:  # e.g. `{{ a / 0 }}`: any failure inside a template is the template's
        raise TemplateError(f"The template failed: {type(exc).__name__}: {exc}", permanent=True) from None


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
        return ENV.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(_syntax_message(exc), permanent=True) from None


def _syntax_message(exc: TemplateSyntaxError) -> str:
    return f"Template syntax error on line {exc.lineno}: {exc.message}"


def _undefined_message(exc: UndefinedError, variables: dict[str, Any]) -> str:
    known = ", ".join(sorted(variables)) or "none"
    return (
        f"Template variable missing: {exc.message}. "
        f"Available variables: {known}. Add the column to the dataset or fix the template."
    )
