"""Semantic similarity between the output and the reference answer."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import threading
from collections import OrderedDict
from typing import Any

from engine.scorers.base import BaseScorer, register_scorer
from engine.types import EndpointConfig, ScoreContext, ScoreOutcome, ScorerError

Vector = list[float]
CacheKey = tuple[str, str, str]  # (endpoint base URL, model, text)


class EmbeddingCache:
    """An in-process LRU of embeddings, so a reference shared by every item of a
    sweep is embedded once, even when many items are scored concurrently."""

    def __init__(self, maxsize: int = 4096):
        self.maxsize = maxsize
        self._vectors: OrderedDict[CacheKey, Vector] = OrderedDict()
        self._lock = threading.Lock()  # runners may score from several threads
        # Embeddings being fetched, per event loop, so concurrent items wait for
        # the first request instead of sending their own.
        self._pending: dict[tuple[int, CacheKey], asyncio.Future[Vector]] = {}

    def get(self, key: CacheKey) -> Vector | None:
        with self._lock:
            vector = self._vectors.get(key)
            if vector is not None:
                self._vectors.move_to_end(key)
            return vector

    def put(self, key: CacheKey, vector: Vector) -> None:
        with self._lock:
            self._vectors[key] = vector
            self._vectors.move_to_end(key)
            while len(self._vectors) > self.maxsize:
                self._vectors.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._vectors.clear()

    def __len__(self) -> int:
        return len(self._vectors)

    async def embed(
        self, llm: Any, endpoint: EndpointConfig | None, model: str, texts: list[str]
    ) -> list[Vector]:
        base_url = endpoint.base_url if endpoint else ""
        keys = [(base_url, model, text) for text in texts]
        loop_id = id(asyncio.get_running_loop())
        waiting: dict[CacheKey, asyncio.Future[Vector]] = {}
        to_fetch: list[CacheKey] = []
        for key in dict.fromkeys(keys):
            if self.get(key) is not None:
                continue
            if (loop_id, key) in self._pending:
                waiting[key] = self._pending[(loop_id, key)]
            else:
                to_fetch.append(key)
        if to_fetch:
            await self._fetch(llm, endpoint, model, to_fetch, loop_id)
        for future in waiting.values():
            await future
        return [self._require(key) for key in keys]

    async def _fetch(
        self, llm: Any, endpoint: EndpointConfig | None, model: str, keys: list[CacheKey], loop_id: int
    ) -> None:
        loop = asyncio.get_running_loop()
        futures = {key: loop.create_future() for key in keys}
        self._pending.update({(loop_id, key): fut for key, fut in futures.items()})
        try:
            vectors = await llm.embed(endpoint, [key[2] for key in keys], model)
            if len(vectors) != len(keys):
                raise ScorerError(f"asked for {len(keys)} embeddings, got {len(vectors)}")
            for key, vector in zip(keys, vectors, strict=True):
                self.put(key, list(vector))
                futures[key].set_result(vector)
        except BaseException as error:
            for future in futures.values():
                if not future.done():
                    future.set_exception(error)
                    future.exception()  # marked retrieved: nobody may be waiting
            raise
        finally:
            for key in keys:
                self._pending.pop((loop_id, key), None)

    def _require(self, key: CacheKey) -> Vector:
        vector = self.get(key)
        if vector is None:  # evicted between fetch and use: only with a tiny maxsize
            raise ScorerError("embedding cache is too small for one scoring call")
        return vector


CACHE = EmbeddingCache()


def cosine(a: Vector, b: Vector) -> float | None:
    """Cosine similarity, or None when either vector is all zeros."""
    if len(a) != len(b):
        raise ScorerError(f"embeddings have different sizes ({len(a)} and {len(b)})")
    norm = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    if norm == 0:
        return None
    return math.fsum(x * y for x, y in zip(a, b, strict=True)) / norm


@register_scorer
class EmbeddingScorer(BaseScorer):
    """Score = max(0, cosine(embed(output), embed(reference))).

    Sentence embeddings of unrelated texts sit near 0 and rarely go far below,
    so a negative cosine means "unrelated" and scores 0 rather than being
    rescaled. An empty output scores 0 without a call; a missing reference is a
    ScorerError. `model` defaults to the endpoint's embedding_model; with none,
    the LLM client uses its bundled local model.
    """

    type = "embedding"
    description = "Cosine similarity between the output and the reference answer's embeddings."
    costs_tokens = True  # an embedding endpoint may bill for the call

    @classmethod
    def spends_tokens(cls, config: dict[str, Any], endpoint: Any = None) -> bool:
        # Without an embedding model the bundled MiniLM embeds offline: no call, no bill.
        return bool((config or {}).get("model") or getattr(endpoint, "embedding_model", ""))

    @dataclasses.dataclass
    class Options:
        model: str = ""
        threshold: float | None = None
        reference_field: str = ""

    def check_options(self) -> None:
        threshold = self.options.threshold
        if threshold is not None and not -1 <= threshold <= 1:
            raise self.config_error(f"threshold is a cosine, between -1 and 1; got {threshold}")

    def model_for(self, context: ScoreContext) -> str:
        if self.options.model:
            return self.options.model
        return context.endpoint.embedding_model if context.endpoint else ""

    async def score_async(self, input_data: dict, output: str, context: ScoreContext) -> ScoreOutcome:
        field = self.options.reference_field
        if field:
            target = str(input_data.get(field) or "")
            if not target.strip():
                return self.outcome(None, {"skipped": f"the item has no '{field}'"})
            return await self.compare(output, target, context)
        return await self.compare(output, context.reference, context)

    async def compare(self, output: str, reference: str, context: ScoreContext) -> ScoreOutcome:
        if not reference.strip():
            raise ScorerError(
                f"{self.label} needs a reference: give the dataset items a reference "
                "answer, or use another scorer",
                permanent=True,
            )
        if not output.strip():
            return self.outcome(0.0, {"reason": "empty output"})
        if context.llm is None:
            raise ScorerError(f"{self.label} needs an LLM client in the score context")
        model = self.model_for(context)
        out_vec, ref_vec = await CACHE.embed(context.llm, context.endpoint, model, [output, reference])
        similarity = cosine(out_vec, ref_vec)
        details = {"cosine": similarity, "model": model}
        value = max(0.0, min(1.0, similarity or 0.0))
        if self.options.threshold is not None:
            value = float((similarity or 0.0) >= self.options.threshold)
        return self.outcome(value, details)
