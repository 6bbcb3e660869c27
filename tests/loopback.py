"""What the test servers on 127.0.0.1 (the LLM stub, the webhook receiver) share.

TCP_NODELAY is set on every connection and handlers answer in one write, or each
keep-alive request would stall ~40 ms on Nagle's algorithm and the tests would
measure that instead of PromptLooper.
"""

from __future__ import annotations

import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class LoopbackServer:
    """Starts `handler_class` on a free port; the handler reaches this object as
    `self.server_owner`. Use it as a context manager or call start()/stop()."""

    handler_class: type[LoopbackHandler]
    # Set before start() to serve HTTPS with this server-side context.
    tls: ssl.SSLContext | None = None

    def __init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> Self:
        handler = type("Handler", (self.handler_class,), {"server_owner": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, f"start() the {type(self).__name__} first"
        return self._server.server_address[1]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


class LoopbackHandler(BaseHTTPRequestHandler):
    server_owner: Any
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass
