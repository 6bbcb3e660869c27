"""A small OpenAI-compatible server on 127.0.0.1 for tests and benchmarks.

It serves /v1/models, /v1/chat/completions (plain and SSE streaming) and
/v1/embeddings, with scripted latency, faults and replies, and counts what it
is asked. `response_formats` plays a server that knows only some forms of
structured output and refuses the others, as llama-cpp-python's server does.
TCP_NODELAY is set and every response goes out in one write: otherwise
Nagle's algorithm and delayed ACKs stall each keep-alive request ~40 ms and a
benchmark would measure the stub, not PromptLooper.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.loopback import LoopbackHandler, LoopbackServer

Responder = Callable[[dict[str, Any]], str]


def echo_responder(body: dict[str, Any]) -> str:
    """Answer with the last user message, so a test can see what was sent."""
    user = [m["content"] for m in body.get("messages", []) if m.get("role") == "user"]
    return f"echo: {user[-1] if user else ''}"


def count_tokens(text: str) -> int:
    return len(text.split())


def embed_text(text: str, dims: int = 64) -> list[float]:
    """A deterministic bag-of-words vector: texts sharing words are similar."""
    vec = [0.0] * dims
    for word in text.lower().split():
        digest = hashlib.sha256(word.strip(".,!?").encode()).digest()
        vec[digest[0] % dims] += 1.0 if digest[1] % 2 else -1.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


@dataclass
class Fault:
    """One scripted misbehaviour for the next chat completion.

    kind: "status" (send `status` with `body` and `headers`), "malformed" (200
    with broken JSON), "truncated" (a stream cut off mid-way), "hang" (sleep
    `seconds` before answering normally), "disconnect" (close without a reply).
    """

    kind: str
    status: int = 500
    body: str = '{"error": {"message": "scripted failure"}}'
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


class LLMStub(LoopbackServer):
    def __init__(
        self,
        responder: Responder = echo_responder,
        latency_ms: float | Callable[[dict[str, Any]], float] = 0.0,
        models: tuple[str, ...] = ("stub-small", "stub-large"),
        send_usage: bool = True,
        response_formats: tuple[str, ...] | None = None,
    ):
        # What reset() puts back: each test sharing a stub starts from these.
        self._defaults: dict[str, Any] = {
            "responder": responder,
            "latency_ms": latency_ms,
            "models": models,
            "send_usage": send_usage,
            # The response_format types taken (and then ignored); None takes any.
            "response_formats": response_formats,
        }
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._era = 0  # drop_held() starts a new one: calls of an earlier era are never answered
        # reset() starts a new generation: a call of an earlier one (a test that is over)
        # is never answered and no longer counted.
        self._generation = 0
        self._restore()
        super().__init__()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- scripting and counting ------------------------------------------
    def fail_next(self, kind: str = "status", count: int = 1, **kwargs: Any) -> None:
        for _ in range(count):
            self.faults.append(Fault(kind=kind, **kwargs))

    def script(self, *replies: str) -> None:
        """Answer the next chat completions with these texts, in order; then the responder."""
        with self._lock:
            self.scripted.extend(replies)

    def _reply(self, body: dict[str, Any]) -> str:
        with self._lock:
            scripted = self.scripted.popleft() if self.scripted else None
        return scripted if scripted is not None else self.responder(body)

    def refuses(self, body: dict[str, Any]) -> str | None:
        """The type of a response_format this server does not know, if the body has one."""
        kind = (body.get("response_format") or {}).get("type")
        if kind is None or self.response_formats is None or kind in self.response_formats:
            return None
        return str(kind)

    @property
    def calls(self) -> int:
        """Chat completions received (faulty ones included)."""
        return len(self.requests)

    def reset(self) -> None:
        """Back to the state the constructor left: every setting, script, fault, count and
        hold. A call still held (hold_after) or still being served for an earlier test is
        dropped unanswered and no longer counted."""
        with self._lock:
            self._generation += 1
            self._era += 1
            self._restore()
        self._released.set()  # release any handler waiting in _admit()

    def _restore(self) -> None:
        for name, value in self._defaults.items():
            setattr(self, name, value)
        self.scripted: deque[str] = deque()
        self.faults: deque[Fault] = deque()
        self.requests: list[dict[str, Any]] = []
        self.embedding_requests: list[dict[str, Any]] = []
        self.request_times: list[float] = []
        self.request_headers: list[dict[str, str]] = []  # per chat completion, names lowercased
        self.models_request_headers: list[dict[str, str]] = []  # per GET /models (connection tests)
        self.request_ports: list[int] = []  # the client's port: one per kept-alive connection
        self.answered: list[dict[str, Any]] = []  # chat completions whose answer went out: paid for
        self.in_flight = 0
        self.max_in_flight = 0
        # Plays a rate-limited server: a chat completion that arrives while this many are
        # being served is answered 429 at once, with `retry_after` as its Retry-After.
        self.capacity: int | None = None
        self.retry_after = "1"
        self.serving = 0
        self.max_serving = 0
        self.rate_limited = 0  # 429s sent for capacity
        self._answer_limit: int | None = None
        self._admitted = 0

    def _record(
        self, body: dict[str, Any], headers: dict[str, str] | None = None, port: int = 0
    ) -> Fault | None:
        with self._lock:
            self.requests.append(body)
            self.request_headers.append(headers or {})
            self.request_ports.append(port)
            self.request_times.append(time.monotonic())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self.faults.popleft() if self.faults else None

    def hold_after(self, answers: int) -> None:
        """Answer `answers` more chat completions, then hold every further one
        unanswered until drop_held() (as a server would when its client dies mid-call)."""
        with self._lock:
            self._answer_limit, self._admitted = answers, 0
            self._released.clear()

    def drop_held(self) -> None:
        """Close every call that arrived so far and is not answered yet, without an
        answer (its client died: nothing paid), and answer every later call."""
        with self._lock:
            self._answer_limit, self._era = None, self._era + 1
        self._released.set()

    def _admit(self, era: int) -> bool:
        """False: the call is dropped unanswered."""
        with self._lock:
            if era < self._era:
                return False
            if self._answer_limit is None or self._admitted < self._answer_limit:
                self._admitted += 1
                return True
        self._released.wait()
        return False

    def _take_capacity(self) -> bool | None:
        """False: over capacity, to be refused with a 429; True: one taken; None: no capacity set."""
        with self._lock:
            if self.capacity is None:
                return None
            if self.serving >= self.capacity:
                self.rate_limited += 1
                return False
            self.serving += 1
            self.max_serving = max(self.max_serving, self.serving)
            return True

    def _give_capacity(self, generation: int) -> None:
        with self._lock:
            if generation == self._generation:
                self.serving -= 1

    def _done(self, generation: int) -> None:
        with self._lock:
            if generation == self._generation:
                self.in_flight -= 1

    def _answered(self, body: dict[str, Any], generation: int) -> None:
        with self._lock:
            if generation == self._generation:
                self.answered.append(body)

    def _latency(self, body: dict[str, Any]) -> float:
        value = self.latency_ms(body) if callable(self.latency_ms) else self.latency_ms
        return value / 1000.0


class _Handler(LoopbackHandler):
    @property
    def stub(self) -> LLMStub:
        return self.server_owner

    # -- plumbing --------------------------------------------------------
    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        head = [
            f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            "Connection: keep-alive",
        ]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        self.wfile.flush()

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode())

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        return json.loads(raw or b"{}")

    # -- routes ----------------------------------------------------------
    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self.stub.models_request_headers.append({k.lower(): v for k, v in self.headers.items()})
            with self.stub._lock:
                fault = self.stub.faults.popleft() if self.stub.faults else None
            if fault is not None and self._apply_fault(fault):
                return None
            data = [{"id": m, "object": "model", "owned_by": "stub"} for m in self.stub.models]
            return self._json(200, {"object": "list", "data": data})
        if self.path == "/_stats":  # for a stub in another process (benchmarks)
            return self._json(200, {"calls": self.stub.calls, "max_in_flight": self.stub.max_in_flight})
        self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        path = self.path.rstrip("/")
        try:
            body = self._body()
        except json.JSONDecodeError:
            return self._json(400, {"error": {"message": "request body is not JSON"}})
        if path in ("/v1/chat/completions", "/chat/completions"):
            return self._chat(body)
        if path in ("/v1/embeddings", "/embeddings"):
            return self._embeddings(body)
        self._json(404, {"error": {"message": f"no route {self.path}"}})

    def _embeddings(self, body: dict[str, Any]) -> None:
        self.stub.embedding_requests.append(body)
        texts = body.get("input", [])
        texts = [texts] if isinstance(texts, str) else texts
        data = [{"object": "embedding", "index": i, "embedding": embed_text(t)} for i, t in enumerate(texts)]
        usage = {"prompt_tokens": sum(count_tokens(t) for t in texts)}
        self._json(200, {"object": "list", "data": data, "model": body.get("model"), "usage": usage})

    def _chat(self, body: dict[str, Any]) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        era, generation = self.stub._era, self.stub._generation
        fault = self.stub._record(body, headers, self.client_address[1])
        taken = self.stub._take_capacity()
        if taken is False:
            try:
                message = {"error": {"message": "Rate limit reached, retry later", "type": "rate_limit"}}
                return self._send(
                    429, json.dumps(message).encode(), headers={"Retry-After": self.stub.retry_after}
                )
            finally:
                self.stub._done(generation)
        try:
            time.sleep(self.stub._latency(body))
            if not self.stub._admit(era):
                self.close_connection = True
                return
            if fault and self._apply_fault(fault):
                return
            refused = self.stub.refuses(body)
            if refused is not None:
                known = " or ".join(f'"{k}"' for k in ("text", *(self.stub.response_formats or ())))
                message = f"response_format type must be one of {known}, but got: {refused}"
                return self._json(400, {"error": {"message": message, "code": 400}})
            text = self.stub._reply(body)
            if body.get("stream"):
                self._stream(body, text)
            else:
                self._json(200, self._completion(body, text))
            self.stub._answered(body, generation)
        finally:
            if taken:
                self.stub._give_capacity(generation)
            self.stub._done(generation)

    def _apply_fault(self, fault: Fault) -> bool:
        """Send the fault's reply; False means 'then answer normally'."""
        if fault.kind == "hang":
            time.sleep(fault.seconds)
            return False
        if fault.kind == "status":
            self._send(fault.status, fault.body.encode(), headers=fault.headers)
        elif fault.kind == "malformed":
            self._send(200, b'{"choices": [{"message": {"content": "cut')
        elif fault.kind == "truncated":
            chunk = {"choices": [{"index": 0, "delta": {"content": "partial"}}]}
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Content-Length: 100000\r\n\r\n" + f"data: {json.dumps(chunk)}\n\n".encode()
            )
            self.close_connection = True
        elif fault.kind == "disconnect":
            self.close_connection = True
        return True

    def _usage(self, body: dict[str, Any], text: str) -> dict[str, int]:
        prompt = " ".join(m.get("content", "") for m in body.get("messages", []))
        tin, tout = count_tokens(prompt), count_tokens(text)
        return {"prompt_tokens": tin, "completion_tokens": tout, "total_tokens": tin + tout}

    def _completion(self, body: dict[str, Any], text: str) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "id": "chatcmpl-stub",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
            ],
        }
        if self.stub.send_usage:
            payload["usage"] = self._usage(body, text)
        return payload

    def _stream(self, body: dict[str, Any], text: str) -> None:
        model = body.get("model", "")
        words = text.split(" ")
        events = []
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            events.append(
                {
                    "id": "chatcmpl-stub",
                    "object": "chat.completion.chunk",
                    "model": model,
                    "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                }
            )
        events.append(
            {
                "id": "chatcmpl-stub",
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            }
        )
        wants_usage = (body.get("stream_options") or {}).get("include_usage")
        if self.stub.send_usage and wants_usage:
            events.append(
                {
                    "id": "chatcmpl-stub",
                    "object": "chat.completion.chunk",
                    "model": model,
                    "choices": [],
                    "usage": self._usage(body, text),
                }
            )
        sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        self._send(200, sse.encode(), content_type="text/event-stream")


LLMStub.handler_class = _Handler


def main() -> None:
    """Serve a stub from its own process: `python -m tests.llm_stub --latency-ms 50`."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    stub = LLMStub(latency_ms=args.latency_ms).start()
    print(stub.base_url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
