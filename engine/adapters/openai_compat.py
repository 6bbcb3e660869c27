"""Any OpenAI-compatible server: vLLM, Ollama, llama.cpp, OpenWebUI, OpenAI itself."""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
from functools import cache, partial
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from engine.adapters.base import BaseAdapter, register_adapter
from engine.adapters.transport import ProxyConfigError, make_client
from engine.types import AdapterError, AdapterResponse, EndpointConfig, Messages, RateLimited

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# "Too many requests" and "overloaded": the answers that make the gateway slow down.
RATE_LIMIT_STATUSES = frozenset({429, 503})
EXCERPT_CHARS = 200


def normalise_base_url(url: str) -> str:
    """One spelling per server: scheme added, trailing slash dropped, /v1 added to a bare host.

    A path other than the root is kept as given (OpenWebUI serves under /api).
    """
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):  # a pasted full endpoint URL
        url = url[: -len("/chat/completions")]
    if urlsplit(url).path in ("", "/"):
        url += "/v1"
    return url


class _Failure(Exception):
    """One failed attempt; the retry loop turns the last one into an AdapterError."""

    def __init__(
        self,
        detail: str,
        hint: str,
        status: int | None = None,
        retryable: bool = False,
        permanent: bool = False,
        retry_after: float | None = None,
        public: str | None = None,
        rate_limited: bool = False,
    ):
        super().__init__(detail)
        self.detail = detail
        # What may be shown to whoever can point the endpoint anywhere (the connection
        # test): never the response body, at most the server's own error message.
        self.public = detail if public is None else public
        self.hint = hint
        self.status = status
        self.retryable = retryable
        self.permanent = permanent
        self.retry_after = retry_after
        self.rate_limited = rate_limited


@register_adapter("openai")
class OpenAICompatAdapter(BaseAdapter):
    can_stream = True
    can_embed = True
    can_structured_output = True  # OpenAI, vLLM, llama.cpp, Ollama >= 0.5 honour response_format
    max_attempts = 3
    retry_base_delay_s = 0.5
    max_backoff_s = 30.0
    max_retry_after_s = 60.0
    embed_batch_size = 256  # OpenAI caps one request at 2048 inputs; servers differ
    # Set by the gateway: a rate-limited answer is raised at once as RateLimited, for
    # the gateway to slow every call to this endpoint down (engine/concurrency.py).
    defer_rate_limits = False

    def __init__(
        self, endpoint: EndpointConfig, retry_base_delay_s: float | None = None, max_connections: int = 64
    ):
        super().__init__(endpoint, max_connections)
        if retry_base_delay_s is not None:
            self.retry_base_delay_s = retry_base_delay_s
        self.base_url = normalise_base_url(endpoint.base_url)
        # Parsed once: httpx re-parses a string URL on every request.
        self._chat_url = httpx.URL(self.base_url + "/chat/completions")
        headers = {"Accept": "application/json", **endpoint.extra_headers}
        if endpoint.api_key:
            headers["Authorization"] = f"Bearer {endpoint.api_key}"
        try:
            self._client = make_client(
                endpoint.http_transport,
                headers=headers,
                timeout=httpx.Timeout(endpoint.timeout_s),
                max_connections=max(1, max_connections),  # the calls the gateway lets through at once
                ssl_context=_ssl_context(),
            )
        except ProxyConfigError as exc:
            raise AdapterError(
                f"Endpoint '{endpoint.name}': the proxy set in the environment cannot be used ({exc}). "
                "Fix HTTP_PROXY, HTTPS_PROXY or ALL_PROXY (a socks:// proxy needs httpx[socks]).",
                permanent=True,
            ) from exc
        except ValueError as exc:
            raise AdapterError(
                f"Endpoint '{endpoint.name}': {exc}. Set LLM_HTTP_TRANSPORT to one of those.", permanent=True
            ) from exc
        # LLM APIs set no cookies we need; parsing Set-Cookie on every answer costs ~0.3 ms.
        self._client._cookies = _NoCookies()  # noqa: SLF001 - httpx has no switch for this

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- public API ------------------------------------------------------
    async def complete(self, messages: Messages, model: str, params: dict[str, Any]) -> AdapterResponse:
        body: dict[str, Any] = {**params, "model": model, "messages": messages}
        if body.pop("stream", False):
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
            return await self._retrying(lambda: self._stream_once(body, messages, model))
        body.pop("stream_options", None)  # OpenAI rejects it on a plain call
        return await self._retrying(lambda: self._complete_once(body, messages, model))

    async def list_models(self) -> list[str]:
        return await self._retrying(self._models_once)

    async def _probe_models(self) -> list[str]:
        # The test button answers at once: one attempt, no backoff.
        return await self._retrying(self._models_once, attempts=1)

    async def embed(self, texts: list[str], model: str) -> list[list[float]]:
        model = model or self.endpoint.embedding_model
        if not model:
            raise AdapterError(
                f"No embedding model for endpoint '{self.endpoint.name}'; "
                "set the endpoint's embedding model or pass one.",
                permanent=True,
            )
        vectors: list[list[float]] = []
        for i in range(0, len(texts), self.embed_batch_size):
            batch = texts[i : i + self.embed_batch_size]
            vectors += await self._retrying(partial(self._embed_once, batch, model))
        return vectors

    # -- one attempt each --------------------------------------------------
    async def _complete_once(self, body: dict[str, Any], messages: Messages, model: str) -> AdapterResponse:
        start = time.perf_counter()
        resp = await self._send(self._client.post(self._chat_url, content=_json_bytes(body), headers=JSON))
        data = self._json(resp)
        if not isinstance(data, dict):
            raise self._malformed("the body is not a JSON object", resp.text)
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise self._malformed_or_error(data, resp.text) from None
        tin, tout, estimated = _tokens(data.get("usage"), messages, text)
        return AdapterResponse(
            text=text,
            tokens_in=tin,
            tokens_out=tout,
            latency_ms=(time.perf_counter() - start) * 1000.0,
            model=data.get("model") or model,
            finish_reason=choice.get("finish_reason"),
            usage_estimated=estimated,
            raw=data,
        )

    async def _stream_once(self, body: dict[str, Any], messages: Messages, model: str) -> AdapterResponse:
        start = time.perf_counter()
        try:
            async with self._client.stream(
                "POST", self._chat_url, content=_json_bytes(body), headers=JSON
            ) as resp:
                if resp.status_code >= 300:
                    await resp.aread()
                    raise self._status_failure(resp)
                stream = _StreamState()
                async for line in resp.aiter_lines():
                    if stream.feed(line):
                        break
        except (httpx.RequestError, httpx.InvalidURL) as exc:
            raise self._transport_failure(exc) from exc
        if stream.error is not None:
            raise _Failure(
                f"the stream sent an error event: {_excerpt(stream.error)}",
                "The server rejected the request mid-stream; check the model and parameters.",
            )
        if stream.bad_chunk is not None:
            raise self._malformed("a stream chunk is not JSON", stream.bad_chunk)
        if stream.chunks == 0 and stream.stray is not None:
            raise _Failure(
                f"the server did not answer with server-sent events: {_excerpt(stream.stray)}",
                "The server may not support streaming; run without stream.",
            )
        if stream.finish_reason is None and not stream.done:
            raise _Failure(
                "the stream ended before it finished (no finish_reason and no [DONE])",
                "The connection was cut; check the server and any proxy in between.",
                retryable=True,
            )
        text = "".join(stream.pieces)
        tin, tout, estimated = _tokens(stream.usage, messages, text)
        return AdapterResponse(
            text=text,
            tokens_in=tin,
            tokens_out=tout,
            latency_ms=(time.perf_counter() - start) * 1000.0,
            model=stream.model or model,
            finish_reason=stream.finish_reason,
            usage_estimated=estimated,
            raw=stream.raw(),
        )

    async def _models_once(self) -> list[str]:
        resp = await self._send(self._client.get(self.base_url + "/models"))
        data = self._json(resp)
        entries = data.get("data", data.get("models")) if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise self._malformed("no 'data' list of models", resp.text)
        return [m.get("id") or m.get("name") or "" for m in entries if isinstance(m, dict)]

    async def _embed_once(self, texts: list[str], model: str) -> list[list[float]]:
        body = {"model": model, "input": texts}
        resp = await self._send(self._client.post(self.base_url + "/embeddings", json=body))
        data = self._json(resp)
        try:
            rows = sorted(data["data"], key=lambda row: row["index"])
            vectors = [row["embedding"] for row in rows]
        except (KeyError, TypeError):
            raise self._malformed_or_error(data, resp.text) from None
        if len(vectors) != len(texts):
            raise self._malformed(f"{len(vectors)} embeddings for {len(texts)} inputs", resp.text)
        return vectors

    # -- HTTP plumbing -----------------------------------------------------
    async def _send(self, request: Awaitable[httpx.Response]) -> httpx.Response:
        try:
            resp = await request
        except (httpx.RequestError, httpx.InvalidURL) as exc:
            raise self._transport_failure(exc) from exc
        if resp.status_code >= 300:
            raise self._status_failure(resp)
        return resp

    async def _retrying(self, attempt: Callable[[], Awaitable[T]], attempts: int = 0) -> T:
        attempts = attempts or self.max_attempts
        for n in range(1, attempts):
            try:
                return await attempt()
            except _Failure as failure:
                if not failure.retryable:
                    raise self._error(failure, n) from failure
                if failure.rate_limited and self.defer_rate_limits:
                    raise self._rate_limited(failure) from failure
                await asyncio.sleep(self._backoff(n, failure.retry_after))
        try:
            return await attempt()
        except _Failure as failure:
            if failure.rate_limited and self.defer_rate_limits:
                raise self._rate_limited(failure) from failure
            raise self._error(failure, attempts) from failure

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        delay = self.retry_base_delay_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
        delay = min(delay, self.max_backoff_s)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after_s))
        return delay

    def _error(self, failure: _Failure, attempts: int) -> AdapterError:
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        message = (
            f"Endpoint '{self.endpoint.name}' ({self.base_url}): {failure.detail} [{tries}]. {failure.hint}"
        )
        public = f"{failure.public} [{tries}]. {failure.hint}"
        return AdapterError(message, permanent=failure.permanent, status=failure.status, public=public)

    def _rate_limited(self, failure: _Failure) -> RateLimited:
        subject = f"Endpoint '{self.endpoint.name}' ({self.base_url})"
        status = failure.status or 429
        return RateLimited(subject, failure.detail, failure.public, status, failure.retry_after)

    def _status_failure(self, resp: httpx.Response) -> _Failure:
        status = resp.status_code
        retryable = status in RETRYABLE_STATUSES
        server_message = _server_error_message(resp)
        hint = _status_hint(status)
        if status == 429 and _error_code(resp) == "insufficient_quota":
            # OpenAI's "out of credit" is a 429 too, but waiting never helps.
            retryable, hint = False, "The account has no quota left; check its plan and billing."
        return _Failure(
            f"HTTP {status}: {_excerpt(resp.text)}",
            hint,
            public=f"HTTP {status}: {server_message}" if server_message else f"HTTP {status}",
            status=status,
            retryable=retryable,
            permanent=not retryable and 400 <= status < 500,
            retry_after=_retry_after(resp) if retryable else None,
            rate_limited=retryable and status in RATE_LIMIT_STATUSES,
        )

    def _transport_failure(self, exc: Exception) -> _Failure:
        if isinstance(exc, httpx.TimeoutException):
            return _Failure(
                f"no answer within {self.endpoint.timeout_s:g} s ({type(exc).__name__})",
                "The server is slow or stuck; raise the endpoint's timeout or lower concurrency.",
                retryable=True,
            )
        if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
            return _Failure(f"bad URL ({exc})", "Fix the endpoint's base URL.", permanent=True)
        return _Failure(
            f"connection failed ({type(exc).__name__}: {exc})",
            "Check that the server is running and the base URL is right.",
            retryable=isinstance(exc, httpx.TransportError),
        )

    def _json(self, resp: httpx.Response) -> Any:
        try:
            return json.loads(resp.content)
        except ValueError:
            raise self._malformed("the body is not JSON", resp.text) from None

    def _malformed(self, what: str, body: str) -> _Failure:
        return _Failure(
            f"malformed response, {what}: {_excerpt(body)}",
            "The server is not speaking the OpenAI API here; check the base URL and adapter.",
            public=f"malformed response, {what}",
        )

    def _malformed_or_error(self, data: Any, body: str) -> _Failure:
        # Some proxies answer 200 with an error object instead of an error status.
        if isinstance(data, dict) and data.get("error"):
            return _Failure(
                f"the server returned an error: {_excerpt(_error_message(data['error']))}",
                "Check the model name and parameters.",
            )
        return self._malformed("no choices/message (or data) in it", body)


class _StreamState:
    """Assembles SSE chunks into one answer, as the non-streaming call would give."""

    __slots__ = (
        "pieces",
        "finish_reason",
        "model",
        "usage",
        "last",
        "chunks",
        "done",
        "error",
        "bad_chunk",
        "event",
        "stray",
    )

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.finish_reason: str | None = None
        self.model = ""
        self.usage: Any = None
        self.last: dict[str, Any] | None = None
        self.chunks = 0
        self.done = False
        self.error: str | None = None
        self.bad_chunk: str | None = None
        self.event = ""
        self.stray: str | None = None  # the first non-SSE line, shown if no event came

    def feed(self, line: str) -> bool:
        """Take one SSE line; True means stop reading."""
        if not line:
            self.event = ""
            return False
        if line.startswith("event:"):
            self.event = line[6:].strip()
            return False
        if not line.startswith("data:"):
            # ": keep-alive" comments and id:/retry: fields are skipped too.
            if self.stray is None and not line.startswith((":", "id:", "retry:")):
                self.stray = line
            return False
        if self.done:
            return False
        payload = line[5:].strip()
        if payload == "[DONE]":
            # Read on to the end of the body: leaving early closes the keep-alive connection.
            self.done = True
            return False
        try:
            chunk = json.loads(payload)
        except ValueError:
            self.bad_chunk = payload
            return True
        if not isinstance(chunk, dict):
            self.bad_chunk = payload
            return True
        if self.event == "error" or chunk.get("error"):
            self.error = _error_message(chunk.get("error", chunk))
            return True
        self._take(chunk)
        return False

    def _take(self, chunk: dict[str, Any]) -> None:
        self.chunks += 1
        self.last = chunk
        self.model = chunk.get("model") or self.model
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            content = (choice.get("delta") or {}).get("content")
            if content:
                self.pieces.append(content)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    def raw(self) -> dict[str, Any]:
        return {
            "stream": True,
            "chunks": self.chunks,
            "model": self.model,
            "finish_reason": self.finish_reason,
            "usage": self.usage,
            "last_chunk": self.last,
        }


JSON = {"Content-Type": "application/json"}


class _NoCookies(httpx.Cookies):
    def extract_cookies(self, response: httpx.Response) -> None:
        pass


def _json_bytes(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


@cache
def _ssl_context() -> ssl.SSLContext:
    # Building one loads the CA bundle (~100 ms); every adapter can share it.
    return httpx.create_ssl_context()


def _tokens(usage: Any, messages: Messages, text: str) -> tuple[int, int, bool]:
    if isinstance(usage, dict):
        tin, tout = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(tin, int) and isinstance(tout, int):
            return tin, tout, False
    return OpenAICompatAdapter.estimate_call_tokens(messages), OpenAICompatAdapter.estimate_tokens(text), True


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # the HTTP-date form
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _status_hint(status: int) -> str:
    if status in (401, 403):
        return "Check the endpoint's API key."
    if status == 404:
        return "Check the base URL and the model name."
    if status == 429:
        return "The server is rate limiting; lower the run's concurrency or wait."
    if status >= 500:
        return "The server failed; check its logs, or try again later."
    return "The server rejected the request; check the model name and parameters."


def _error_message(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


def _error_code(resp: httpx.Response) -> str:
    """An OpenAI-style `error.code` (or `error.type`); "" otherwise."""
    try:
        error = json.loads(resp.content).get("error")
    except (ValueError, AttributeError):
        return ""
    if not isinstance(error, dict):
        return ""
    return str(error.get("code") or error.get("type") or "")


def _server_error_message(resp: httpx.Response) -> str:
    """An OpenAI-style `error.message` (or `error` text), at most EXCERPT_CHARS; "" otherwise."""
    try:
        error = json.loads(resp.content).get("error")
    except (ValueError, AttributeError):
        return ""
    message = error.get("message") if isinstance(error, dict) else error
    return _excerpt(message) if isinstance(message, str) else ""


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…"
