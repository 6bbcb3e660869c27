"""The adapter base class and the registry of adapters, keyed by name.

Adding an adapter = one module with a `@register_adapter("name")` class, plus
one import line in `engine/adapters/__init__.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypedDict, TypeVar

from engine.types import AdapterError, AdapterResponse, EndpointConfig, Messages


class ConnectionReport(TypedDict):
    ok: bool
    status: int | None  # the HTTP status of a refusal
    models: list[str]
    latency_ms: float
    # Never the response body: whoever tests an endpoint may have pointed it at any
    # server, so only the server's own error message (OpenAI-style) comes back.
    error: str | None


def estimate_tokens(text: str) -> int:
    """About four characters a token; never zero for non-empty text."""
    return (len(text) + 3) // 4


class BaseAdapter:
    name: str = ""
    can_complete: bool = True
    can_stream: bool = False
    can_embed: bool = False
    # Whether to ask the server for output that follows a JSON schema
    # (`response_format`); a server that turns the request down is asked without it.
    can_structured_output: bool = False

    def __init__(self, endpoint: EndpointConfig, max_connections: int = 64):
        self.endpoint = endpoint
        self.max_connections = max_connections  # the most calls the gateway sends at once

    @classmethod
    def estimate_tokens(cls, text: str) -> int:
        """The tokens `text` will count as in a call, before any call is made (a sweep's
        estimate). An adapter whose server has a tokenizer of its own may override this."""
        return estimate_tokens(text)

    @classmethod
    def estimate_call_tokens(cls, messages: Messages) -> int:
        """The prompt tokens of a call with these messages."""
        return sum(cls.estimate_tokens(m.get("content") or "") for m in messages)

    async def complete(self, messages: Messages, model: str, params: dict[str, Any]) -> AdapterResponse:
        raise AdapterError(
            f"Endpoint '{self.endpoint.name}' uses the '{self.name}' adapter, which cannot "
            "run chat completions; point the stage at an endpoint with the 'openai' adapter.",
            permanent=True,
        )

    async def embed(self, texts: list[str], model: str) -> list[list[float]]:
        raise AdapterError(
            f"Endpoint '{self.endpoint.name}' uses the '{self.name}' adapter, which cannot "
            "compute embeddings; pick an endpoint whose adapter can (e.g. 'local-minilm').",
            permanent=True,
        )

    async def list_models(self) -> list[str]:
        return []

    async def test_connection(self) -> ConnectionReport:
        """Ask the endpoint for its models; reports failure instead of raising."""
        start = time.perf_counter()
        try:
            models = await self._probe_models()
        except AdapterError as exc:
            return ConnectionReport(
                ok=False, status=exc.status, models=[], latency_ms=_ms_since(start), error=exc.public
            )
        except Exception as exc:  # a UI button: any failure is a report, never a crash
            error = type(exc).__name__
            return ConnectionReport(
                ok=False, status=None, models=[], latency_ms=_ms_since(start), error=error
            )
        return ConnectionReport(ok=True, status=None, models=models, latency_ms=_ms_since(start), error=None)

    async def _probe_models(self) -> list[str]:
        return await self.list_models()

    async def aclose(self) -> None:
        pass

    async def __aenter__(self) -> BaseAdapter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


ADAPTERS: dict[str, type[BaseAdapter]] = {}

A = TypeVar("A", bound=type[BaseAdapter])


def register_adapter(name: str) -> Callable[[A], A]:
    def register(cls: A) -> A:
        known = ADAPTERS.get(name)
        # A reloaded module re-registers the same class; a different class is a name clash.
        if known and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(
                f"Adapter name '{name}' is taken by {known.__module__}.{known.__qualname__}; "
                "register this adapter under another name."
            )
        cls.name = name
        ADAPTERS[name] = cls
        return cls

    return register


def adapter_class(endpoint: EndpointConfig) -> type[BaseAdapter]:
    """The class of the endpoint's adapter, for its capabilities."""
    cls = ADAPTERS.get(endpoint.adapter)
    if cls is None:
        known = ", ".join(sorted(ADAPTERS)) or "none"
        raise AdapterError(
            f"Endpoint '{endpoint.name}' uses unknown adapter '{endpoint.adapter}'; "
            f"known adapters: {known}. Edit the endpoint and pick one of those.",
            permanent=True,
        )
    return cls


def create_adapter(endpoint: EndpointConfig, **options: Any) -> BaseAdapter:
    """The endpoint's adapter; `options` (e.g. max_connections) go to its constructor."""
    return adapter_class(endpoint)(endpoint, **options)


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
