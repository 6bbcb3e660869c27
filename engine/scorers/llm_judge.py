"""A model rates the output from 1 to 10."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from engine.scorers.base import BaseScorer, ScorerCallError, register_scorer
from engine.types import CallResult, EndpointConfig, ScoreContext, ScoreOutcome, ScorerError

DEFAULT_PROMPT = """\
You are grading an answer written by an AI assistant.

Task input:
{{ input }}
{% if reference %}
Reference answer:
{{ reference }}
{% endif %}
Answer to grade:
{{ output }}

Rate the answer from 1 (wrong or useless) to 10 (fully correct and complete)\
{% if reference %}, comparing it with the reference answer{% endif %}. \
Reply with the number only."""

PROMPT_VARIABLES = {"input", "output", "reference"}

_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)

NUMBER = r"(-?\d+(?:\.\d+)?)"
# "7/10", "7 / 10", "7 out of 10"; other scales are caught so they are not misread.
SCALE_RE = re.compile(NUMBER + r"\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
LABEL_RE = re.compile(r"\b(?:rating|score|grade)\b\s*(?:is|of|:|=|-)?\s*(?:a\s+)?" + NUMBER, re.IGNORECASE)
# "on a scale of 1 to 10", "(1-10)": the scale's bounds are not the rating.
RANGE_RE = re.compile(r"\b1\s*(?:to|-|–)\s*10\b", re.IGNORECASE)
LEADING_RE = re.compile(r"\s*" + NUMBER + r"(?!\w)(?!\s*(?:or|to|-|–)\s*\d)")
NUMBER_RE = re.compile(r"(?<![\w.])" + NUMBER)


def parse_rating(text: str) -> float:
    """The 1-10 rating in a judge's answer, e.g. "7", "7/10", "Rating: **8**",
    "I'd give it 8 out of 10", "Score: 9.5". The last explicit rating wins, as
    judges conclude at the end. No rating, or one outside 1-10, is a ScorerError."""
    plain = re.sub(r"[*_`#]", "", text)
    rating = _scaled_rating(plain)
    for find in (_labelled_rating, _leading_number, _lone_number):
        if rating is None:
            rating = find(plain)
    assert rating is not None  # _lone_number raises rather than return None
    if not 1 <= rating <= 10:
        raise ScorerError(f"the judge's rating {rating:g} is outside 1-10: {_excerpt(text)}")
    return rating


def _scaled_rating(text: str) -> float | None:
    matches = SCALE_RE.findall(text)
    if not matches:
        return None
    value, scale = matches[-1]
    if float(scale) != 10:
        raise ScorerError(f"the judge rated on a scale of {scale}, not 1-10: {_excerpt(text)}")
    return float(value)


def _labelled_rating(text: str) -> float | None:
    matches = LABEL_RE.findall(text)
    return float(matches[-1]) if matches else None


def _leading_number(text: str) -> float | None:
    # "7\n\nThe answer misses 2 details": asked for a number, judges put it first.
    match = LEADING_RE.match(text)
    return float(match.group(1)) if match else None


def _lone_number(text: str) -> float:
    numbers = {float(n) for n in NUMBER_RE.findall(RANGE_RE.sub(" ", text))}
    if not numbers:
        raise ScorerError(f"the judge gave no rating: {_excerpt(text)}")
    if len(numbers) > 1:
        found = ", ".join(f"{n:g}" for n in sorted(numbers))
        raise ScorerError(f"the judge's answer is ambiguous ({found}): {_excerpt(text)}")
    return numbers.pop()


def _excerpt(text: str, limit: int = 200) -> str:
    text = text.strip()
    return repr(text if len(text) <= limit else text[:limit] + "…")


def render_input(input_data: dict[str, Any]) -> str:
    """The item's fields as `key: value` lines, non-strings as JSON."""
    lines = []
    for key, value in input_data.items():
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        lines.append(f"{key}: {shown}")
    return "\n".join(lines)


@register_scorer
class LLMJudgeScorer(BaseScorer):
    """A judge model rates the output 1-10; score = (rating - 1) / 9.

    `prompt` is a Jinja template (sandboxed, strict) with {{ input }},
    {{ output }} and {{ reference }}. The call goes through the response cache;
    tokens of uncached calls are reported for the sweep budget. A judge answer
    without a usable rating raises ScorerCallError, which carries the tokens.
    """

    type = "llm_judge"
    description = "A judge model rates the output from 1 to 10."
    costs_tokens = True

    @dataclasses.dataclass
    class Options:
        endpoint: str = ""  # an endpoint's name; default: the run's endpoint
        model: str = ""  # default: the judge endpoint's default model
        prompt: str = DEFAULT_PROMPT
        temperature: float = 0.0
        max_tokens: int = 32

    def __init__(self, config: dict[str, Any] | None = None, name: str = ""):
        self.template: jinja2.Template | None = None
        super().__init__(config, name)

    def check_options(self) -> None:
        if not 0 <= self.options.temperature <= 2:
            raise self.config_error(f"temperature must be between 0 and 2, got {self.options.temperature}")
        if self.options.max_tokens < 1:
            raise self.config_error(f"max_tokens must be 1 or more, got {self.options.max_tokens}")
        self.template = self.compile_prompt(self.options.prompt)

    def compile_prompt(self, prompt: str) -> jinja2.Template:
        try:
            used = meta.find_undeclared_variables(_ENV.parse(prompt))
            template = _ENV.from_string(prompt)
        except jinja2.TemplateSyntaxError as error:
            raise self.config_error(f"prompt line {error.lineno}: {error.message}") from None
        unknown = used - PROMPT_VARIABLES
        if unknown:
            raise self.config_error(
                f"prompt uses {', '.join(sorted(unknown))}; "
                f"only {{{{ input }}}}, {{{{ output }}}} and {{{{ reference }}}} exist"
            )
        if "output" not in used:
            raise self.config_error("prompt never shows the judge the {{ output }} to rate")
        return template

    def resolve_endpoint(self, context: ScoreContext) -> EndpointConfig:
        name = self.options.endpoint
        if not name:
            if context.endpoint is None:
                raise self.config_error("no endpoint to judge with; set the 'endpoint' option")
            return context.endpoint
        if context.endpoint is not None and context.endpoint.name == name:
            return context.endpoint
        if name not in context.endpoints:
            known = ", ".join(sorted(context.endpoints)) or "(none)"
            raise self.config_error(f"judge endpoint '{name}' is not configured; known endpoints: {known}")
        return context.endpoints[name]

    def render(self, input_data: dict, output: str, context: ScoreContext) -> str:
        assert self.template is not None  # compiled in check_options
        try:
            return self.template.render(
                input=render_input(input_data), output=output, reference=context.reference
            )
        except jinja2.TemplateError as error:
            raise self.config_error(f"prompt failed to render: {error}") from None

    async def score_async(self, input_data: dict, output: str, context: ScoreContext) -> ScoreOutcome:
        if context.llm is None:
            raise ScorerError(f"{self.label} needs an LLM client in the score context")
        endpoint = self.resolve_endpoint(context)
        model = self.options.model or endpoint.default_model
        if not model:
            raise self.config_error(
                f"no model to judge with; set the 'model' option or endpoint '{endpoint.name}''s default model"
            )
        messages = [{"role": "user", "content": self.render(input_data, output, context)}]
        params = {"temperature": self.options.temperature, "max_tokens": self.options.max_tokens}
        result: CallResult = await context.llm.complete(endpoint, messages, model, params)
        return self.judged(result, endpoint, model)

    def judged(self, result: CallResult, endpoint: EndpointConfig, model: str) -> ScoreOutcome:
        response = result.response
        # Cached answers cost nothing this time, so they do not count toward the budget.
        tokens_in, tokens_out = (0, 0) if result.cached else (response.tokens_in, response.tokens_out)
        details: dict[str, Any] = {
            "raw": response.text,
            "endpoint": endpoint.name,
            "model": model,
            "cached": result.cached,
        }
        try:
            rating = parse_rating(response.text)
        except ScorerError as error:
            raise ScorerCallError(f"{self.label}: {error}", tokens_in, tokens_out, details) from None
        details["rating"] = rating
        return self.outcome((rating - 1) / 9, details, tokens_in, tokens_out)
