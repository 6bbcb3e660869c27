"""Scorers: one file each, registered in SCORERS by importing it below."""

# One line per scorer: importing a module registers its scorer in SCORERS.
from engine.scorers import (  # noqa: F401
    embedding,
    format,
    human,
    keyword,
    llm_judge,
)
from engine.scorers.base import (
    SCORERS,
    BaseScorer,
    ModelCalls,
    ScorerCallError,
    build_scorer,
    register_scorer,
    scorer_class,
    validate_scorer,
)

__all__ = [
    "SCORERS",
    "BaseScorer",
    "ModelCalls",
    "ScorerCallError",
    "build_scorer",
    "register_scorer",
    "scorer_class",
    "validate_scorer",
]
