"""A lean HTTP/1.1 keep-alive transport for httpx.

httpcore's pool rescans every connection (and asks each socket whether it is
readable) for every queued request, so at 32 concurrent calls a sweep spent
~6 ms of CPU per call in the client alone. LLM servers speak plain HTTP/1.1
with keep-alive: this transport keeps a stack of idle connections per origin
and parses responses itself, at a small fraction of that cost. httpx still
builds requests, applies headers and timeouts, and raises its own exceptions,
so the adapter's error handling is unchanged.

`make_client` builds the adapter's client: with this transport, origins that the
environment sends through a proxy (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY,
read by httpx's own rules) go through httpx's transport, which speaks to proxies
(absolute-form requests for http://, CONNECT tunnels for https://); the rest
stay on this one. Or httpx's own transport throughout (LLM_HTTP_TRANSPORT=httpx).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx
from httpx._utils import get_environment_proxies  # httpx's own trust_env reading

Origin = tuple[str, str, int]
MAX_HEADER_BYTES = 64 * 1024
READ_CHUNK = 64 * 1024
EAGER_BODY_BYTES = 1024 * 1024  # bodies of a known length up to this are read before returning
# The clients make_client builds, by name (the LLM_HTTP_TRANSPORT setting).
HTTP_TRANSPORTS = ("lean", "httpx")
# Answers that never have a body, whatever their headers say (RFC 9112 section 6.3).
BODILESS_STATUSES = frozenset({204, 304})


class ProxyConfigError(ValueError):
    """A proxy set in the environment that httpx cannot use."""


def make_client(
    kind: str,
    *,
    headers: dict[str, str],
    timeout: httpx.Timeout,
    max_connections: int,
    ssl_context: ssl.SSLContext,
) -> httpx.AsyncClient:
    """An httpx client honouring proxy variables as any httpx client does (trust_env)."""
    if kind not in HTTP_TRANSPORTS:
        raise ValueError(f"unknown HTTP transport {kind!r}; known: {', '.join(HTTP_TRANSPORTS)}")
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    if kind == "httpx":
        try:
            return httpx.AsyncClient(headers=headers, timeout=timeout, verify=ssl_context, limits=limits)
        except (ImportError, ValueError) as exc:
            raise ProxyConfigError(str(exc)) from exc
    lean = LeanTransport(max_connections=max_connections, ssl_context=ssl_context)
    return httpx.AsyncClient(
        headers=headers, timeout=timeout, transport=lean, mounts=proxy_mounts(ssl_context, limits)
    )


def proxy_mounts(
    ssl_context: ssl.SSLContext, limits: httpx.Limits
) -> dict[str, httpx.AsyncBaseTransport | None]:
    """What httpx mounts for the environment's proxies when it makes its own transport
    (it skips them when handed one): URL patterns to a proxying transport, and NO_PROXY
    patterns to None, which httpx reads as "the client's transport"."""
    mounts: dict[str, httpx.AsyncBaseTransport | None] = {}
    # httpx's own reading (urllib's getproxies plus its NO_PROXY rules): the same
    # origins are proxied as with any httpx client.
    for pattern, url in get_environment_proxies().items():
        if url is None:
            mounts[pattern] = None
            continue
        try:
            mounts[pattern] = httpx.AsyncHTTPTransport(proxy=url, verify=ssl_context, limits=limits)
        except (ImportError, ValueError) as exc:  # a socks:// proxy without socksio, or a typo
            raise ProxyConfigError(f"proxy {url!r} for {pattern}: {exc}") from exc
    return mounts


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        self.writer.close()

    @property
    def usable(self) -> bool:
        # A server that closed an idle connection leaves EOF (or junk) in the buffer.
        return not self.writer.is_closing() and not self.reader.at_eof() and not self.reader._buffer  # noqa: SLF001


class LeanTransport(httpx.AsyncBaseTransport):
    def __init__(self, max_connections: int = 64, ssl_context: ssl.SSLContext | None = None):
        self.max_connections = max(1, max_connections)
        self.ssl_context = ssl_context
        self._slots = asyncio.Semaphore(self.max_connections)
        self._idle: dict[Origin, list[_Connection]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(
                f"Request URL has an unsupported protocol '{request.url.scheme}://'.", request=request
            )
        timeouts = request.extensions.get("timeout", {})
        origin = _origin(request.url)
        if self._slots.locked():  # a free slot is taken at once: no timer to set and cancel
            await _within(self._slots.acquire(), timeouts.get("pool"), httpx.PoolTimeout, request)
        else:
            await self._slots.acquire()
        try:
            body = await request.aread()
            conn, reused = await self._connection(origin, timeouts, request)
            try:
                head = await self._exchange(conn, request, body, timeouts)
            except (httpx.RemoteProtocolError, httpx.ReadError):
                if not reused:
                    raise
                # A kept-alive connection the server had closed: one fresh try, as browsers do.
                conn = await self._open(origin, timeouts, request)
                head = await self._exchange(conn, request, body, timeouts)
        except BaseException:
            self._slots.release()
            raise
        status, reason, headers = head
        stream = _Body(self, origin, conn, headers, request.method, status, timeouts.get("read"), request)
        extensions = {"http_version": b"HTTP/1.1", "reason_phrase": reason}
        if stream.small:
            # A whole JSON answer, read here: httpx then skips its chain of async
            # iterators and decoders, a third of what a call cost the client.
            content = b"".join([piece async for piece in stream])
            return httpx.Response(status, headers=headers, content=content, extensions=extensions)
        return httpx.Response(status, headers=headers, stream=stream, extensions=extensions)

    async def _exchange(
        self, conn: _Connection, request: httpx.Request, body: bytes, timeouts: dict
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        try:
            if self._write(conn, request, body):  # the request did not fit in the socket's buffer
                await _within(self._drain(conn, request), timeouts.get("write"), httpx.WriteTimeout, request)
            return await _within(self._read_head(conn), timeouts.get("read"), httpx.ReadTimeout, request)
        except BaseException:
            conn.close()
            raise

    async def _connection(
        self, origin: Origin, timeouts: dict, request: httpx.Request
    ) -> tuple[_Connection, bool]:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if conn.usable:
                return conn, True
            conn.close()
        return await self._open(origin, timeouts, request), False

    async def _open(self, origin: Origin, timeouts: dict, request: httpx.Request) -> _Connection:
        scheme, host, port = origin
        tls = None
        if scheme == "https":
            tls = self.ssl_context or ssl.create_default_context()
        try:
            reader, writer = await _within(
                asyncio.open_connection(
                    host, port, ssl=tls, server_hostname=host if tls else None, limit=MAX_HEADER_BYTES
                ),
                timeouts.get("connect"),
                httpx.ConnectTimeout,
                request,
            )
        except OSError as exc:
            raise httpx.ConnectError(f"{exc.strerror or exc} ({host}:{port})", request=request) from exc
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Connection(reader, writer)

    def _write(self, conn: _Connection, request: httpx.Request, body: bytes) -> bool:
        """Hand the request to the socket; True while some of it waits to be sent."""
        url = request.url
        target = url.raw_path.decode("ascii")
        lines = [f"{request.method} {target} HTTP/1.1".encode()]
        # httpx has already set Host and Content-Length.
        for name, value in request.headers.raw:
            lines.append(name + b": " + value)
        conn.writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        return conn.writer.transport.get_write_buffer_size() > 0

    async def _drain(self, conn: _Connection, request: httpx.Request) -> None:
        try:
            await conn.writer.drain()
        except OSError as exc:
            raise httpx.WriteError(str(exc), request=request) from exc

    async def _read_head(self, conn: _Connection) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        while True:
            try:
                raw = await conn.reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.") from exc
            except asyncio.LimitOverrunError as exc:
                raise httpx.RemoteProtocolError("Response headers are too large.") from exc
            except OSError as exc:
                raise httpx.ReadError(str(exc)) from exc
            status, reason, headers = _parse_head(raw)
            if status >= 200 or status == 101:
                return status, reason, headers  # 1xx interim answers are skipped

    def release(self, origin: Origin, conn: _Connection | None) -> None:
        if conn is not None:
            if len(self._idle.setdefault(origin, [])) < self.max_connections:
                self._idle[origin].append(conn)
            else:
                conn.close()
        self._slots.release()

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for conn in connections:
                conn.close()
        self._idle.clear()


class _Body(httpx.AsyncByteStream):
    """The response body; hands the connection back once it has been read to the end."""

    def __init__(
        self,
        transport: LeanTransport,
        origin: Origin,
        conn: _Connection,
        headers: list[tuple[bytes, bytes]],
        method: str,
        status: int,
        read_timeout: float | None,
        request: httpx.Request,
    ):
        self.transport, self.origin, self.conn = transport, origin, conn
        self.read_timeout, self.request = read_timeout, request
        fields = {k.lower(): v for k, v in headers}
        self.keep_alive = fields.get(b"connection", b"").lower() != b"close"
        self.chunked = b"chunked" in fields.get(b"transfer-encoding", b"").lower()
        length = fields.get(b"content-length")
        self.remaining = int(length) if length is not None and not self.chunked else None
        if method == "HEAD" or status in BODILESS_STATUSES or status < 200:
            # No body follows, even without a Content-Length: reading "until close"
            # would wait for the read timeout on a kept-alive connection.
            self.remaining, self.chunked = 0, False
            if status == 101:  # the connection now speaks another protocol
                self.keep_alive = False
        self.complete = False
        self.closed = False
        # Known to be short and not a stream of events (which its reader wants as it comes).
        self.small = (
            self.remaining is not None
            and self.remaining <= EAGER_BODY_BYTES
            and not fields.get(b"content-type", b"").startswith(b"text/event-stream")
        )

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for piece in self._pieces():
                yield piece
            self.complete = True
        finally:
            await self.aclose()

    async def _pieces(self) -> AsyncIterator[bytes]:
        reader = self.conn.reader
        if self.chunked:
            while True:
                line = await self._read(reader.readuntil(b"\r\n"))
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while (await self._read(reader.readuntil(b"\r\n"))) != b"\r\n":
                        pass  # trailers
                    return
                data = await self._read(reader.readexactly(size + 2))
                yield data[:-2]
        elif self.remaining is not None:
            while self.remaining > 0:
                data = await self._read(reader.read(min(self.remaining, READ_CHUNK)))
                if not data:
                    raise httpx.RemoteProtocolError(
                        f"peer closed connection without sending complete message body "
                        f"({self.remaining} bytes missing)",
                        request=self.request,
                    )
                self.remaining -= len(data)
                yield data
        else:
            self.keep_alive = False  # the body ends when the server closes
            while data := await self._read(reader.read(READ_CHUNK)):
                yield data

    async def _read(self, awaitable: Any) -> Any:
        try:
            return await _within(awaitable, self.read_timeout, httpx.ReadTimeout, self.request)
        except asyncio.IncompleteReadError as exc:
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body", request=self.request
            ) from exc
        except OSError as exc:
            raise httpx.ReadError(str(exc), request=self.request) from exc

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        reuse = self.complete and self.keep_alive
        if not reuse:
            self.conn.close()
        self.transport.release(self.origin, self.conn if reuse else None)


def _origin(url: httpx.URL) -> Origin:
    port = url.port or (443 if url.scheme == "https" else 80)
    return url.scheme, url.host, port


def _parse_head(raw: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    lines = raw[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise httpx.RemoteProtocolError(f"Malformed status line: {lines[0][:100]!r}")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise httpx.RemoteProtocolError(f"Malformed header line: {line[:100]!r}")
        headers.append((name.strip(), value.strip()))
    return int(parts[1]), parts[2] if len(parts) > 2 else b"", headers


async def _within(
    awaitable: Any, timeout: float | None, error: type[httpx.TimeoutException], request: httpx.Request
) -> Any:
    if timeout is None:
        return await awaitable
    try:
        # asyncio.timeout, not wait_for: wait_for wraps every read in a new task.
        async with asyncio.timeout(timeout):
            return await awaitable
    except TimeoutError as exc:
        raise error(f"timed out after {timeout:g} s", request=request) from exc
