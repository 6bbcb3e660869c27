"""The response cache: the hash of a canonical request → the answer it got.

Two things keep it fast in front of a database store, which is slow per call and
fast per batch:

* lookups issued in the same event-loop tick go to the store as one `get_many`
  (and while one `get_many` is out, new lookups queue up for the next one);
* writes and hit counts are group-committed: a writer starts as soon as one is
  queued, and what arrives while it writes goes out in its next batch
  (`put_many` / `record_hits`). Until written, answers are served from memory.

`get_or_call` is single-flight: identical calls in flight at the same moment go
to the server once, and everyone waiting gets that answer (or that error).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict

from engine.adapters.openai_compat import normalise_base_url
from engine.types import AdapterResponse

logger = logging.getLogger(__name__)

# Streaming changes how the answer arrives, not what it is.
UNHASHED_PARAMS = frozenset({"stream", "stream_options"})


def compute_config_hash(
    prompt: Any,
    model: str,
    params: dict[str, Any],
    input_data: Any,
    *,
    sample_index: int = 0,
    endpoint_url: str = "",
    namespace: str = "",
) -> str:
    """SHA-256 of the canonical JSON of everything that decides the answer, within
    `namespace` (a project's: another project's identical call gets another key)."""
    key = {
        "prompt": prompt,
        "model": model,
        "params": {k: v for k, v in params.items() if k not in UNHASHED_PARAMS},
        "input": input_data,
        "sample": sample_index,
        "endpoint": normalise_base_url(endpoint_url) if endpoint_url else "",
    }
    if namespace:  # absent rather than "": keys cached before namespaces existed stay valid
        key["namespace"] = namespace
    blob = json.dumps(_canonical(key), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _canonical(value: Any) -> Any:
    """Integral floats become ints (1.0 → 1), recursively; JSON already spells 0.70 as 0.7."""
    if type(value) is str:  # most of a request, and the hot path: return at once
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


@dataclass
class CachedResponse:
    text: str
    tokens_in: int
    tokens_out: int
    latency_ms: float  # of the original call
    model: str
    metadata: dict[str, Any] = field(default_factory=dict)  # finish_reason, raw, caller's keys

    def to_response(self) -> AdapterResponse:
        meta = self.metadata
        return AdapterResponse(
            text=self.text,
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            latency_ms=self.latency_ms,
            model=self.model,
            finish_reason=meta.get("finish_reason"),
            usage_estimated=bool(meta.get("usage_estimated", False)),
            raw=meta.get("raw"),
        )


class StoreStats(TypedDict):
    entries: int
    storage_bytes: int


class CacheStats(TypedDict):
    hits: int
    misses: int
    hit_rate: float
    entries: int
    storage_bytes: int
    unflushed: int  # answers held in memory, not yet written to the store


class CacheStore(Protocol):
    async def get_many(self, hashes: list[str]) -> dict[str, CachedResponse]: ...

    async def put_many(self, entries: list[tuple[str, CachedResponse]]) -> None:
        """Insert; a hash already stored (or repeated in `entries`) keeps its first answer.
        Must never raise for duplicates, also when two processes put the same hash."""
        ...

    async def record_hits(self, hashes: list[str]) -> None:
        """Add one to each hash's hit count (a hash may repeat) and set its last-hit time."""
        ...

    async def stats(self) -> StoreStats: ...


class InMemoryCacheStore:
    def __init__(self) -> None:
        self.entries: dict[str, CachedResponse] = {}
        self.hit_counts: dict[str, int] = {}
        self.last_hit: dict[str, float] = {}
        self.storage_bytes = 0
        self.get_many_calls = 0  # batches seen, for tests of the coalescing
        self.put_many_calls = 0

    async def get_many(self, hashes: list[str]) -> dict[str, CachedResponse]:
        self.get_many_calls += 1
        return {h: self.entries[h] for h in hashes if h in self.entries}

    async def put_many(self, entries: list[tuple[str, CachedResponse]]) -> None:
        self.put_many_calls += 1
        for config_hash, response in entries:
            if config_hash not in self.entries:
                self.entries[config_hash] = response
                self.storage_bytes += entry_size(response)

    async def record_hits(self, hashes: list[str]) -> None:
        now = time.time()
        for config_hash in hashes:
            if config_hash in self.entries:
                self.hit_counts[config_hash] = self.hit_counts.get(config_hash, 0) + 1
                self.last_hit[config_hash] = now

    async def stats(self) -> StoreStats:
        return StoreStats(entries=len(self.entries), storage_bytes=self.storage_bytes)


def entry_size(response: CachedResponse) -> int:
    """Bytes an entry takes as text + JSON metadata (what a database row would hold)."""
    meta = json.dumps(response.metadata, ensure_ascii=False, default=str)
    return len(response.text.encode()) + len(meta.encode())


class _OwnerCancelled(Exception):
    """The caller making a shared call was cancelled; its waiters retry on their own."""


PREFETCH_LIMIT = 100_000


class ResponseCache:
    """One per event loop (a sweep's): its batching and single-flight use asyncio futures."""

    def __init__(self, store: CacheStore | None = None, *, lookup_batch: int = 500):
        self.store: CacheStore = store if store is not None else InMemoryCacheStore()
        self.lookup_batch = lookup_batch
        self.hits = 0
        self.misses = 0
        self.write_errors = 0
        self._inflight: dict[str, asyncio.Future[AdapterResponse]] = {}
        self._lookups: list[tuple[str, asyncio.Future[CachedResponse | None]]] = []
        self._lookup_task: asyncio.Task[None] | None = None
        self._unwritten: dict[str, CachedResponse] = {}
        self._prefetched: dict[str, CachedResponse | None] = {}  # None: known to be absent
        self._write_queue: list[str] = []
        self._hit_queue: list[str] = []
        self._flush_task: asyncio.Task[None] | None = None

    # -- reading ---------------------------------------------------------
    async def prefetch(self, hashes: list[str]) -> None:
        """Look up many keys in one query ahead of their calls (a run's first
        stage); each answer is used once, by the next `get` of its key."""
        if len(self._prefetched) > PREFETCH_LIMIT:  # left by runs that were cancelled
            self._prefetched.clear()
        wanted = [h for h in dict.fromkeys(hashes) if h not in self._unwritten]
        found = await self._get_many(wanted)
        for config_hash in wanted:
            self._prefetched[config_hash] = found.get(config_hash)

    async def get(self, config_hash: str) -> CachedResponse | None:
        found = self._unwritten.get(config_hash)
        if found is None and config_hash in self._prefetched:
            found = self._prefetched.pop(config_hash)
        elif found is None:
            found = await self._lookup(config_hash)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
            self._hit_queue.append(config_hash)
            self._maybe_flush()
        return found

    def _lookup(self, config_hash: str) -> asyncio.Future[CachedResponse | None]:
        future: asyncio.Future[CachedResponse | None] = asyncio.get_running_loop().create_future()
        self._lookups.append((config_hash, future))
        if self._lookup_task is None:
            # Starts on the next loop iteration: every lookup of this tick joins the batch.
            self._lookup_task = asyncio.create_task(self._run_lookups())
        return future

    async def _run_lookups(self) -> None:
        batch: list[tuple[str, asyncio.Future[CachedResponse | None]]] = []
        try:
            while self._lookups:
                batch = self._lookups[: self.lookup_batch]
                del self._lookups[: self.lookup_batch]
                found = await self._get_many(list({h for h, _ in batch}))
                for config_hash, future in batch:
                    if not future.done():  # its caller may have been cancelled
                        future.set_result(found.get(config_hash))
                batch = []
        finally:
            self._lookup_task = None
            # Only when this task was cancelled (the loop is shutting down): nobody may hang.
            for _, future in [*batch, *self._lookups]:
                future.cancel()
            self._lookups.clear()

    async def _get_many(self, hashes: list[str]) -> dict[str, CachedResponse]:
        try:
            return await self.store.get_many(hashes)
        except Exception:  # the cache is an optimisation: a broken store means misses
            logger.exception("Cache lookup of %d entries failed; treating them as misses", len(hashes))
            return {}

    # -- single-flight -----------------------------------------------------
    async def get_or_call(
        self,
        config_hash: str,
        call: Callable[[], Awaitable[AdapterResponse]],
        metadata: dict[str, Any] | None = None,
    ) -> tuple[AdapterResponse, bool]:
        """The cached answer, or `call()`'s (then cached). True = no call of our own."""
        while (shared := self._inflight.get(config_hash)) is not None:
            try:
                # shield: a cancelled waiter must not cancel everyone's future.
                response = await asyncio.shield(shared)
            except _OwnerCancelled:
                continue
            self.hits += 1
            return response, True
        shared = asyncio.get_running_loop().create_future()
        self._inflight[config_hash] = shared
        try:
            response, cached = await self._get_or_call(config_hash, call, metadata)
        except Exception as exc:
            _fail(shared, exc)
            raise
        except BaseException:
            _fail(shared, _OwnerCancelled())
            raise
        else:
            shared.set_result(response)
        finally:
            del self._inflight[config_hash]
        return response, cached

    async def _get_or_call(
        self,
        config_hash: str,
        call: Callable[[], Awaitable[AdapterResponse]],
        metadata: dict[str, Any] | None,
    ) -> tuple[AdapterResponse, bool]:
        found = await self.get(config_hash)
        if found is not None:
            return found.to_response(), True
        response = await call()
        self._put(config_hash, response, metadata)
        return response, False

    # -- writing -----------------------------------------------------------
    async def put(
        self, config_hash: str, response: AdapterResponse, metadata: dict[str, Any] | None = None
    ) -> bool:
        """Buffer an answer for the store; False when refused (empty) or already cached."""
        return self._put(config_hash, response, metadata)

    def _put(self, config_hash: str, response: AdapterResponse, metadata: dict[str, Any] | None) -> bool:
        # An empty answer is a failure in disguise: caching it would make it permanent.
        if not response.text.strip() or config_hash in self._unwritten:
            return False
        meta = {
            **(metadata or {}),
            "finish_reason": response.finish_reason,
            "usage_estimated": response.usage_estimated,
            "raw": response.raw,
        }
        self._unwritten[config_hash] = CachedResponse(
            response.text,
            response.tokens_in,
            response.tokens_out,
            response.latency_ms,
            response.model,
            meta,
        )
        self._write_queue.append(config_hash)
        self._maybe_flush()
        return True

    def _maybe_flush(self) -> None:
        # Group commit: a writer starts as soon as anything is queued and, while it
        # writes, new answers gather for its next batch. Under load the batches are
        # large; when calls are slow each answer is stored within one write, so a
        # worker killed mid-sweep loses (and pays again for) almost nothing.
        if self._flush_task is None and (self._write_queue or self._hit_queue):
            self._flush_task = asyncio.create_task(self._drain())

    async def flush(self) -> None:
        """Write everything buffered so far to the store (waits for a flush under way)."""
        self._maybe_flush()
        if self._flush_task is not None:
            await asyncio.shield(self._flush_task)

    async def _drain(self) -> None:
        try:
            while self._write_queue or self._hit_queue:
                keys, self._write_queue = self._write_queue, []
                hits, self._hit_queue = self._hit_queue, []
                await self._write(keys, hits)
        finally:
            self._flush_task = None

    async def _write(self, keys: list[str], hits: list[str]) -> None:
        try:
            if keys:
                await self.store.put_many([(h, self._unwritten[h]) for h in keys])
            if hits:
                await self.store.record_hits(hits)
        except Exception:  # a lost cache write costs a repeat call later, not the run
            self.write_errors += 1
            logger.exception("Cache write of %d entries failed; they stay uncached", len(keys))
        finally:
            for config_hash in keys:
                self._unwritten.pop(config_hash, None)

    async def cache_stats(self) -> CacheStats:
        stored = await self.store.stats()
        total = self.hits + self.misses
        return CacheStats(
            hits=self.hits,
            misses=self.misses,
            hit_rate=self.hits / total if total else 0.0,
            entries=stored["entries"],
            storage_bytes=stored["storage_bytes"],
            unflushed=len(self._unwritten),
        )


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    future.set_exception(exc)
    future.exception()  # mark it retrieved: with no waiters asyncio would log it as lost
