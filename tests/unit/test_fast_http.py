"""The load generator's HTTP client: keep-alive reuse, the connection limit, and every way an answer can fail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from src.loadtest.fast_http import ConnectionPool, HttpProtocolError, Target, request_head

OK = b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}"
CHUNKED = b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
TRUNCATED = b"HTTP/1.1 202 Accepted\r\ncontent-length: 10\r\nconnection: close\r\n\r\n{}"
CLOSE = b"HTTP/1.1 401 Unauthorized\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"


class ScriptedServer:
    """Answers each whole request (head + Content-Length body) with ``answer(n)``; None: stay silent."""

    def __init__(self, answer: Callable[[int], bytes | None]) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                self.requests.append(head + await reader.readexactly(length))
                reply = self.answer(len(self.requests))
                if reply is None:
                    await asyncio.sleep(10)
                    return
                writer.write(reply)
                await writer.drain()
                if b"connection: close" in reply:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"


@asynccontextmanager
async def serve(answer: Callable[[int], bytes | None]) -> AsyncIterator[tuple[str, ScriptedServer]]:
    server = ScriptedServer(answer)
    url = await server.start()
    try:
        yield url, server
    finally:
        assert server.server is not None
        server.server.close()


def post(target: Target, body: bytes = b"{}") -> bytes:
    return request_head(target, "/ingest", {"X-API-Key": "k"}) + b"%d\r\n\r\n%s" % (len(body), body)


def test_target_from_url_and_host_header() -> None:
    plain = Target.from_url("http://127.0.0.1:8000/")
    assert plain == Target("127.0.0.1", 8000, False, "")
    assert plain.host_header == "127.0.0.1:8000"
    behind = Target.from_url("https://telemetry.example.com/api")
    assert (behind.port, behind.use_tls, behind.path_prefix, behind.host_header) == (
        443,
        True,
        "/api",
        "telemetry.example.com",
    )
    assert Target.from_url("http://[::1]:80").host_header == "[::1]"
    with pytest.raises(ValueError, match="not an http"):
        Target.from_url("ftp://host/")


def test_request_head_names_path_host_and_headers() -> None:
    head = request_head(Target.from_url("http://h:81/p"), "/ingest/batch", {"X-API-Key": "secret"})
    assert head == b"POST /p/ingest/batch HTTP/1.1\r\nHost: h:81\r\nX-API-Key: secret\r\nContent-Length: "


async def test_sequential_requests_reuse_one_connection() -> None:
    async with serve(lambda n: OK) as (url, server):
        pool = ConnectionPool(Target.from_url(url), limit=4)
        statuses = [await pool.post(post(pool.target, b'{"n":%d}' % i), 5) for i in range(5)]
        pool.close()
        assert statuses == [202] * 5
        assert server.connections == 1 == pool.opened
        assert server.requests[0].endswith(b'{"n":0}')
        assert b"Content-Length: 7\r\n" in server.requests[0]


async def test_concurrency_is_capped_by_the_limit() -> None:
    async with serve(lambda n: OK) as (url, _):
        pool = ConnectionPool(Target.from_url(url), limit=3)
        statuses = await asyncio.gather(*(pool.post(post(pool.target), 5) for _ in range(20)))
        pool.close()
        assert statuses == [202] * 20
        assert pool.opened <= 3
        assert pool.in_use == 0


async def test_chunked_answers_are_read_and_connection_close_is_honoured() -> None:
    async with serve(lambda n: CHUNKED if n == 1 else CLOSE) as (url, _):
        pool = ConnectionPool(Target.from_url(url), limit=2)
        assert await pool.post(post(pool.target), 5) == 503
        assert await pool.post(post(pool.target), 5) == 401  # same connection, closed by the server after it
        assert await pool.post(post(pool.target), 5) == 401  # so a new one
        pool.close()
        assert pool.opened == 2


async def test_silence_times_out_and_the_connection_is_dropped() -> None:
    async with serve(lambda n: None if n == 1 else OK) as (url, _):
        pool = ConnectionPool(Target.from_url(url), limit=1)
        with pytest.raises(TimeoutError):
            await pool.post(post(pool.target), 0.05)
        assert await pool.post(post(pool.target), 5) == 202
        pool.close()
        assert pool.opened == 2


async def test_garbage_is_a_protocol_error() -> None:
    async with serve(lambda n: b"SMTP ready\r\n\r\n") as (url, _):
        pool = ConnectionPool(Target.from_url(url), limit=1)
        with pytest.raises(HttpProtocolError):
            await pool.post(post(pool.target), 5)
        pool.close()


async def test_a_connection_closed_mid_answer_raises() -> None:
    async with serve(lambda n: b"HTTP/1.1 202 Accepted\r\ncontent-length: 10\r\nconnection: close\r\n\r\n{}") as (
        url,
        _,
    ):
        pool = ConnectionPool(Target.from_url(url), limit=1)
        with pytest.raises(ConnectionError):
            await pool.post(post(pool.target), 5)
        pool.close()


async def test_refused_connection_frees_its_slot() -> None:
    from src.embedded.processes import free_port

    pool = ConnectionPool(Target.from_url(f"http://127.0.0.1:{free_port()}"), limit=1)
    for _ in range(2):
        with pytest.raises(OSError):
            await pool.post(b"", 5)
    assert pool.in_use == 0


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ConnectionPool(Target.from_url("http://h"), limit=0)
