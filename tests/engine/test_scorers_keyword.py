"""Keyword scorer: required and forbidden words, field references, unicode."""

from __future__ import annotations

import pytest

from engine.scorers import build_scorer
from engine.types import ScoreContext, ScorerError, ScorerSpec


def keyword(**config):
    return build_scorer(ScorerSpec(type="keyword", config=config))


def score(scorer, output, input_data=None, reference=""):
    return scorer.score(input_data or {}, output, ScoreContext(reference=reference))


def test_the_score_is_the_share_of_satisfied_conditions():
    scorer = keyword(required_present=["Paris", "France"], required_absent=["sorry", "Lyon"])
    assert score(scorer, "Paris is the capital of France.") == 1.0
    assert score(scorer, "Sorry, Paris.") == 0.5
    assert score(scorer, "Sorry, Lyon.") == 0.0


def test_details_list_the_failed_conditions():
    scorer = keyword(required_present=["Paris", "France"], required_absent=["sorry"])
    outcome = scorer.evaluate({}, "Sorry, it is Paris.", ScoreContext())
    assert outcome.value == pytest.approx(1 / 3)
    assert outcome.details == {"missing": ["France"], "unexpected": ["sorry"], "satisfied": 1, "total": 3}


def test_empty_output_fails_every_required_keyword_and_no_forbidden_one():
    scorer = keyword(required_present=["Paris"], required_absent=["sorry"])
    assert score(scorer, "") == 0.5


def test_matching_ignores_case_unless_asked():
    assert score(keyword(required_present=["paris"]), "PARIS") == 1.0
    assert score(keyword(required_present=["paris"], case_sensitive=True), "PARIS") == 0.0
    assert score(keyword(required_present=["Paris"], case_sensitive=True), "Paris") == 1.0


def test_substring_matching_is_the_default_and_whole_word_is_stricter():
    assert score(keyword(required_present=["cat"]), "concatenate") == 1.0
    assert score(keyword(required_present=["cat"], whole_word=True), "concatenate") == 0.0
    assert score(keyword(required_present=["cat"], whole_word=True), "the cat, sat") == 1.0


def test_whole_word_works_for_keywords_ending_in_punctuation():
    scorer = keyword(required_present=["C++"], whole_word=True)
    assert score(scorer, "I write C++ daily") == 1.0
    assert score(scorer, "I write C++11 daily") == 0.0


def test_keywords_are_literal_text_not_regular_expressions():
    assert score(keyword(required_present=["a.c"]), "abc") == 0.0
    assert score(keyword(required_present=["(x)"]), "f(x) = 1") == 1.0


def test_unicode_keywords_match_case_insensitively_and_as_whole_words():
    scorer = keyword(required_present=["zürich"], whole_word=True)
    assert score(scorer, "Ich wohne in ZÜRICH.") == 1.0
    assert score(scorer, "Zürichsee") == 0.0
    # Letters with accents count as word characters, so "Zür" is not a word in "Zürich".
    assert score(keyword(required_present=["Zür"], whole_word=True), "Zürich") == 0.0


def test_composed_and_decomposed_accents_are_the_same_text():
    decomposed = "Zu\u0308rich"
    assert score(keyword(required_present=["Zürich"]), decomposed) == 1.0


def test_japanese_keywords_match_as_substrings():
    assert score(keyword(required_present=["東京"]), "首都は東京都です") == 1.0
    # Japanese has no spaces: whole-word matching only finds it between non-letters.
    assert score(keyword(required_present=["東京"], whole_word=True), "首都は東京都です") == 0.0
    assert score(keyword(required_present=["東京"], whole_word=True), "首都: 東京。") == 1.0


def test_a_keyword_can_refer_to_the_items_fields_and_reference():
    scorer = keyword(
        required_present=["{{ capital }}", "{{reference}}"], required_absent=["not {{ capital }}"]
    )
    item = {"capital": "Paris", "country": "France"}
    assert score(scorer, "Paris, the capital of France", item, reference="France") == 1.0
    assert score(scorer, "It is not Paris", item, reference="France") == pytest.approx(1 / 3)


def test_field_references_are_substituted_not_executed():
    scorer = keyword(required_present=["{{ code }}"])
    assert score(scorer, "the text {{ 7*7 }} appears", {"code": "{{ 7*7 }}"}) == 1.0
    assert score(scorer, "49", {"code": "{{ 7*7 }}"}) == 0.0


def test_a_non_string_field_is_matched_as_text():
    assert score(keyword(required_present=["{{ year }}"]), "in 1889", {"year": 1889}) == 1.0


def test_a_missing_field_is_an_error_naming_it():
    scorer = keyword(required_present=["{{ capitol }}"])
    with pytest.raises(ScorerError, match="no field 'capitol'.*capital, country, and reference"):
        score(scorer, "Paris", {"capital": "Paris", "country": "France"})


def test_an_empty_field_or_reference_is_an_error_not_a_free_match():
    with pytest.raises(ScorerError, match="the item's 'reference' is empty"):
        score(keyword(required_present=["{{ reference }}"]), "anything")
    with pytest.raises(ScorerError, match="the item's 'capital' is empty"):
        score(keyword(required_present=["{{ capital }}"]), "anything", {"capital": None})


def test_a_config_without_conditions_fails_at_validation():
    with pytest.raises(ScorerError, match="at least one keyword"):
        keyword()
    with pytest.raises(ScorerError, match="at least one keyword"):
        keyword(required_present=[], required_absent=[], whole_word=True)


def test_an_empty_keyword_fails_at_validation():
    with pytest.raises(ScorerError, match="keywords cannot be empty"):
        keyword(required_present=["Paris", "  "])


def test_template_logic_in_a_keyword_fails_at_validation():
    with pytest.raises(ScorerError, match="only simple field references"):
        keyword(required_present=["{{ item.capital }}"])
    with pytest.raises(ScorerError, match="only simple field references"):
        keyword(required_absent=["{% if x %}}}"])


@pytest.mark.asyncio
async def test_score_async_carries_the_details():
    outcome = await keyword(required_present=["Paris"]).score_async({}, "Lyon", ScoreContext())
    assert outcome.value == 0.0
    assert outcome.details["missing"] == ["Paris"]
