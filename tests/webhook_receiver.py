"""A webhook receiver on 127.0.0.1 for tests: records what arrives, answers as scripted.

TCP_NODELAY is set and each answer goes out in one write, so a test measures
PromptLooper, not Nagle's algorithm.
"""

from __future__ import annotations

import socket
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    headers: dict[str, str]  # names lowercased
    body: bytes
    path: str


class WebhookReceiver:
    """`fail_next(2)` answers 500 twice, then 200 again; `hang_next()` never answers
    (until the receiver stops)."""

    def __init__(self, status: int = 200, reply: bytes = b'{"ok": true}'):
        self.status = status
        self.reply = reply
        self.received: list[Received] = []
        self._script: deque[int | None] = deque()  # a status, or None to hang
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> WebhookReceiver:
        handler = type("Handler", (_Handler,), {"receiver": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases hanging handlers
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the receiver first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

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


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Handler(BaseHTTPRequestHandler):
    receiver: WebhookReceiver
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

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
