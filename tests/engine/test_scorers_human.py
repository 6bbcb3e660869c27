"""Human ratings: a mean of what reviewers gave, or "not scored yet"."""

from __future__ import annotations

import pytest

from engine.scorers import build_scorer
from engine.scorers.human import rating_to_score
from engine.types import ScoreContext, ScorerError, ScorerSpec


def human():
    return build_scorer(ScorerSpec(type="human"))


@pytest.mark.asyncio
async def test_the_score_is_the_mean_of_the_ratings():
    outcome = await human().score_async({}, "out", ScoreContext(human_scores=[1.0, 0.5, 0.0]))
    assert outcome.value == pytest.approx(0.5)
    assert outcome.details == {"ratings": 3}
    assert outcome.tokens_in == outcome.tokens_out == 0


@pytest.mark.asyncio
async def test_without_ratings_the_item_is_not_scored_yet():
    outcome = await human().score_async({}, "out", ScoreContext())
    assert outcome.value is None
    assert outcome.details == {"ratings": 0}


def test_sync_score_without_ratings_says_there_is_no_score_yet():
    with pytest.raises(ScorerError, match="no score for this item yet") as error:
        human().score({}, "out", ScoreContext())
    assert not error.value.permanent


def test_sync_score_with_one_rating():
    assert human().score({}, "out", ScoreContext(human_scores=[rating_to_score(10)])) == 1.0


def test_ratings_map_like_the_judge():
    assert rating_to_score(1) == 0.0
    assert rating_to_score(10) == 1.0
    assert rating_to_score(7) == pytest.approx(6 / 9)


@pytest.mark.parametrize("rating", [0, 11, -3, 7.5, True, "7", None])
def test_ratings_outside_one_to_ten_are_refused(rating):
    with pytest.raises(ScorerError, match="whole number from 1 to 10"):
        rating_to_score(rating)


def test_human_takes_no_options():
    with pytest.raises(ScorerError, match="unknown option 'scale'"):
        build_scorer(ScorerSpec(type="human", config={"scale": 5}))
