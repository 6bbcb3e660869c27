"""The keyword scorer's match kinds, pass/fail modes and optional fields."""

import pytest

from engine.scorers.keyword import KeywordScorer
from engine.types import ScoreContext, ScorerError


def score(config: dict, output: str, item: dict | None = None, reference: str = "") -> float | None:
    return KeywordScorer(config).evaluate(item or {}, output, ScoreContext(reference=reference)).value


def test_equals_matches_the_whole_output_only():
    assert score({"required_present": ["4"], "match": "equals"}, " 4\n") == 1.0
    assert score({"required_present": ["4"], "match": "equals"}, "about 4") == 0.0


def test_starts_with_looks_at_the_beginning():
    config = {"required_present": ["Yes"], "match": "starts_with", "case_sensitive": True}
    assert score(config, "Yes, it is.") == 1.0
    assert score(config, "It is. Yes") == 0.0


def test_regex_patterns_match_and_a_field_can_hold_the_pattern():
    assert score({"required_present": [r"\d{3}-\d{4}"], "match": "regex"}, "call 555-1234") == 1.0
    config = {"required_present": ["^{{ pattern }}$"], "match": "regex"}
    assert score(config, "Lima", {"pattern": "L[a-z]+"}) == 1.0
    assert score(config, "Lima, Peru", {"pattern": "L[a-z]+"}) == 0.0
    with pytest.raises(ScorerError, match="is not valid"):
        score(config, "Lima", {"pattern": "(L"})


def test_an_invalid_pattern_is_refused_when_configured():
    with pytest.raises(ScorerError, match="not a valid regular expression"):
        KeywordScorer({"required_present": ["(unclosed"], "match": "regex"})


def test_mode_all_and_any_turn_the_fraction_into_pass_or_fail():
    words = {"required_present": ["red", "blue"]}
    assert score(words, "red only") == 0.5
    assert score({**words, "mode": "all"}, "red only") == 0.0
    assert score({**words, "mode": "any"}, "red only") == 1.0
    assert score({"required_absent": ["red", "blue"], "mode": "any"}, "red only") == 1.0


def test_skip_missing_gives_no_score_to_rows_without_the_field():
    config = {"required_present": ["{{ expected }}"], "skip_missing": True}
    assert score(config, "Paris", {"expected": "Paris"}) == 1.0
    assert score(config, "Paris", {"other": "x"}) is None
    with pytest.raises(ScorerError, match="no field 'expected'"):
        score({"required_present": ["{{ expected }}"]}, "Paris", {"other": "x"})


def test_an_unknown_option_is_refused():
    with pytest.raises(ScorerError, match="unknown option 'matches'"):
        KeywordScorer({"required_present": ["a"], "matches": "regex"})
    with pytest.raises(ScorerError, match="whole_word applies to match 'contains' only"):
        KeywordScorer({"required_present": ["a"], "match": "equals", "whole_word": True})
