"""The bundled SmolLM2 judges through llama-cpp-python's server: the json_schema form
is refused, the json_object form with the schema is taken, and its grammar keeps
every reply in the fixed form."""

from __future__ import annotations

import pytest

from engine.gateway import Gateway
from engine.local_model import LocalModelServer
from engine.scorers import build_scorer
from engine.types import EndpointConfig, ScoreContext, ScorerSpec

pytestmark = pytest.mark.local_model


@pytest.mark.asyncio
async def test_the_local_model_rates_in_the_fixed_form_under_its_grammar(local_llm: LocalModelServer) -> None:
    endpoint = EndpointConfig(
        name="local",
        base_url=local_llm.base_url,
        default_model=local_llm.alias,
        max_concurrency=1,
        timeout_s=120,
    )
    judge = build_scorer(
        ScorerSpec(type="llm_judge", name="judge", config={"samples": 2, "temperature": 0.8})
    )
    async with Gateway(max_concurrent=1) as gateway:
        context = ScoreContext(reference="Paris", endpoint=endpoint, llm=gateway)
        outcome = await judge.score_async({"country": "France"}, "The capital of France is Paris.", context)
    assert outcome.details["structured"] == "json_object"
    assert len(outcome.details["raw"]) == 2
    assert all(rating is not None and 1 <= rating <= 10 for rating in outcome.details["ratings"])
    assert outcome.spread is not None and outcome.tokens_in > 0
