"""The lean HTTP/1.1 transport against a raw loopback server that misbehaves in
the ways real servers do: chunked bodies, bodies that end at close, connections
closed while idle, interim 100 responses."""

import asyncio

import httpx
import pytest

from engine.adapters.transport import LeanTransport


async def serve(reply: bytes, close_after: bool = False):
    """A server that answers every request on a connection with `reply`."""
    connections = []

    async def handle(reader, writer):
        connections.append(writer)
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            writer.write(reply)
            await writer.drain()
            if close_after:
                writer.close()
                break

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/", connections


@pytest.mark.asyncio
async def test_chunked_bodies_are_decoded_and_the_connection_reused():
    reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    server, url, connections = await serve(reply)
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        assert (await client.get(url)).text == "hello world"
        assert (await client.get(url)).text == "hello world"
    assert len(connections) == 1
    server.close()


@pytest.mark.asyncio
async def test_a_body_without_length_ends_at_close():
    server, url, connections = await serve(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", close_after=True)
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        assert (await client.get(url)).text == "until the end"
        assert (await client.get(url)).text == "until the end"
    assert len(connections) == 2
    server.close()


@pytest.mark.asyncio
async def test_a_kept_alive_connection_closed_by_the_server_is_replaced():
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    server, url, connections = await serve(reply, close_after=True)  # says keep-alive, then closes
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        for _ in range(3):
            assert (await client.get(url)).text == "ok"
            await asyncio.sleep(0.01)
    assert len(connections) == 3
    server.close()


@pytest.mark.asyncio
async def test_interim_100_continue_is_skipped():
    reply = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone"
    server, url, _ = await serve(reply)
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        response = await client.post(url, json={"x": 1})
    assert response.status_code == 201 and response.text == "done"
    server.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("method", "reply"),
    [
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
        ("GET", b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n'),
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"),
        ("GET", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"),
    ],
    ids=["204", "304", "HEAD", "100-then-204"],
)
async def test_an_answer_without_a_body_returns_at_once_and_keeps_the_connection(method, reply):
    # No Content-Length and a kept-alive connection: reading the body "until close"
    # would wait out the 30 s read timeout.
    server, url, connections = await serve(reply)
    async with httpx.AsyncClient(transport=LeanTransport(), timeout=30) as client:
        for _ in range(2):
            response = await asyncio.wait_for(client.request(method, url), 5)
            assert response.content == b""
    assert len(connections) == 1
    server.close()


@pytest.mark.asyncio
async def test_a_garbled_status_line_is_a_protocol_error():
    server, url, _ = await serve(b"SPDY/9 what\r\n\r\n")
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        with pytest.raises(httpx.RemoteProtocolError, match="Malformed status line"):
            await client.get(url)
    server.close()


@pytest.mark.asyncio
async def test_connections_are_capped_and_a_full_pool_times_out():
    async def slow(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(0.3)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    server = await asyncio.start_server(slow, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    timeout = httpx.Timeout(5, pool=0.1)
    async with httpx.AsyncClient(transport=LeanTransport(max_connections=1), timeout=timeout) as client:
        first = asyncio.create_task(client.get(url))
        await asyncio.sleep(0.05)
        with pytest.raises(httpx.PoolTimeout):
            await client.get(url)
        assert (await first).status_code == 200
    server.close()
