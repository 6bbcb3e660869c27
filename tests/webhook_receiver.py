"""A webhook receiver on 127.0.0.1 for tests: records what arrives, answers as scripted.

TCP_NODELAY is set and each answer goes out in one write, so a test measures
PromptLooper, not Nagle's algorithm.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from tests.loopback import LoopbackHandler, LoopbackServer


@dataclass
class Received:
    headers: dict[str, str]  # names lowercased
    body: bytes
    path: str


class WebhookReceiver(LoopbackServer):
    """`fail_next(2)` answers 500 twice, then 200 again; `hang_next()` never answers
    (until the receiver stops)."""

    def __init__(self, status: int = 200, reply: bytes = b'{"ok": true}'):
        self.status = status
        self.reply = reply
        self.received: list[Received] = []
        self._script: deque[int | None] = deque()  # a status, or None to hang
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        super().__init__()

    def stop(self) -> None:
        self._stopping.set()  # releases hanging handlers
        super().stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def calls(self) -> int:
        return len(self.received)

    def fail_next(self, count: int = 1, status: int = 500) -> None:
        self._script.extend([status] * count)

    def hang_next(self, count: int = 1) -> None:
        self._script.extend([None] * count)

    def always_fail(self, status: int = 500) -> None:
        self.status = status

    def _record(self, received: Received) -> int | None:
        with self._lock:
            self.received.append(received)
            return self._script.popleft() if self._script else self.status


class _Handler(LoopbackHandler):
    @property
    def receiver(self) -> WebhookReceiver:
        return self.server_owner

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        status = self.receiver._record(Received(headers, body, self.path))
        if status is None:
            self.receiver._stopping.wait()
            self.close_connection = True
            return
        reply = self.receiver.reply if status < 400 else b'{"error": "scripted failure"}'
        head = [
            f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}",
            "Content-Type: application/json",
            f"Content-Length: {len(reply)}",
        ]
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode() + reply)
        self.wfile.flush()


WebhookReceiver.handler_class = _Handler
