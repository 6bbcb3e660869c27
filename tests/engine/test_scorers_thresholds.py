"""Pass/fail thresholds and row-specific checks of the embedding and judge scorers
(promptfoo's `similar` and `llm-rubric` map to them)."""

import pytest

from engine.scorers import build_scorer
from engine.types import ScoreContext, ScorerError, ScorerSpec
from tests.engine.test_scorers_embedding import LOCAL, VECTORS, FakeEmbedder
from tests.engine.test_scorers_llm_judge import ITEM, FakeJudge, context


def embedding(**config):
    return build_scorer(ScorerSpec(type="embedding", config=config))


def judge(**config):
    return build_scorer(ScorerSpec(type="llm_judge", name="judge", config=config))


def embed_context(reference: str = ""):
    return ScoreContext(reference=reference, endpoint=LOCAL, llm=FakeEmbedder(VECTORS))


@pytest.mark.asyncio
async def test_a_similarity_threshold_turns_the_cosine_into_pass_or_fail():
    halfway = 1 / 2**0.5  # cosine of "halfway" with the reference
    assert (await embedding().score_async({}, "halfway", embed_context("Zurich, Switzerland"))).value == (
        pytest.approx(halfway)
    )
    passed = await embedding(threshold=0.7).score_async({}, "halfway", embed_context("Zurich, Switzerland"))
    failed = await embedding(threshold=0.75).score_async({}, "halfway", embed_context("Zurich, Switzerland"))
    assert (passed.value, failed.value) == (1.0, 0.0)
    assert failed.details["cosine"] == pytest.approx(halfway)


@pytest.mark.asyncio
async def test_a_reference_field_compares_with_that_field_and_skips_rows_without_it():
    scorer = embedding(reference_field="expected")
    outcome = await scorer.score_async(
        {"expected": "Zurich, Switzerland"}, "Zürich is in Switzerland", embed_context()
    )
    assert outcome.value == pytest.approx(1.0)
    skipped = await scorer.score_async({"other": "x"}, "Zürich is in Switzerland", embed_context("unrelated"))
    assert skipped.value is None and skipped.details == {"skipped": "the item has no 'expected'"}


def test_a_threshold_outside_the_cosine_range_is_refused():
    with pytest.raises(ScorerError, match="between -1 and 1"):
        embedding(threshold=1.5)
    with pytest.raises(ScorerError, match="between 0 and 1"):
        judge(threshold=-0.1)


@pytest.mark.asyncio
async def test_a_judge_threshold_turns_the_rating_into_pass_or_fail():
    llm = FakeJudge("7", "7")
    assert (await judge(threshold=0.6).score_async(ITEM, "Paris", context(llm))).value == 1.0  # 6/9 >= 0.6
    assert (await judge(threshold=0.7).score_async(ITEM, "Paris", context(llm))).value == 0.0


@pytest.mark.asyncio
async def test_a_judge_only_if_field_asks_nothing_for_rows_without_it():
    llm = FakeJudge("9")
    scorer = judge(only_if_field="rubric")
    skipped = await scorer.score_async({"question": "q"}, "Paris", context(llm))
    assert skipped.value is None and llm.calls == []
    judged = await scorer.score_async({"question": "q", "rubric": "names Paris"}, "Paris", context(llm))
    assert judged.value == pytest.approx(8 / 9) and len(llm.calls) == 1
