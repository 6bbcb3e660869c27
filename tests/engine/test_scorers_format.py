"""Format scorer: JSON, Markdown, length and JSON Schema checks."""

from __future__ import annotations

import pytest

from engine.scorers import build_scorer
from engine.scorers.format import count_tokens, strip_fence
from engine.types import ScoreContext, ScorerError, ScorerSpec


def fmt(**config):
    return build_scorer(ScorerSpec(type="format", config=config))


def evaluate(scorer, output):
    return scorer.evaluate({}, output, ScoreContext())


# --- json --------------------------------------------------------------------


def test_json_output_scores_one_and_anything_else_zero():
    scorer = fmt(check="json")
    assert evaluate(scorer, '{"city": "Zürich"}').value == 1.0
    assert evaluate(scorer, "[1, 2]").value == 1.0
    outcome = evaluate(scorer, "{'city': 'Zürich'}")
    assert outcome.value == 0.0
    assert outcome.details["error"].startswith("not valid JSON")


def test_empty_output_is_not_json():
    assert evaluate(fmt(check="json"), "").value == 0.0
    assert evaluate(fmt(check="json"), "   \n").value == 0.0


def test_a_fence_around_the_whole_output_is_stripped():
    scorer = fmt(check="json")
    assert evaluate(scorer, '```json\n{"a": 1}\n```').value == 1.0
    assert evaluate(scorer, '  ```\n{"a": 1}\n```\n').value == 1.0
    assert evaluate(scorer, '```{"a": 1}```').value == 1.0


def test_fence_stripping_can_be_turned_off():
    assert evaluate(fmt(check="json", strip_fence=False), '```json\n{"a": 1}\n```').value == 0.0


def test_prose_around_a_fence_is_not_json():
    assert evaluate(fmt(check="json"), 'Here it is:\n```json\n{"a": 1}\n```').value == 0.0


def test_strip_fence_keeps_an_inline_body_that_looks_like_a_tag():
    assert strip_fence("```true```") == "true"
    assert strip_fence("```python\nx = 1\n```") == "x = 1\n"
    assert strip_fence("no fence") == "no fence"


# --- markdown ----------------------------------------------------------------


def test_markdown_scores_half_for_a_header_and_half_for_a_list():
    scorer = fmt(check="markdown")
    assert evaluate(scorer, "# Title\n\n- one\n- two").value == 1.0
    assert evaluate(scorer, "## Title\n\nplain text").value == 0.5
    assert evaluate(scorer, "intro\n1. first\n2. second").value == 0.5
    assert evaluate(scorer, "* starred item").value == 0.5
    outcome = evaluate(scorer, "just prose, **bold** and #hashtag\n---")
    assert outcome.value == 0.0
    assert outcome.details == {"header": False, "list": False}


def test_markdown_ignores_comments_inside_code_blocks():
    assert evaluate(fmt(check="markdown"), "```python\n# a comment\n```\n- item").value == 0.5


def test_markdown_on_empty_output_is_zero():
    assert evaluate(fmt(check="markdown"), "").value == 0.0


# --- length ------------------------------------------------------------------


def test_tokens_are_whitespace_separated_words():
    assert count_tokens("  one two\nthree\tfour ") == 4
    assert count_tokens("") == 0


def test_length_inside_the_range_scores_one():
    scorer = fmt(check="length", min_tokens=2, max_tokens=4)
    assert evaluate(scorer, "one two").value == 1.0
    assert evaluate(scorer, "one two three four").value == 1.0


def test_length_outside_the_range_scores_proportionally():
    scorer = fmt(check="length", min_tokens=4, max_tokens=5)
    assert evaluate(scorer, "one").value == pytest.approx(1 / 4)
    assert evaluate(scorer, "a b c d e f g h i j").value == pytest.approx(5 / 10)
    assert evaluate(scorer, "one").details == {"tokens": 1, "min_tokens": 4, "max_tokens": 5}


def test_length_of_empty_output_is_zero():
    assert evaluate(fmt(check="length", max_tokens=10), "").value == 0.0
    assert evaluate(fmt(check="length", min_tokens=0), "").value == 0.0


def test_length_with_one_bound():
    assert evaluate(fmt(check="length", min_tokens=2), " ".join(["w"] * 500)).value == 1.0
    assert evaluate(fmt(check="length", max_tokens=2), "w").value == 1.0


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "needs min_tokens, max_tokens or both"),
        ({"min_tokens": -1}, "min_tokens must be 0 or more"),
        ({"max_tokens": 0}, "max_tokens must be 1 or more"),
        ({"min_tokens": 10, "max_tokens": 5}, "min_tokens \\(10\\) is larger than max_tokens \\(5\\)"),
        ({"min_tokens": "10"}, "'min_tokens' must be an integer or null"),
    ],
)
def test_bad_length_bounds_fail_at_validation(config, message):
    with pytest.raises(ScorerError, match=message):
        fmt(check="length", **config)


# --- structure ---------------------------------------------------------------

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
}


def test_output_valid_under_the_schema_scores_one():
    scorer = fmt(check="structure", schema=PERSON)
    assert evaluate(scorer, '{"name": "東京 Taro", "age": 30}').value == 1.0
    assert evaluate(scorer, '```json\n{"name": "Ann", "age": 3}\n```').value == 1.0


def test_invalid_output_carries_the_first_validation_error():
    outcome = evaluate(fmt(check="structure", schema=PERSON), '{"name": "Ann", "age": -1}')
    assert outcome.value == 0.0
    assert outcome.details == {"error": "-1 is less than the minimum of 0", "path": "$.age"}
    missing = evaluate(fmt(check="structure", schema=PERSON), '{"name": "Ann"}')
    assert "'age' is a required property" in missing.details["error"]


def test_output_that_is_not_json_fails_the_structure_check():
    outcome = evaluate(fmt(check="structure", schema=PERSON), "Ann, 30")
    assert outcome.value == 0.0
    assert outcome.details["error"].startswith("not valid JSON")
    assert evaluate(fmt(check="structure", schema=PERSON), "").value == 0.0


def test_formats_in_the_schema_are_checked():
    scorer = fmt(check="structure", schema={"type": "string", "format": "email"})
    assert evaluate(scorer, '"ann@example.com"').value == 1.0
    assert evaluate(scorer, '"not an email"').value == 0.0


def test_an_invalid_schema_fails_at_validation_naming_the_problem():
    with pytest.raises(ScorerError, match="not a valid JSON Schema: 'objekt' is not valid.* at \\$.type"):
        fmt(check="structure", schema={"type": "objekt"})


def test_structure_needs_a_schema():
    with pytest.raises(ScorerError, match="needs a 'schema'"):
        fmt(check="structure")


def test_a_remote_ref_is_an_error_saying_to_inline_it():
    scorer = fmt(check="structure", schema={"$ref": "https://example.invalid/person.json"})
    with pytest.raises(ScorerError, match="cannot be fetched; inline"):
        evaluate(scorer, "{}")


# --- options -----------------------------------------------------------------


def test_an_unknown_check_lists_the_allowed_ones():
    with pytest.raises(ScorerError, match="'check' must be one of 'json', 'markdown', 'length', 'structure'"):
        fmt(check="yaml")


def test_an_option_for_another_check_is_rejected():
    with pytest.raises(ScorerError, match="'schema' does not apply to check 'json', only to structure"):
        fmt(check="json", schema=PERSON)
    with pytest.raises(ScorerError, match="'strip_fence' does not apply to check 'markdown'"):
        fmt(check="markdown", strip_fence=False)
    with pytest.raises(ScorerError, match="'max_tokens' does not apply to check 'json', only to length"):
        fmt(check="json", max_tokens=5)


def test_an_unknown_option_is_rejected_naming_it():
    with pytest.raises(ScorerError, match="format scorer: unknown option 'max_token'"):
        fmt(check="length", max_token=5)


@pytest.mark.asyncio
async def test_score_async_carries_the_details():
    outcome = await fmt(check="length", max_tokens=1).score_async({}, "two words", ScoreContext())
    assert outcome.value == 0.5
    assert outcome.details["tokens"] == 2
