"""Keywords that must, or must not, appear in the output."""

from __future__ import annotations

import dataclasses
import functools
import re
import unicodedata
from typing import Any, Literal

from engine.scorers.base import BaseScorer, register_scorer
from engine.types import ScoreContext, ScoreOutcome, ScorerError

# `{{ name }}` is plain substitution of one item field; no template is ever run.
REFERENCE_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


@register_scorer
class KeywordScorer(BaseScorer):
    """Score = satisfied conditions / all conditions.

    A keyword may be `{{ field }}`, replaced by that input field of the item, or
    `{{ reference }}` for the item's reference answer. `whole_word` matches only
    where the keyword is not flanked by letters or digits (any script); scripts
    written without spaces, like Japanese, rarely have such boundaries.

    `match` says what "appears" means: `contains` (the default), `equals` (the
    whole output, surrounding whitespace ignored), `starts_with`, or `regex` (each
    keyword is a pattern, and field values put into one are pattern text too).
    `mode` turns the fraction into a pass/fail: `all` is 1 only when every
    condition holds, `any` when one does. With `skip_missing`, an item whose
    referenced field is missing or empty gets no score from this scorer instead of
    an error (a check that applies to some rows only, as promptfoo's per-test asserts).
    """

    type = "keyword"
    description = "Checks that given keywords appear (or do not appear) in the output."

    @dataclasses.dataclass
    class Options:
        required_present: list[str] = dataclasses.field(default_factory=list)
        required_absent: list[str] = dataclasses.field(default_factory=list)
        case_sensitive: bool = False
        whole_word: bool = False
        match: Literal["contains", "equals", "starts_with", "regex"] = "contains"
        mode: Literal["fraction", "all", "any"] = "fraction"
        skip_missing: bool = False

    def check_options(self) -> None:
        keywords = self.options.required_present + self.options.required_absent
        if not keywords:
            raise self.config_error("give at least one keyword in required_present or required_absent")
        for keyword in keywords:
            if not keyword.strip():
                raise self.config_error("keywords cannot be empty; remove the empty entry")
            leftover = REFERENCE_RE.sub("", keyword)
            if "{{" in leftover or "}}" in leftover:
                raise self.config_error(
                    f"keyword {keyword!r}: only simple field references like "
                    "'{{ capital }}' or '{{ reference }}' are supported"
                )
            if self.options.match == "regex":
                self.check_pattern(keyword)
        if self.options.whole_word and self.options.match != "contains":
            raise self.config_error("whole_word applies to match 'contains' only; remove it or change match")

    def check_pattern(self, keyword: str) -> None:
        try:
            re.compile(REFERENCE_RE.sub("x", keyword))
        except re.error as error:
            raise self.config_error(
                f"pattern {keyword!r} is not a valid regular expression: {error}"
            ) from None

    def evaluate(self, input_data: dict, output: str, context: ScoreContext) -> ScoreOutcome:
        text = unicodedata.normalize("NFC", output)
        if self.options.skip_missing and self.lacks_fields(input_data, context):
            return self.outcome(None, {"skipped": "the item lacks a field this check refers to"})
        present = [self.resolve(k, input_data, context) for k in self.options.required_present]
        absent = [self.resolve(k, input_data, context) for k in self.options.required_absent]
        missing = [k for k in present if not self.found(k, text)]
        unexpected = [k for k in absent if self.found(k, text)]
        total = len(present) + len(absent)
        satisfied = total - len(missing) - len(unexpected)
        details = {"missing": missing, "unexpected": unexpected, "satisfied": satisfied, "total": total}
        return self.outcome(self.combine(satisfied, total), details)

    def combine(self, satisfied: int, total: int) -> float:
        if self.options.mode == "all":
            return float(satisfied == total)
        if self.options.mode == "any":
            return float(satisfied > 0)
        return satisfied / total

    def lacks_fields(self, input_data: dict, context: ScoreContext) -> bool:
        keywords = self.options.required_present + self.options.required_absent
        names = {m.group(1) for k in keywords for m in REFERENCE_RE.finditer(k)}
        values = {n: context.reference if n == "reference" else input_data.get(n) for n in names}
        return any(v is None or not str(v).strip() for v in values.values())

    def resolve(self, keyword: str, input_data: dict, context: ScoreContext) -> str:
        def field_value(match: re.Match[str]) -> str:
            return self.field_text(match.group(1), input_data, context)

        return unicodedata.normalize("NFC", REFERENCE_RE.sub(field_value, keyword))

    def field_text(self, name: str, input_data: dict, context: ScoreContext) -> str:
        value: Any
        if name == "reference":
            value = context.reference
        elif name in input_data:
            value = input_data[name]
        else:
            fields = ", ".join(sorted(input_data)) or "(none)"
            raise ScorerError(
                f"{self.label}: the item has no field '{name}' for '{{{{ {name} }}}}'; "
                f"its fields are: {fields}, and reference"
            )
        text = "" if value is None else str(value)
        if not text.strip():
            # An empty keyword would be found in every output and prove nothing.
            raise ScorerError(f"{self.label}: the item's '{name}' is empty; fill it in or drop the keyword")
        return text

    def found(self, keyword: str, text: str) -> bool:
        flags = 0 if self.options.case_sensitive else re.IGNORECASE
        if self.options.match == "regex":
            try:
                return _compiled(keyword, flags).search(text) is not None
            except re.error as error:  # a pattern made from an item's field
                raise ScorerError(f"{self.label}: pattern {keyword!r} is not valid: {error}") from None
        pattern = re.escape(keyword)
        if self.options.match == "equals":
            return _compiled(rf"\s*{pattern}\s*", flags).fullmatch(text) is not None
        if self.options.match == "starts_with":
            pattern = rf"\A{pattern}"
        if self.options.whole_word:
            # Lookarounds rather than \b, so keywords that start or end with
            # punctuation ("C++") still match as whole words.
            pattern = rf"(?<!\w){pattern}(?!\w)"
        return _compiled(pattern, flags).search(text) is not None


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str, flags: int) -> re.Pattern:
    # Keywords usually come from each dataset row ("{{ capital }}"), more than re's
    # own cache of 512 holds: every configuration would compile them again.
    return re.compile(pattern, flags)
