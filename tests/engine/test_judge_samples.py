"""Judge variance: with `samples` k the judge is asked k times per output, each
sample its own cache entry; the score is the mean rating and the spread is kept."""

from __future__ import annotations

import statistics

import pytest

from engine.cache import InMemoryCacheStore, ResponseCache
from engine.gateway import Gateway
from engine.scorers import ScorerCallError, build_scorer
from engine.types import EndpointConfig, ScoreContext, ScorerSpec
from tests.llm_stub import LLMStub

ITEM = {"question": "What is the capital of France?"}


def judge(samples: int):
    return build_scorer(ScorerSpec(type="llm_judge", name="judge", config={"samples": samples}))


async def rate(stub: LLMStub, gateway: Gateway, samples: int):
    endpoint = EndpointConfig(name="carol-vllm", base_url=stub.base_url, default_model="stub-small")
    context = ScoreContext(reference="Paris", endpoint=endpoint, llm=gateway)
    return await judge(samples).score_async(ITEM, "Paris", context)


@pytest.mark.asyncio
async def test_k_samples_score_their_mean_and_keep_their_spread(stub: LLMStub) -> None:
    stub.script('{"rating": 6}', '{"rating": 8}', '{"rating": 7}')
    async with Gateway() as gateway:
        outcome = await rate(stub, gateway, samples=3)
    assert stub.calls == 3
    assert sorted(outcome.details["ratings"]) == [6, 7, 8]
    assert outcome.details["rating"] == pytest.approx(7)
    assert outcome.value == pytest.approx(6 / 9)
    assert outcome.spread == outcome.details["spread"] == pytest.approx(statistics.pstdev([6, 7, 8]))


@pytest.mark.asyncio
async def test_one_sample_has_no_spread(stub: LLMStub) -> None:
    stub.script('{"rating": 6}')
    async with Gateway() as gateway:
        outcome = await rate(stub, gateway, samples=1)
    assert outcome.spread is None and outcome.details["spread"] is None


@pytest.mark.asyncio
async def test_each_sample_is_its_own_cache_entry(stub: LLMStub) -> None:
    store = InMemoryCacheStore()
    stub.script('{"rating": 5}', '{"rating": 9}', '{"rating": 7}')
    async with Gateway(ResponseCache(store)) as gateway:
        first = await rate(stub, gateway, samples=3)
    assert (await store.stats())["entries"] == 3
    async with Gateway(ResponseCache(store)) as gateway:
        again = await rate(stub, gateway, samples=3)
    assert stub.calls == 3  # every sample came from the cache
    assert again.details["cached"] is True and (again.tokens_in, again.tokens_out) == (0, 0)
    assert sorted(again.details["ratings"]) == sorted(first.details["ratings"])
    stub.script('{"rating": 3}')
    async with Gateway(ResponseCache(store)) as gateway:
        more = await rate(stub, gateway, samples=4)
    assert stub.calls == 4  # only the fourth sample is new
    assert sorted(more.details["ratings"]) == [3, 5, 7, 9]
    assert more.details["cached"] is False


@pytest.mark.asyncio
async def test_samples_without_a_rating_are_left_out_and_counted(stub: LLMStub) -> None:
    stub.script('{"rating": 6}', "The answer to the task is 1.", '{"rating": 8}')
    async with Gateway() as gateway:
        outcome = await rate(stub, gateway, samples=3)
    assert outcome.details["rating"] == pytest.approx(7) and outcome.details["unparsed"] == 1
    assert outcome.spread == pytest.approx(1.0)
    assert "The answer to the task is 1." in outcome.details["raw"]


@pytest.mark.asyncio
async def test_no_sample_with_a_rating_is_a_judge_error_with_every_reply(stub: LLMStub) -> None:
    stub.script("no idea", "The answer to the task is 1.")
    async with Gateway() as gateway:
        with pytest.raises(ScorerCallError) as error:
            await rate(stub, gateway, samples=2)
    assert sorted(error.value.details["raw"]) == ["The answer to the task is 1.", "no idea"]
    assert error.value.details["ratings"] == [None, None]
    assert error.value.tokens_in > 0
