"""Every LLM call of a sweep goes through here: cache, single-flight, concurrency limits.

Each endpoint's limit adapts to rate limiting (engine/concurrency.py): a 429 or 503
is waited out and retried here, not failed.

One `Gateway` per sweep (per event loop). It implements `engine.types.LLMClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from engine.adapters import BaseAdapter, create_adapter
from engine.cache import UNHASHED_PARAMS, ResponseCache, compute_config_hash
from engine.concurrency import AdaptiveLimit
from engine.types import AdapterResponse, CallResult, EndpointConfig, Messages, RateLimited

T = TypeVar("T")

LOCAL_EMBEDDER = EndpointConfig(name="local-minilm", base_url="", adapter="local-minilm")


@contextlib.asynccontextmanager
async def _admit_all() -> AsyncIterator[None]:
    yield


def call_hash(
    endpoint: EndpointConfig, messages: Messages, model: str, params: dict[str, Any], sample: int
) -> str:
    return compute_config_hash(
        messages,
        model,
        params,
        None,
        sample_index=sample,
        endpoint_url=endpoint.base_url,
        namespace=endpoint.cache_namespace,
    )


class Gateway:
    def __init__(
        self,
        cache: ResponseCache | None = None,
        *,
        max_concurrent: int = 64,
        on_spend: Callable[[int], None] | None = None,
        limit_options: dict[str, float] | None = None,
    ):
        self.cache = cache if cache is not None else ResponseCache()
        self.max_concurrent = max_concurrent
        # Keyword arguments of each endpoint's AdaptiveLimit (patience_s, max_refusals, ...).
        self.limit_options = limit_options or {}
        self.on_spend = on_spend  # called with tokens_in + tokens_out of each real call
        # Wraps each real call, inside the concurrency limits; a sweep's orchestrator
        # replaces it with its gate (pause, stop, budget).
        self.admission: Callable[[], contextlib.AbstractAsyncContextManager[None]] = _admit_all
        # Counters of real (non-cached) calls; a sweep's budget reads them.
        self.calls_made = 0
        # Every call that finished, cached or not, failed or not: a sweep's progress.
        self.calls_finished = 0
        self.tokens_in_spent = 0
        self.tokens_out_spent = 0
        self._adapters: dict[str, BaseAdapter] = {}
        self._endpoint_limits: dict[str, AdaptiveLimit] = {}
        self._global_limit = asyncio.Semaphore(max_concurrent)

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def prefetch(self, calls: list[tuple[EndpointConfig, Messages, str, dict[str, Any], int]]) -> None:
        """Look up the cached answers of many calls at once (see ResponseCache.prefetch)."""
        await self.cache.prefetch([call_hash(*call) for call in calls])

    async def complete(
        self,
        endpoint: EndpointConfig,
        messages: Messages,
        model: str,
        params: dict[str, Any],
        sample_index: int = 0,
    ) -> CallResult:
        config_hash = call_hash(endpoint, messages, model, params, sample_index)
        metadata = {
            "endpoint": endpoint.name,
            "params": {k: v for k, v in params.items() if k not in UNHASHED_PARAMS},
            "sample_index": sample_index,
        }
        try:
            response, cached = await self.cache.get_or_call(
                config_hash, lambda: self._call(endpoint, messages, model, params), metadata
            )
        finally:
            self.calls_finished += 1
        return CallResult(response=response, config_hash=config_hash, cached=cached)

    async def _call(
        self, endpoint: EndpointConfig, messages: Messages, model: str, params: dict[str, Any]
    ) -> AdapterResponse:
        adapter = self.adapter(endpoint)
        response = await self._limited(endpoint, lambda: adapter.complete(messages, model, params))
        self.calls_made += 1
        self.tokens_in_spent += response.tokens_in
        self.tokens_out_spent += response.tokens_out
        if self.on_spend is not None:
            self.on_spend(response.tokens_in + response.tokens_out)
        return response

    async def _limited(
        self, endpoint: EndpointConfig, send: Callable[[], Awaitable[T]], admit: bool = True
    ) -> T:
        """`send()` within the endpoint's adaptive limit and the global one, again
        after each rate-limited answer until it goes through or the limit gives up.
        `admit`: through the sweep's gate too (completions; a scorer's embeddings are not)."""
        limit = self.endpoint_limit(endpoint)
        admission = self.admission if admit else _admit_all
        refusals = 0
        while True:
            # The endpoint's own limit first: calls queued for a saturated endpoint must
            # not hold global slots that other endpoints could use.
            epoch = await limit.acquire()
            try:
                async with self._global_limit:
                    # Admitted only once a slot is ours: a sweep paused (or out of budget)
                    # while this call waited for a slot must not send it.
                    async with admission():
                        result = await send()
            except RateLimited as refused:
                refusals += 1
                error = limit.give_up(refused, refusals)
                if error is not None:
                    raise error from refused
                limit.rate_limited(epoch, refused.retry_after)
                continue  # waits out the pause in acquire(), after release() below
            finally:
                limit.release()
            limit.succeeded()
            return result

    def endpoint_limit(self, endpoint: EndpointConfig) -> AdaptiveLimit:
        """The endpoint's adaptive limit: up to its max_concurrency, else the global limit."""
        limit = self._endpoint_limits.get(endpoint.name)
        if limit is None:
            ceiling = endpoint.max_concurrency if endpoint.max_concurrency > 0 else self.max_concurrent
            limit = AdaptiveLimit(min(ceiling, self.max_concurrent), **self.limit_options)
            self._endpoint_limits[endpoint.name] = limit
        return limit

    def adapter(self, endpoint: EndpointConfig) -> BaseAdapter:
        """The endpoint's adapter, made on first use and kept until `aclose()`."""
        adapter = self._adapters.get(endpoint.name)
        if adapter is None:
            connections = self.endpoint_limit(endpoint).ceiling
            adapter = self._adapters[endpoint.name] = create_adapter(endpoint, max_connections=connections)
            # Rate limits come back to _limited(), which slows the whole endpoint down.
            adapter.defer_rate_limits = True
        return adapter

    async def embed(
        self, endpoint: EndpointConfig | None, texts: list[str], model: str = ""
    ) -> list[list[float]]:
        """Vectors from the endpoint's embedding model, else from the local MiniLM.

        A text repeated in `texts` is embedded once; across calls, the embedding
        scorer's bounded LRU (engine/scorers/embedding.py) is the one cache."""
        if endpoint is not None and (model or endpoint.embedding_model):
            backend, model = endpoint, model or endpoint.embedding_model
        else:
            backend, model = LOCAL_EMBEDDER, ""
        distinct = list(dict.fromkeys(texts))
        if backend is LOCAL_EMBEDDER:
            vectors = await self.adapter(backend).embed(distinct, model)
        else:
            adapter = self.adapter(backend)
            vectors = await self._limited(backend, lambda: adapter.embed(distinct, model), admit=False)
        by_text = dict(zip(distinct, vectors, strict=True))
        return [by_text[t] for t in texts]

    async def flush(self) -> None:
        await self.cache.flush()

    async def aclose(self) -> None:
        """Write buffered cache entries and close every adapter's connections."""
        try:
            await self.cache.flush()
        finally:
            adapters, self._adapters = list(self._adapters.values()), {}
            for adapter in adapters:
                await adapter.aclose()
