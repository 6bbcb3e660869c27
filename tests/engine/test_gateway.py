"""The gateway against a real loopback server: cache, single-flight, limits, embeddings."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import engine.gateway
from engine.adapters import BaseAdapter
from engine.cache import CachedResponse, InMemoryCacheStore, ResponseCache
from engine.gateway import Gateway
from engine.types import AdapterError, EndpointConfig
from tests.llm_stub import LLMStub, embed_text


def make_endpoint(stub: LLMStub, name: str = "alice-vllm", **kwargs: Any) -> EndpointConfig:
    return EndpointConfig(name=name, base_url=stub.base_url, default_model="stub-small", **kwargs)


def ask(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


@pytest.mark.asyncio
async def test_a_repeated_call_is_answered_from_the_cache(stub: LLMStub) -> None:
    async with Gateway() as gateway:
        first = await gateway.complete(make_endpoint(stub), ask("hello"), "stub-small", {"temperature": 0.7})
        second = await gateway.complete(
            make_endpoint(stub), ask("hello"), "stub-small", {"temperature": 0.70}
        )
    assert first.response.text == second.response.text == "echo: hello"
    assert (first.cached, second.cached) == (False, True)
    assert first.config_hash == second.config_hash
    assert stub.calls == 1 and gateway.calls_made == 1


@pytest.mark.asyncio
async def test_twenty_identical_calls_at_once_reach_the_server_once(stub: LLMStub) -> None:
    stub.latency_ms = 50
    async with Gateway() as gateway:
        calls = [gateway.complete(make_endpoint(stub), ask("same"), "stub-small", {}) for _ in range(20)]
        results = await asyncio.gather(*calls)
    assert stub.calls == 1
    assert [r.cached for r in results].count(False) == 1
    assert {r.response.text for r in results} == {"echo: same"}


@pytest.mark.asyncio
async def test_streamed_and_plain_calls_share_one_cache_entry(stub: LLMStub) -> None:
    async with Gateway() as gateway:
        await gateway.complete(make_endpoint(stub), ask("hi"), "stub-small", {"stream": True})
        plain = await gateway.complete(make_endpoint(stub), ask("hi"), "stub-small", {})
    assert plain.cached and stub.calls == 1


@pytest.mark.asyncio
async def test_each_sample_index_is_its_own_call(stub: LLMStub) -> None:
    async with Gateway() as gateway:
        results = [
            await gateway.complete(
                make_endpoint(stub), ask("hi"), "stub-small", {"temperature": 1}, sample_index=n
            )
            for n in range(3)
        ]
    assert stub.calls == 3 and len({r.config_hash for r in results}) == 3


@pytest.mark.asyncio
async def test_only_real_calls_count_toward_the_spend(stub: LLMStub) -> None:
    spent: list[int] = []
    async with Gateway(on_spend=spent.append) as gateway:
        for _ in range(3):
            await gateway.complete(make_endpoint(stub), ask("one two three"), "stub-small", {})
    # The stub counts words: "one two three" in, "echo: one two three" out.
    assert (gateway.calls_made, gateway.tokens_in_spent, gateway.tokens_out_spent) == (1, 3, 4)
    assert spent == [7]


@pytest.mark.asyncio
async def test_a_failed_call_raises_and_is_not_cached(stub: LLMStub) -> None:
    stub.fail_next("status", status=400, body='{"error": {"message": "bad temperature"}}')
    async with Gateway() as gateway:
        with pytest.raises(AdapterError, match="HTTP 400"):
            await gateway.complete(make_endpoint(stub), ask("hi"), "stub-small", {})
        retry = await gateway.complete(make_endpoint(stub), ask("hi"), "stub-small", {})
    assert not retry.cached and stub.calls == 2 and gateway.calls_made == 1


@pytest.mark.asyncio
async def test_an_empty_answer_is_not_cached(stub: LLMStub) -> None:
    stub.responder = lambda body: ""
    async with Gateway() as gateway:
        for _ in range(2):
            result = await gateway.complete(make_endpoint(stub), ask("hi"), "stub-small", {})
            assert result.response.text == "" and not result.cached
    assert stub.calls == 2


@pytest.mark.asyncio
async def test_the_global_limit_bounds_calls_in_flight(stub: LLMStub) -> None:
    stub.latency_ms = 50
    async with Gateway(max_concurrent=3) as gateway:
        calls = [gateway.complete(make_endpoint(stub), ask(f"q{n}"), "stub-small", {}) for n in range(12)]
        await asyncio.gather(*calls)
    assert stub.calls == 12 and stub.max_in_flight == 3


@pytest.mark.asyncio
async def test_an_endpoints_own_limit_bounds_its_calls(stub: LLMStub) -> None:
    stub.latency_ms = 50
    narrow = make_endpoint(stub, max_concurrency=2)
    async with Gateway(max_concurrent=10) as gateway:
        await asyncio.gather(*(gateway.complete(narrow, ask(f"q{n}"), "stub-small", {}) for n in range(8)))
    assert stub.calls == 8 and stub.max_in_flight == 2


@pytest.mark.asyncio
async def test_cache_hits_take_no_concurrency_slot(stub: LLMStub) -> None:
    cache = ResponseCache()
    async with Gateway(cache, max_concurrent=1) as gateway:
        await gateway.complete(make_endpoint(stub), ask("warm"), "stub-small", {})
        gateway._global_limit = asyncio.Semaphore(0)  # any real call would now wait forever
        hit = await asyncio.wait_for(gateway.complete(make_endpoint(stub), ask("warm"), "stub-small", {}), 1)
    assert hit.cached


@pytest.mark.asyncio
async def test_one_adapter_per_endpoint_closed_on_exit(stub: LLMStub) -> None:
    gateway = Gateway()
    endpoint = make_endpoint(stub)
    await gateway.complete(endpoint, ask("a"), "stub-small", {})
    await gateway.complete(endpoint, ask("b"), "stub-small", {})
    adapter = gateway.adapter(endpoint)
    assert gateway.adapter(endpoint) is adapter
    await gateway.aclose()
    assert adapter._client.is_closed  # type: ignore[attr-defined]
    assert gateway.adapter(endpoint) is not adapter


class SlowStore(InMemoryCacheStore):
    async def put_many(self, entries: list[tuple[str, CachedResponse]]) -> None:
        await asyncio.sleep(0.05)
        await super().put_many(entries)


@pytest.mark.asyncio
async def test_closing_waits_until_the_cache_is_written(stub: LLMStub) -> None:
    cache = ResponseCache(SlowStore())
    async with Gateway(cache) as gateway:
        await gateway.complete(make_endpoint(stub), ask("keep me"), "stub-small", {})
        await gateway.flush()
        assert (await cache.cache_stats())["entries"] == 1
        await gateway.complete(make_endpoint(stub), ask("and me"), "stub-small", {})
    stats = await cache.cache_stats()
    assert stats["entries"] == 2 and stats["misses"] == 2


# -- embeddings -------------------------------------------------------------------
@pytest.mark.asyncio
async def test_embeddings_use_the_endpoints_model_and_repeats_are_sent_once(stub: LLMStub) -> None:
    endpoint = make_endpoint(stub, embedding_model="stub-embed")
    async with Gateway() as gateway:
        first = await gateway.embed(endpoint, ["red apple", "green pear", "red apple"])
        second = await gateway.embed(endpoint, ["green pear", "blue plum"])
    assert first[0] == first[2] == pytest.approx(embed_text("red apple"))
    assert second[0] == first[1]
    # A repeat inside one call is sent once; across calls the scorer's LRU caches.
    assert [r["input"] for r in stub.embedding_requests] == [
        ["red apple", "green pear"],
        ["green pear", "blue plum"],
    ]
    assert {r["model"] for r in stub.embedding_requests} == {"stub-embed"}


@pytest.mark.asyncio
async def test_a_model_passed_in_wins_over_the_endpoints(stub: LLMStub) -> None:
    async with Gateway() as gateway:
        await gateway.embed(make_endpoint(stub, max_concurrency=1), ["text"], model="other-embed")
    assert stub.embedding_requests[0]["model"] == "other-embed"


class FakeMiniLM(BaseAdapter):
    texts: list[str] = []

    async def embed(self, texts: list[str], model: str) -> list[list[float]]:
        FakeMiniLM.texts += texts
        return [[float(len(t))] for t in texts]


@pytest.mark.asyncio
@pytest.mark.parametrize("has_endpoint", [False, True])
async def test_without_an_embedding_model_the_local_minilm_embeds(
    stub: LLMStub, monkeypatch: pytest.MonkeyPatch, has_endpoint: bool
) -> None:
    # The MiniLM model is an optional install; a stand-in checks the routing.
    real = engine.gateway.create_adapter
    monkeypatch.setattr(
        engine.gateway,
        "create_adapter",
        lambda ep, **options: FakeMiniLM(ep) if ep.adapter == "local-minilm" else real(ep, **options),
    )
    FakeMiniLM.texts = []
    endpoint = make_endpoint(stub) if has_endpoint else None
    async with Gateway() as gateway:
        vectors = await gateway.embed(endpoint, ["ab", "abc", "ab"])
    assert vectors == [[2.0], [3.0], [2.0]]
    assert FakeMiniLM.texts == ["ab", "abc"] and stub.embedding_requests == []


@pytest.mark.asyncio
async def test_a_prefetched_call_and_a_changed_call_each_get_their_own_key(stub: LLMStub) -> None:
    endpoint, messages, params = make_endpoint(stub), ask("hello"), {"temperature": 0.7}
    async with Gateway() as gateway:
        await gateway.prefetch([(endpoint, messages, "stub-small", params, 0)])
        first = await gateway.complete(endpoint, messages, "stub-small", params)
        # The same messages with other parameters (another object) are another call.
        await gateway.prefetch([(endpoint, messages, "stub-small", params, 0)])
        other = await gateway.complete(endpoint, messages, "stub-small", {"temperature": 0.1})
    assert first.config_hash == engine.gateway.call_hash(endpoint, messages, "stub-small", params, 0)
    assert other.config_hash == engine.gateway.call_hash(
        endpoint, messages, "stub-small", {"temperature": 0.1}, 0
    )
    assert other.config_hash != first.config_hash and stub.calls == 2
