"""The response cache: canonical keys, batched store access, single-flight."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engine.cache import (
    CachedResponse,
    InMemoryCacheStore,
    ResponseCache,
    compute_config_hash,
    entry_size,
)
from engine.types import AdapterError, AdapterResponse

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Capital of France?"},
]


def make_hash(**changes: Any) -> str:
    args: dict[str, Any] = {
        "prompt": MESSAGES,
        "model": "stub-small",
        "params": {"temperature": 0.7, "max_tokens": 100},
        "input_data": {"country": "France"},
    }
    args.update(changes)
    kwargs = {k: args.pop(k) for k in ("sample_index", "endpoint_url") if k in args}
    return compute_config_hash(args["prompt"], args["model"], args["params"], args["input_data"], **kwargs)


def make_response(text: str = "Paris", **kwargs: Any) -> AdapterResponse:
    return AdapterResponse(
        text=text, tokens_in=5, tokens_out=1, latency_ms=12.5, model="stub-small", **kwargs
    )


def make_cached(text: str = "Paris") -> CachedResponse:
    return CachedResponse(text, 5, 1, 12.5, "stub-small", {})


# -- the key -------------------------------------------------------------------
def test_the_hash_is_a_sha256_hex_digest() -> None:
    value = make_hash()
    assert len(value) == 64 and int(value, 16) >= 0


def test_key_order_does_not_change_the_hash() -> None:
    assert make_hash(params={"max_tokens": 100, "temperature": 0.7}) == make_hash()
    reordered = [{"content": m["content"], "role": m["role"]} for m in MESSAGES]
    assert make_hash(prompt=reordered) == make_hash()


def test_float_spelling_does_not_change_the_hash() -> None:
    assert make_hash(params={"temperature": 0.70, "max_tokens": 100}) == make_hash()
    assert make_hash(params={"temperature": 0.7, "max_tokens": 100.0}) == make_hash()
    assert make_hash(params={"temperature": 1.0}) == make_hash(params={"temperature": 1})


def test_nested_dict_order_does_not_change_the_hash() -> None:
    one = {"response_format": {"type": "json_schema", "schema": {"a": 1.0, "b": [1.0, {"y": 2, "x": 3}]}}}
    two = {"response_format": {"schema": {"b": [1, {"x": 3.0, "y": 2.0}], "a": 1}, "type": "json_schema"}}
    assert make_hash(params=one) == make_hash(params=two)


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": [{"role": "user", "content": "Capital of Spain?"}]},
        {"prompt": "Capital of France?"},
        {"model": "stub-large"},
        {"params": {"temperature": 0.71, "max_tokens": 100}},
        {"params": {"temperature": 0.7}},
        {"params": {"temperature": 0.7, "max_tokens": 100, "top_p": 0.9}},
        {"input_data": {"country": "Spain"}},
        {"sample_index": 1},
        {"endpoint_url": "http://other-host:8000/v1"},
    ],
)
def test_any_real_change_changes_the_hash(change: dict[str, Any]) -> None:
    assert make_hash(**change) != make_hash()


def test_streaming_does_not_change_the_hash() -> None:
    streamed = make_hash(params={"temperature": 0.7, "max_tokens": 100, "stream": True})
    assert streamed == make_hash()


def test_spellings_of_one_endpoint_url_give_one_hash() -> None:
    spellings = [
        "http://127.0.0.1:8000",
        "http://127.0.0.1:8000/",
        "http://127.0.0.1:8000/v1",
        "http://127.0.0.1:8000/v1/",
    ]
    assert len({make_hash(endpoint_url=url) for url in spellings}) == 1


def test_unicode_is_hashed_as_itself() -> None:
    assert make_hash(prompt="Hauptstadt von Österreich?") != make_hash(prompt="Hauptstadt von Osterreich?")


# -- the in-memory store -------------------------------------------------------------
@pytest.mark.asyncio
async def test_the_store_keeps_the_first_answer_for_a_hash() -> None:
    store = InMemoryCacheStore()
    await store.put_many([("h1", make_cached("first")), ("h1", make_cached("second"))])
    await store.put_many([("h1", make_cached("third"))])
    found = await store.get_many(["h1", "missing"])
    assert list(found) == ["h1"] and found["h1"].text == "first"
    assert (await store.stats())["entries"] == 1


@pytest.mark.asyncio
async def test_concurrent_puts_of_one_hash_never_fail_or_duplicate() -> None:
    store = InMemoryCacheStore()
    alice, bob = ResponseCache(store), ResponseCache(store)  # two workers, one store
    puts = [cache.put("h1", make_response(f"answer {n}")) for n in range(10) for cache in (alice, bob)]
    results = await asyncio.gather(*puts)
    await asyncio.gather(alice.flush(), bob.flush())
    assert results.count(True) == 2  # one per worker; the store keeps one of them
    assert (await store.stats())["entries"] == 1
    assert store.entries["h1"].text == "answer 0"


@pytest.mark.asyncio
async def test_the_store_counts_hits() -> None:
    store = InMemoryCacheStore()
    await store.put_many([("h1", make_cached())])
    await store.record_hits(["h1", "h1", "unknown"])
    assert store.hit_counts == {"h1": 2} and store.last_hit["h1"] > 0


# -- reading and writing through the cache ---------------------------------------------
@pytest.mark.asyncio
async def test_lookups_in_one_tick_go_to_the_store_as_one_batch() -> None:
    store = InMemoryCacheStore()
    await store.put_many([(f"h{n}", make_cached(f"answer {n}")) for n in range(10)])
    cache = ResponseCache(store)
    found = await asyncio.gather(*(cache.get(f"h{n}") for n in range(50)))
    assert store.get_many_calls == 1
    assert [f.text for f in found[:10]] == [f"answer {n}" for n in range(10)]
    assert found[10:] == [None] * 40


@pytest.mark.asyncio
async def test_a_lookup_batch_is_capped() -> None:
    store = InMemoryCacheStore()
    cache = ResponseCache(store, lookup_batch=10)
    await asyncio.gather(*(cache.get(f"h{n}") for n in range(25)))
    assert store.get_many_calls == 3


@pytest.mark.asyncio
async def test_prefetched_keys_are_answered_without_another_lookup() -> None:
    store = InMemoryCacheStore()
    await store.put_many([("h1", make_cached("Paris"))])
    cache = ResponseCache(store)
    await cache.prefetch(["h1", "h2", "h1"])
    assert store.get_many_calls == 1
    found, absent = await asyncio.gather(cache.get("h1"), cache.get("h2"))
    assert found is not None and found.text == "Paris" and absent is None
    assert store.get_many_calls == 1 and (cache.hits, cache.misses) == (1, 1)
    # Each prefetched answer serves one get: later ones ask the store, which may know more.
    await store.put_many([("h2", make_cached("Lima"))])
    later = await cache.get("h2")
    assert later is not None and later.text == "Lima" and store.get_many_calls == 2


@pytest.mark.asyncio
async def test_an_answer_is_served_before_it_is_written() -> None:
    store = InMemoryCacheStore()
    cache = ResponseCache(store)
    assert await cache.put("h1", make_response("Paris", finish_reason="stop", raw={"id": "x"}))
    assert store.entries == {}
    found = await cache.get("h1")
    assert found is not None and found.text == "Paris"
    back = found.to_response()
    assert (back.finish_reason, back.raw, back.latency_ms) == ("stop", {"id": "x"}, 12.5)
    await cache.flush()
    assert list(store.entries) == ["h1"] and store.put_many_calls == 1
    assert store.hit_counts == {"h1": 1}


class SlowStore(InMemoryCacheStore):
    """Like a database: each call takes a while, whatever its size."""

    async def put_many(self, entries: list[tuple[str, CachedResponse]]) -> None:
        await asyncio.sleep(0.01)
        await super().put_many(entries)


@pytest.mark.asyncio
async def test_answers_that_arrive_while_a_write_is_out_go_in_the_next_batch() -> None:
    store = SlowStore()
    cache = ResponseCache(store)

    async def answer(n: int) -> None:
        await asyncio.sleep(n * 0.001)  # answers trickle in, as from a server
        await cache.put(f"h{n}", make_response(f"answer {n}"))

    await asyncio.gather(*(answer(n) for n in range(25)))
    await cache.flush()
    assert len(store.entries) == 25
    assert store.put_many_calls <= 4


@pytest.mark.asyncio
async def test_a_write_starts_without_waiting_for_flush() -> None:
    store = InMemoryCacheStore()
    cache = ResponseCache(store)
    await cache.put("h1", make_response())
    await asyncio.sleep(0)
    assert list(store.entries) == ["h1"]


@pytest.mark.asyncio
async def test_flush_with_nothing_waiting_writes_nothing() -> None:
    store = InMemoryCacheStore()
    await ResponseCache(store).flush()
    assert store.put_many_calls == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("text", ["", "   \n"])
async def test_empty_answers_are_never_cached(text: str) -> None:
    cache = ResponseCache()
    assert not await cache.put("h1", make_response(text))
    await cache.flush()
    assert await cache.get("h1") is None


@pytest.mark.asyncio
async def test_cache_stats_count_hits_and_misses() -> None:
    cache = ResponseCache()
    await cache.put("h1", make_response())
    await cache.get("h1")
    await cache.get("h1")
    await cache.get("h2")
    stats = await cache.cache_stats()
    assert (stats["hits"], stats["misses"]) == (2, 1)
    assert stats["hit_rate"] == pytest.approx(2 / 3)
    await cache.flush()
    stats = await cache.cache_stats()
    assert stats["entries"] == 1 and stats["unflushed"] == 0
    assert stats["storage_bytes"] == entry_size(cache.store.entries["h1"]) > len("Paris")  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_an_unused_cache_has_a_zero_hit_rate() -> None:
    assert (await ResponseCache().cache_stats())["hit_rate"] == 0.0


# -- single-flight ------------------------------------------------------------------
class Server:
    """Counts calls and answers after a pause, like a slow model."""

    def __init__(self, text: str = "Paris", error: Exception | None = None):
        self.calls = 0
        self.text = text
        self.error = error

    async def __call__(self) -> AdapterResponse:
        self.calls += 1
        await asyncio.sleep(0.02)
        if self.error:
            raise self.error
        return make_response(self.text)


@pytest.mark.asyncio
async def test_identical_calls_in_flight_together_reach_the_server_once() -> None:
    cache, server = ResponseCache(), Server()
    results = await asyncio.gather(
        *(cache.get_or_call("h1", server, {"endpoint": "alice"}) for _ in range(20))
    )
    assert server.calls == 1
    assert [cached for _, cached in results].count(False) == 1
    assert {response.text for response, _ in results} == {"Paris"}
    response, cached = await cache.get_or_call("h1", server)
    assert (response.text, cached, server.calls) == ("Paris", True, 1)
    await cache.flush()
    assert cache.store.entries["h1"].metadata["endpoint"] == "alice"  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_a_failed_call_fails_every_waiter_and_is_not_cached() -> None:
    cache = ResponseCache()
    failing = Server(error=AdapterError("HTTP 400", permanent=True, status=400))
    results = await asyncio.gather(
        *(cache.get_or_call("h1", failing) for _ in range(5)), return_exceptions=True
    )
    assert failing.calls == 1
    assert all(isinstance(r, AdapterError) for r in results)
    working = Server()
    response, cached = await cache.get_or_call("h1", working)
    assert (response.text, cached, working.calls) == ("Paris", False, 1)


@pytest.mark.asyncio
async def test_a_failed_call_with_nobody_waiting_leaves_no_stray_error() -> None:
    cache = ResponseCache()
    with pytest.raises(AdapterError):
        await cache.get_or_call("h1", Server(error=AdapterError("boom")))
    assert cache._inflight == {}


@pytest.mark.asyncio
async def test_an_empty_answer_is_returned_but_asked_again_next_time() -> None:
    cache, server = ResponseCache(), Server(text="")
    first, _ = await cache.get_or_call("h1", server)
    second, cached = await cache.get_or_call("h1", server)
    assert first.text == second.text == "" and not cached and server.calls == 2


@pytest.mark.asyncio
async def test_when_the_caller_is_cancelled_a_waiter_makes_the_call_itself() -> None:
    cache, server = ResponseCache(), Server()
    owner = asyncio.create_task(cache.get_or_call("h1", server))
    await asyncio.sleep(0.005)
    waiter = asyncio.create_task(cache.get_or_call("h1", server))
    await asyncio.sleep(0.005)
    owner.cancel()
    response, cached = await waiter
    assert (response.text, cached, server.calls) == ("Paris", False, 2)
    with pytest.raises(asyncio.CancelledError):
        await owner


@pytest.mark.asyncio
async def test_a_cancelled_waiter_does_not_disturb_the_call() -> None:
    cache, server = ResponseCache(), Server()
    owner = asyncio.create_task(cache.get_or_call("h1", server))
    await asyncio.sleep(0.005)
    waiter = asyncio.create_task(cache.get_or_call("h1", server))
    await asyncio.sleep(0.005)
    waiter.cancel()
    response, cached = await owner
    assert (response.text, cached, server.calls) == ("Paris", False, 1)


@pytest.mark.asyncio
async def test_lookups_still_queued_when_the_lookup_task_dies_are_cancelled() -> None:
    release = asyncio.Event()

    class StuckStore(InMemoryCacheStore):
        async def get_many(self, hashes: list[str]) -> dict[str, CachedResponse]:
            await release.wait()
            return {}

    cache = ResponseCache(StuckStore())
    first = asyncio.create_task(cache.get("h1"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the lookup task is now waiting on the store
    second = asyncio.create_task(cache.get("h2"))
    await asyncio.sleep(0)
    assert cache._lookup_task is not None
    cache._lookup_task.cancel()
    for task in (first, second):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert cache._lookup_task is None


# -- a broken store ---------------------------------------------------------------
class BrokenStore(InMemoryCacheStore):
    async def get_many(self, hashes: list[str]) -> dict[str, CachedResponse]:
        raise ConnectionError("database is down")

    async def put_many(self, entries: list[tuple[str, CachedResponse]]) -> None:
        raise ConnectionError("database is down")


@pytest.mark.asyncio
async def test_a_broken_store_means_misses_not_failures() -> None:
    cache, server = ResponseCache(BrokenStore()), Server()
    response, cached = await cache.get_or_call("h1", server)
    assert (response.text, cached) == ("Paris", False)
    await cache.flush()
    assert cache.write_errors == 1
    _, cached = await cache.get_or_call("h1", server)
    assert not cached and server.calls == 2
