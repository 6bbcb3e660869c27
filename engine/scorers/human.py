"""Ratings people gave in the review UI."""

from __future__ import annotations

import dataclasses
from statistics import fmean

from engine.scorers.base import BaseScorer, register_scorer
from engine.types import ScoreContext, ScoreOutcome, ScorerError


def rating_to_score(rating: int) -> float:
    """A 1-10 rating as a score in [0, 1], the same mapping as the LLM judge."""
    if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 10:
        raise ScorerError(f"a rating is a whole number from 1 to 10, got {rating!r}", permanent=True)
    return (rating - 1) / 9


@register_scorer
class HumanScorer(BaseScorer):
    """The mean of the item's human ratings. With none yet the value is None,
    and the weighted score leaves this scorer out until someone rates."""

    type = "human"
    description = "The mean of ratings people gave the output in the review screen."

    @dataclasses.dataclass
    class Options:
        pass

    def evaluate(self, input_data: dict, output: str, context: ScoreContext) -> ScoreOutcome:
        ratings = context.human_scores
        if not ratings:
            return self.outcome(None, {"ratings": 0})
        return self.outcome(fmean(ratings), {"ratings": len(ratings)})
