"""Checks of the output's shape: JSON, Markdown, length, or a JSON Schema."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Literal

import jsonschema
import referencing.exceptions
from jsonschema import validators

from engine.scorers.base import BaseScorer, register_scorer
from engine.types import ScoreContext, ScoreOutcome, ScorerError

# The whole output is one fenced block. The language tag must end its line, so
# an inline "```true```" keeps "true" as the body.
FENCE_RE = re.compile(r"\A\s*```(?:[\w+-]*[ \t]*\n)?(.*?)```\s*\Z", re.DOTALL)
CODE_BLOCK_RE = re.compile(r"^\s*```.*?^\s*```", re.DOTALL | re.MULTILINE)
HEADER_RE = re.compile(r"^ {0,3}#{1,6}[ \t]+\S", re.MULTILINE)
LIST_RE = re.compile(r"^[ \t]*(?:[-*+]|\d+[.)])[ \t]+\S", re.MULTILINE)

CHECK_OPTIONS = {
    "json": {"strip_fence"},
    "markdown": set(),
    "length": {"min_tokens", "max_tokens"},
    "structure": {"schema", "strip_fence"},
}


def strip_fence(text: str) -> str:
    match = FENCE_RE.match(text)
    return match.group(1) if match else text


def count_tokens(text: str) -> int:
    """Whitespace-separated words: a tokenizer-free approximation, ~0.75 of BPE tokens."""
    return len(text.split())


@register_scorer
class FormatScorer(BaseScorer):
    """`check` picks the test:

    - json: 1 if the output parses as JSON (after stripping a ``` fence that
      wraps the whole output, unless strip_fence is false), else 0.
    - markdown: 0.5 for a header line (`# ...`), 0.5 for a list item
      (`- `, `* `, `+ `, `1. `); lines inside ``` code blocks do not count.
    - length: tokens are whitespace-separated words. 1 within
      [min_tokens, max_tokens], n/min_tokens below, max_tokens/n above, 0 if empty.
    - structure: 1 if the output parses as JSON and is valid under `schema`
      (a JSON Schema), else 0; details carry the most relevant error.
    """

    type = "format"
    description = "Checks the output's format: valid JSON, Markdown, length, or a JSON Schema."

    @dataclasses.dataclass
    class Options:
        check: Literal["json", "markdown", "length", "structure"]
        strip_fence: bool = True
        min_tokens: int | None = None
        max_tokens: int | None = None
        schema: dict[str, Any] | None = None

    def __init__(self, config: dict[str, Any] | None = None, name: str = ""):
        self.validator: jsonschema.protocols.Validator | None = None
        super().__init__(config, name)

    def check_options(self) -> None:
        opts = self.options
        for key in ("strip_fence", "min_tokens", "max_tokens", "schema"):
            is_set = getattr(opts, key) != getattr(self.Options, key, None)
            if is_set and key not in CHECK_OPTIONS[opts.check]:
                uses = [c for c, keys in CHECK_OPTIONS.items() if key in keys]
                raise self.config_error(
                    f"option '{key}' does not apply to check '{opts.check}', "
                    f"only to {' and '.join(uses)}; remove it or change the check"
                )
        if opts.check == "length":
            self.check_length_options()
        if opts.check == "structure":
            self.validator = self.build_validator()

    def check_length_options(self) -> None:
        low, high = self.options.min_tokens, self.options.max_tokens
        if low is None and high is None:
            raise self.config_error("check 'length' needs min_tokens, max_tokens or both")
        if low is not None and low < 0:
            raise self.config_error(f"min_tokens must be 0 or more, got {low}")
        if high is not None and high < 1:
            raise self.config_error(f"max_tokens must be 1 or more, got {high}")
        if low is not None and high is not None and low > high:
            raise self.config_error(f"min_tokens ({low}) is larger than max_tokens ({high})")

    def build_validator(self) -> jsonschema.protocols.Validator:
        schema = self.options.schema
        if schema is None:
            raise self.config_error("check 'structure' needs a 'schema' (a JSON Schema object)")
        validator_cls = validators.validator_for(schema)
        try:
            validator_cls.check_schema(schema)
        except jsonschema.SchemaError as error:
            raise self.config_error(
                f"the schema is not a valid JSON Schema: {error.message} at {error.json_path}"
            ) from None
        return validator_cls(schema, format_checker=validator_cls.FORMAT_CHECKER)

    def evaluate(self, input_data: dict, output: str, context: ScoreContext) -> ScoreOutcome:
        check = {
            "json": self.check_json,
            "markdown": self.check_markdown,
            "length": self.check_length,
            "structure": self.check_structure,
        }[self.options.check]
        return check(output)

    def parse_json(self, output: str) -> tuple[Any, str | None]:
        text = strip_fence(output) if self.options.strip_fence else output
        try:
            return json.loads(text), None
        except json.JSONDecodeError as error:
            return None, f"not valid JSON: {error}"

    def check_json(self, output: str) -> ScoreOutcome:
        _, error = self.parse_json(output)
        return self.outcome(0.0 if error else 1.0, {"error": error} if error else {})

    def check_markdown(self, output: str) -> ScoreOutcome:
        # A "# comment" inside a code block is not a Markdown header.
        prose = CODE_BLOCK_RE.sub("", output)
        header = HEADER_RE.search(prose) is not None
        has_list = LIST_RE.search(prose) is not None
        return self.outcome(0.5 * header + 0.5 * has_list, {"header": header, "list": has_list})

    def check_length(self, output: str) -> ScoreOutcome:
        n = count_tokens(output)
        low, high = self.options.min_tokens, self.options.max_tokens
        details = {"tokens": n, "min_tokens": low, "max_tokens": high}
        if n == 0:
            value = 0.0
        elif low is not None and n < low:
            value = n / low
        elif high is not None and n > high:
            value = high / n
        else:
            value = 1.0
        return self.outcome(value, details)

    def check_structure(self, output: str) -> ScoreOutcome:
        document, error = self.parse_json(output)
        if error:
            return self.outcome(0.0, {"error": error})
        assert self.validator is not None  # built in check_options
        try:
            problem = jsonschema.exceptions.best_match(self.validator.iter_errors(document))
        except referencing.exceptions.Unresolvable as missing:
            raise ScorerError(
                f"{self.label}: the schema refers to {missing} which cannot be fetched; "
                "inline that part of the schema",
                permanent=True,
            ) from None
        if problem is None:
            return self.outcome(1.0)
        return self.outcome(0.0, {"error": problem.message, "path": problem.json_path})
