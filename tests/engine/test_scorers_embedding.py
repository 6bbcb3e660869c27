"""Embedding scorer: cosine similarity to the reference, with cached embeddings."""

from __future__ import annotations

import asyncio
import math

import pytest

from engine.scorers import build_scorer
from engine.scorers.embedding import CACHE, EmbeddingCache, cosine
from engine.types import EndpointConfig, ScoreContext, ScorerError, ScorerSpec

LOCAL = EndpointConfig(name="local", base_url="http://127.0.0.1:8080/v1", embedding_model="minilm")


class FakeEmbedder:
    """An LLMClient that embeds from a fixed table and records each call."""

    def __init__(self, vectors: dict[str, list[float]], delay: float = 0.0, fail: Exception | None = None):
        self.vectors = vectors
        self.delay = delay
        self.fail = fail
        self.calls: list[tuple[str | None, list[str], str]] = []

    async def embed(self, endpoint, texts, model=""):
        self.calls.append((endpoint.name if endpoint else None, list(texts), model))
        await asyncio.sleep(self.delay)
        if self.fail:
            raise self.fail
        return [self.vectors[text] for text in texts]

    async def complete(self, endpoint, messages, model, params, sample_index=0):
        raise AssertionError("the embedding scorer never asks for completions")

    def embedded(self, text: str) -> int:
        return sum(texts.count(text) for _, texts, _ in self.calls)


VECTORS = {
    "Zürich is in Switzerland": [1.0, 0.0, 0.0],
    "Zurich, Switzerland": [1.0, 0.0, 0.0],
    "halfway": [1.0, 1.0, 0.0],
    "unrelated": [0.0, 0.0, 1.0],
    "opposite": [-1.0, 0.0, 0.0],
    "東京": [0.6, 0.8, 0.0],
    "zero": [0.0, 0.0, 0.0],
}
REFERENCE = "Zürich is in Switzerland"


@pytest.fixture(autouse=True)
def empty_cache():
    CACHE.clear()
    yield
    CACHE.clear()


def embedding(**config):
    return build_scorer(ScorerSpec(type="embedding", config=config))


def context(llm, reference=REFERENCE, endpoint=LOCAL):
    return ScoreContext(reference=reference, endpoint=endpoint, llm=llm)


@pytest.mark.asyncio
async def test_the_score_is_the_cosine_similarity_to_the_reference():
    llm = FakeEmbedder(VECTORS)
    scorer = embedding()
    assert (await scorer.score_async({}, "Zurich, Switzerland", context(llm))).value == pytest.approx(1.0)
    assert (await scorer.score_async({}, "halfway", context(llm))).value == pytest.approx(1 / math.sqrt(2))
    assert (await scorer.score_async({}, "東京", context(llm))).value == pytest.approx(0.6)


@pytest.mark.asyncio
async def test_unrelated_and_opposite_outputs_score_zero():
    llm = FakeEmbedder(VECTORS)
    assert (await embedding().score_async({}, "unrelated", context(llm))).value == 0.0
    outcome = await embedding().score_async({}, "opposite", context(llm))
    assert outcome.value == 0.0
    assert outcome.details == {"cosine": pytest.approx(-1.0), "model": "minilm"}


@pytest.mark.asyncio
async def test_empty_output_scores_zero_without_a_call():
    llm = FakeEmbedder(VECTORS)
    outcome = await embedding().score_async({}, "  \n", context(llm))
    assert outcome.value == 0.0
    assert llm.calls == []


@pytest.mark.asyncio
async def test_no_reference_is_an_error_saying_what_to_do():
    llm = FakeEmbedder(VECTORS)
    with pytest.raises(ScorerError, match="needs a reference: give the dataset items a reference"):
        await embedding().score_async({}, "halfway", context(llm, reference=""))
    assert llm.calls == []


@pytest.mark.asyncio
async def test_the_model_comes_from_the_options_then_the_endpoint():
    llm = FakeEmbedder(VECTORS)
    await embedding(model="bge-small").score_async({}, "halfway", context(llm))
    await embedding().score_async({}, "halfway", context(llm))
    await embedding().score_async({}, "halfway", context(llm, endpoint=None))
    assert [(name, model) for name, _, model in llm.calls] == [
        ("local", "bge-small"),
        ("local", "minilm"),
        (None, ""),  # no endpoint: the client picks its bundled local model
    ]


@pytest.mark.asyncio
async def test_the_reference_is_embedded_once_across_items():
    llm = FakeEmbedder(VECTORS)
    scorer = embedding()
    for output in ("halfway", "unrelated", "東京", "halfway"):
        await scorer.score_async({}, output, context(llm))
    assert llm.embedded(REFERENCE) == 1
    assert llm.embedded("halfway") == 1
    assert len(llm.calls) == 3


@pytest.mark.asyncio
async def test_concurrent_items_share_one_reference_embedding():
    llm = FakeEmbedder(VECTORS, delay=0.01)
    outputs = ["halfway", "unrelated", "東京", "opposite", "halfway"]
    scorers = [embedding() for _ in outputs]  # the cache is per process, not per scorer
    outcomes = await asyncio.gather(
        *(s.score_async({}, o, context(llm)) for s, o in zip(scorers, outputs, strict=True))
    )
    assert [o.value for o in outcomes] == pytest.approx([1 / math.sqrt(2), 0.0, 0.6, 0.0, 1 / math.sqrt(2)])
    assert llm.embedded(REFERENCE) == 1
    assert llm.embedded("halfway") == 1


@pytest.mark.asyncio
async def test_different_models_are_cached_apart():
    llm = FakeEmbedder(VECTORS)
    await embedding(model="a").score_async({}, "halfway", context(llm))
    await embedding(model="b").score_async({}, "halfway", context(llm))
    assert llm.embedded(REFERENCE) == 2


@pytest.mark.asyncio
async def test_a_failed_embedding_reaches_every_waiting_item_and_is_not_cached():
    llm = FakeEmbedder(VECTORS, delay=0.01, fail=ScorerError("embedding endpoint down"))
    results = await asyncio.gather(
        embedding().score_async({}, "halfway", context(llm)),
        embedding().score_async({}, "halfway", context(llm)),
        return_exceptions=True,
    )
    assert all(isinstance(r, ScorerError) for r in results)
    assert len(llm.calls) == 1
    llm.fail = None
    assert (await embedding().score_async({}, "halfway", context(llm))).value > 0.7


@pytest.mark.asyncio
async def test_an_all_zero_embedding_scores_zero():
    outcome = await embedding().score_async({}, "zero", context(FakeEmbedder(VECTORS)))
    assert outcome.value == 0.0
    assert outcome.details["cosine"] is None


@pytest.mark.asyncio
async def test_a_client_returning_the_wrong_number_of_vectors_is_an_error():
    class Short(FakeEmbedder):
        async def embed(self, endpoint, texts, model=""):
            return [[1.0]]

    with pytest.raises(ScorerError, match="asked for 2 embeddings, got 1"):
        await embedding().score_async({}, "halfway", context(Short(VECTORS)))


def test_embeddings_of_different_sizes_are_an_error():
    with pytest.raises(ScorerError, match="different sizes \\(2 and 3\\)"):
        cosine([1.0, 0.0], [1.0, 0.0, 0.0])


@pytest.mark.asyncio
async def test_no_llm_client_is_an_error():
    with pytest.raises(ScorerError, match="needs an LLM client"):
        await embedding().score_async({}, "halfway", context(None))


def test_sync_score_runs_the_async_path_outside_an_event_loop():
    llm = FakeEmbedder(VECTORS)
    assert embedding().score({}, "halfway", context(llm)) == pytest.approx(1 / math.sqrt(2))


@pytest.mark.asyncio
async def test_sync_score_inside_an_event_loop_says_to_use_score_async():
    with pytest.raises(ScorerError, match="use `await scorer.score_async"):
        embedding().score({}, "halfway", context(FakeEmbedder(VECTORS)))


def test_an_unknown_option_is_rejected_naming_it():
    with pytest.raises(ScorerError, match="embedding scorer: unknown option 'modle'; allowed options: model"):
        embedding(modle="x")


def test_the_cache_forgets_the_least_recently_used_embedding():
    cache = EmbeddingCache(maxsize=2)
    cache.put(("", "m", "a"), [1.0])
    cache.put(("", "m", "b"), [2.0])
    assert cache.get(("", "m", "a")) == [1.0]  # now "b" is the oldest
    cache.put(("", "m", "c"), [3.0])
    assert cache.get(("", "m", "b")) is None
    assert cache.get(("", "m", "a")) == [1.0]
    assert len(cache) == 2


@pytest.mark.asyncio
async def test_a_cache_too_small_for_one_call_says_so():
    tiny = EmbeddingCache(maxsize=1)
    with pytest.raises(ScorerError, match="too small"):
        await tiny.embed(FakeEmbedder(VECTORS), LOCAL, "m", ["halfway", "unrelated"])
