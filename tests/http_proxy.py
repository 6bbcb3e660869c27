"""A forwarding HTTP proxy on 127.0.0.1 for tests, as a company proxy would be.

It forwards absolute-form requests (`POST http://host:port/path HTTP/1.1`, how a
client asks a proxy for an http:// URL) and tunnels CONNECT (how it asks for an
https:// one), and records each request line it saw. Host names are looked up
in `hosts` first: the proxy can reach names the client cannot resolve (as a
proxy with the company's DNS can). Every upstream answer goes back in one write,
on sockets with TCP_NODELAY.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from typing import Self
from urllib.parse import urlsplit

HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization", b"te", b"upgrade"}


class LoopbackProxy:
    def __init__(self, hosts: dict[str, str] | None = None):
        self.hosts = hosts or {}
        self.seen: list[str] = []  # "METHOD target" of each request, in order
        self._server: socketserver.ThreadingTCPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the proxy first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Self:
        handler = type("Handler", (_Handler,), {"proxy": self})
        self._server = _Server(("127.0.0.1", 0), handler)
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

    def connect(self, host: str, port: int) -> socket.socket:
        upstream = socket.create_connection((self.hosts.get(host, host), port), timeout=10)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return upstream


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Handler(socketserver.StreamRequestHandler):
    proxy: LoopbackProxy

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self) -> None:
        while True:  # one kept-alive client connection, many requests
            head = self._read_head()
            if not head:
                return
            method, target, _ = head[0].decode("latin-1").split(" ", 2)
            self.proxy.seen.append(f"{method} {target}")
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                self._tunnel(self.proxy.connect(host, int(port)))
                return
            self._forward(method, target, head[1:])

    def _read_head(self) -> list[bytes]:
        lines = []
        while line := self.rfile.readline(65536):
            if line in (b"\r\n", b"\n"):
                return lines
            lines.append(line.rstrip(b"\r\n"))
        return []

    def _forward(self, method: str, target: str, header_lines: list[bytes]) -> None:
        url = urlsplit(target)
        if not url.scheme or not url.hostname:  # origin-form: a client that did not mean us
            self.wfile.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return
        headers = [line.split(b":", 1) for line in header_lines]
        length = next((int(v) for k, v in headers if k.strip().lower() == b"content-length"), 0)
        body = self.rfile.read(length) if length else b""
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        kept = [b"%s:%s" % (k, v) for k, v in headers if k.strip().lower() not in HOP_BY_HOP]
        request = b"\r\n".join([f"{method} {path} HTTP/1.1".encode(), *kept, b"Connection: close"])
        with self.proxy.connect(url.hostname, url.port or 80) as upstream:
            upstream.sendall(request + b"\r\n\r\n" + body)
            answer = b"".join(iter(lambda: upstream.recv(65536), b""))
        self.wfile.write(answer)  # one write: headers and body together

    def _tunnel(self, upstream: socket.socket) -> None:
        self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        client = self.connection
        # Bytes the client sent after CONNECT would sit in rfile's buffer; a TLS client
        # waits for the 200 first, so there are none.
        other = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
        other.start()
        _pipe(client, upstream)
        other.join(10)
        upstream.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass
