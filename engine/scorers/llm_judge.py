"""A model rates the output from 1 to 10, in a fixed form that is read strictly."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import statistics
from typing import Any

import jinja2
from jinja2 import meta

from engine.adapters import adapter_class
from engine.scorers.base import BaseScorer, ModelCalls, ScorerCallError, register_scorer
from engine.templates import BoundedEnvironment, from_string, render_compiled
from engine.types import (
    AdapterError,
    CallResult,
    EndpointConfig,
    LLMClient,
    Messages,
    ScoreContext,
    ScoreOutcome,
    ScorerError,
    TemplateError,
)

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
Reply with JSON only, in the form {"rating": N}, where N is a whole number from 1 to 10."""

PROMPT_VARIABLES = {"input", "output", "reference"}

# Bounded like the stages' prompts (engine/templates.py): a judge prompt is a template too.
_ENV = BoundedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)

RATING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"rating": {"type": "integer", "enum": list(range(1, 11))}},
    "required": ["rating"],
    "additionalProperties": False,
}
# The forms of `response_format` that servers know, tried in this order; a server
# that turns one down is asked in the next, then in none (the prompt still asks).
RESPONSE_FORMATS: tuple[tuple[str, dict[str, Any]], ...] = (
    # OpenAI, vLLM, llama.cpp's llama-server, Ollama >= 0.5
    (
        "json_schema",
        {"type": "json_schema", "json_schema": {"name": "rating", "strict": True, "schema": RATING_SCHEMA}},
    ),
    # llama-cpp-python's server (the bundled local model) knows only this one
    ("json_object", {"type": "json_object", "schema": RATING_SCHEMA}),
)
# How servers refuse a response_format they do not know: FastAPI answers 422,
# OpenAI and vLLM 400, some llama.cpp forks 500.
REJECTED_STATUSES = frozenset({400, 422, 500})
MAX_SAMPLES = 20

RATING = r"(-?\d+(?:\.\d+)?)"
OUT_OF_TEN = r"(?:\s*/\s*10)?"
BARE_RE = re.compile(RATING + OUT_OF_TEN + r"\.?")
LABEL_RE = re.compile(
    r"^[ \t]*rating[ \t]*[:=][ \t]*" + RATING + OUT_OF_TEN + r"[ \t]*\.?[ \t]*$", re.IGNORECASE | re.MULTILINE
)
FENCE_RE = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.DOTALL | re.IGNORECASE)
EMPHASIS_RE = re.compile(r"[*_`#]")


def parse_rating(text: str) -> float:
    """The 1-10 rating in a judge's reply, read strictly. Three forms count: the
    JSON object {"rating": N} (alone, or alone in a ``` block), a line of its own
    "Rating: N", or a reply that is nothing but N (or N/10). A number anywhere
    else is chatter, not a rating: "The answer to the task is 1." raises ScorerError."""
    rating = _json_rating(text)
    if rating is None:
        plain = EMPHASIS_RE.sub("", text).strip()
        rating = _bare_rating(plain)
        if rating is None:
            rating = _labelled_rating(plain)
    if rating is None:
        raise ScorerError(
            f'the judge\'s reply is not a rating in the form {{"rating": N}} or "Rating: N": {_excerpt(text)}'
        )
    if not 1 <= rating <= 10:
        raise ScorerError(f"the judge's rating {rating:g} is outside 1-10: {_excerpt(text)}")
    return rating


def _json_rating(text: str) -> float | None:
    body = text.strip()
    fenced = FENCE_RE.fullmatch(body)
    body = fenced.group(1) if fenced else body
    if not body.startswith("{"):
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None  # cut off by max_tokens, or text after the object: not the fixed form
    if not isinstance(data, dict) or "rating" not in data:
        raise ScorerError(f'the judge\'s JSON has no "rating": {_excerpt(text)}')
    value = data["rating"]
    if isinstance(value, str) and re.fullmatch(RATING, value.strip()):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScorerError(f'the judge\'s "rating" is not a number: {_excerpt(text)}')
    return float(value)


def _bare_rating(text: str) -> float | None:
    match = BARE_RE.fullmatch(text)
    return float(match.group(1)) if match else None


def _labelled_rating(text: str) -> float | None:
    found = {float(value) for value in LABEL_RE.findall(text)}
    if len(found) > 1:
        shown = ", ".join(f"{v:g}" for v in sorted(found))
        raise ScorerError(f"the judge's reply gives several ratings ({shown}): {_excerpt(text)}")
    return found.pop() if found else None


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


def prompt_variables(input_data: dict[str, Any], reference: str, output: str = "") -> dict[str, Any]:
    """What the judge prompt's template reads."""
    return {"input": render_input(input_data), "output": output, "reference": reference}


def _positive(value: Any, default: int) -> int:
    whole = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    return int(value) if whole else default


@dataclasses.dataclass
class Reply:
    result: CallResult
    structured: str | None  # the response_format form the server took, if any


@register_scorer
class LLMJudgeScorer(BaseScorer):
    """A judge model rates the output 1-10; score = (mean rating - 1) / 9.

    `prompt` is a Jinja template (sandboxed, strict) with {{ input }},
    {{ output }} and {{ reference }}. With `samples` k > 1 the judge is asked k
    times (each its own cache entry, like repeats), the score is the mean rating
    and the spread (std over the k) is recorded. Calls go through the response
    cache; tokens of uncached calls are reported for the sweep budget. When no
    reply holds a rating, ScorerCallError carries the replies and the tokens.
    With `threshold` (0-1) the score is a pass/fail: 1 when (mean rating - 1) / 9
    reaches it, else 0 (promptfoo's `llm-rubric` threshold). With `only_if_field`,
    items whose field of that name is missing or empty get no score and no call
    (a rubric that applies to some rows only).
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
        samples: int = 1  # times the judge is asked per output
        structured: bool = True  # ask for JSON-schema output where the adapter can
        threshold: float | None = None
        only_if_field: str = ""

    def __init__(self, config: dict[str, Any] | None = None, name: str = ""):
        self.template: jinja2.Template | None = None
        # Per endpoint, the first response_format form not yet turned down. A
        # scorer lives for one run, so a server upgraded meanwhile is asked again.
        self.first_form: dict[str, int] = {}
        super().__init__(config, name)

    @classmethod
    def model_calls(cls, config: dict[str, Any]) -> ModelCalls:
        defaults = cls.Options()
        return ModelCalls(
            prompt=str(config.get("prompt") or defaults.prompt),
            calls=_positive(config.get("samples"), defaults.samples),
            max_tokens=_positive(config.get("max_tokens"), defaults.max_tokens),
            variables=prompt_variables,
        )

    def check_options(self) -> None:
        if not 0 <= self.options.temperature <= 2:
            raise self.config_error(f"temperature must be between 0 and 2, got {self.options.temperature}")
        if self.options.max_tokens < 1:
            raise self.config_error(f"max_tokens must be 1 or more, got {self.options.max_tokens}")
        if not 1 <= self.options.samples <= MAX_SAMPLES:
            raise self.config_error(f"samples must be from 1 to {MAX_SAMPLES}, got {self.options.samples}")
        threshold = self.options.threshold
        if threshold is not None and not 0 <= threshold <= 1:
            raise self.config_error(f"threshold must be between 0 and 1, got {threshold}")
        self.template = self.compile_prompt(self.options.prompt)

    def compile_prompt(self, prompt: str) -> jinja2.Template:
        try:
            used = meta.find_undeclared_variables(_ENV.parse(prompt))
            template = from_string(_ENV, prompt)
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
            variables = prompt_variables(input_data, context.reference, output)
            return render_compiled(self.template, variables)
        except (jinja2.TemplateError, TemplateError) as error:
            raise self.config_error(f"prompt failed to render: {error}") from None

    async def score_async(self, input_data: dict, output: str, context: ScoreContext) -> ScoreOutcome:
        field = self.options.only_if_field
        if field and not str(input_data.get(field) or "").strip():
            return self.outcome(None, {"skipped": f"the item has no '{field}'"})
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
        asks = (
            self.ask(context.llm, endpoint, messages, model, params, s) for s in range(self.options.samples)
        )
        return self.judged(list(await asyncio.gather(*asks)), endpoint, model)

    async def ask(
        self,
        llm: LLMClient,
        endpoint: EndpointConfig,
        messages: Messages,
        model: str,
        params: dict,
        sample: int,
    ) -> Reply:
        """One sample, in the first structured form the server takes, else plain."""
        for form in self.forms(endpoint):
            name, response_format = RESPONSE_FORMATS[form]
            try:
                structured = {**params, "response_format": response_format}
                return Reply(await llm.complete(endpoint, messages, model, structured, sample), name)
            except AdapterError as error:
                if not turned_down(error):
                    raise
                self.first_form[endpoint.name] = max(self.first_form.get(endpoint.name, 0), form + 1)
        return Reply(await llm.complete(endpoint, messages, model, params, sample), None)

    def forms(self, endpoint: EndpointConfig) -> range:
        if not self.options.structured or not adapter_class(endpoint).can_structured_output:
            return range(0)
        return range(self.first_form.get(endpoint.name, 0), len(RESPONSE_FORMATS))

    def judged(self, replies: list[Reply], endpoint: EndpointConfig, model: str) -> ScoreOutcome:
        ratings, errors = read_ratings([reply.result.response.text for reply in replies])
        # Cached answers cost nothing this time, so they do not count toward the budget.
        fresh = [reply.result.response for reply in replies if not reply.result.cached]
        tokens_in, tokens_out = sum(r.tokens_in for r in fresh), sum(r.tokens_out for r in fresh)
        details: dict[str, Any] = {
            "raw": [reply.result.response.text for reply in replies],
            "ratings": ratings,
            "endpoint": endpoint.name,
            "model": model,
            "structured": replies[0].structured,
            "cached": not fresh,
        }
        parsed = [rating for rating in ratings if rating is not None]
        if not parsed:
            raise ScorerCallError(f"{self.label}: {errors[0]}", tokens_in, tokens_out, details)
        rating = statistics.fmean(parsed)
        spread = statistics.pstdev(parsed) if len(parsed) > 1 else None
        details.update(rating=rating, spread=spread, unparsed=len(errors))
        value = (rating - 1) / 9
        if self.options.threshold is not None:
            value = float(value >= self.options.threshold)
        return self.outcome(value, details, tokens_in, tokens_out, spread)


def read_ratings(texts: list[str]) -> tuple[list[float | None], list[str]]:
    """Each reply's rating (None where it has none) and the errors of those without."""
    ratings: list[float | None] = []
    errors: list[str] = []
    for text in texts:
        try:
            ratings.append(parse_rating(text))
        except ScorerError as error:
            ratings.append(None)
            errors.append(str(error))
    return ratings, errors


def turned_down(error: AdapterError) -> bool:
    """Whether the server refused the request's response_format (and may take another)."""
    text = str(error).lower()
    return error.status in REJECTED_STATUSES and ("response_format" in text or "schema" in text)
