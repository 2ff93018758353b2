"""A lean HTTP/1.1 client for the load generator: keep-alive connections, POST only.

One request at a time per connection (no pipelining), idle connections reused most
recently used first, no retries: a request gets a status code or raises ``OSError``,
``TimeoutError`` or ``HttpProtocolError``. Used instead of aiohttp for its lower CPU per
request, which the system under test gets instead.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools


class HttpProtocolError(Exception):
    """The server's answer was not HTTP/1.1 as this client understands it."""


@dataclass(frozen=True)
class Target:
    """Where requests go: host and port to connect to, and the request line's path prefix."""

    host: str
    port: int
    use_tls: bool
    path_prefix: str

    @classmethod
    def from_url(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        default_port = 443 if parts.scheme == "https" else 80
        return cls(parts.hostname, parts.port or default_port, parts.scheme == "https", parts.path.rstrip("/"))

    @property
    def host_header(self) -> str:
        default_port = 443 if self.use_tls else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default_port else f"{host}:{self.port}"


def request_head(target: Target, path: str, headers: dict[str, str]) -> bytes:
    """A POST's request line and headers up to ``Content-Length: `` (the caller appends length and body)."""
    lines = [f"POST {target.path_prefix}{path} HTTP/1.1", f"Host: {target.host_header}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")


class Connection(asyncio.Protocol):
    """One keep-alive connection; ``send`` writes a whole request and waits for the status code."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpProtocolError(str(exc)))

    def on_message_complete(self) -> None:  # httptools callback
        self.keep_alive = self.parser.should_keep_alive()
        waiter, self.waiter = self.waiter, None
        if waiter is None or waiter.done():
            self._fail(HttpProtocolError("an answer nobody asked for"))
            return
        waiter.set_result(self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc if isinstance(exc, OSError) else ConnectionResetError("connection closed before the answer"))

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.waiter = None
        if self.transport is not None:
            self.transport.abort()

    @property
    def reusable(self) -> bool:
        return not self.closed and self.keep_alive and self.transport is not None and not self.transport.is_closing()

    async def send(self, request: bytes, timeout_s: float) -> int:
        """Write ``request`` (head and body) and wait for the answer's status code."""
        assert self.transport is not None and self.waiter is None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[int] = loop.create_future()
        self.waiter = waiter
        timer = loop.call_later(timeout_s, self._fail, TimeoutError(f"no answer in {timeout_s} s"))
        try:
            self.transport.write(request)
            return await waiter
        finally:
            timer.cancel()


class ConnectionPool:
    """At most ``limit`` connections to one target; ``acquire`` waits when all of them are busy."""

    def __init__(self, target: Target, limit: int, connect_timeout_s: float = 10.0) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.target = target
        self.limit = limit
        self.connect_timeout_s = connect_timeout_s
        self.opened = 0
        self._idle: list[Connection] = []
        self._busy = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._ssl = ssl.create_default_context() if target.use_tls else None

    @property
    def in_use(self) -> int:
        return self._busy

    async def acquire(self) -> Connection:
        while self._busy >= self.limit:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        self._busy += 1
        while self._idle:
            connection = self._idle.pop()  # most recently used first: spare ones time out server-side
            if connection.reusable:
                return connection
        try:
            return await self._connect()
        except BaseException:
            self._busy -= 1
            self._wake()
            raise

    def release(self, connection: Connection) -> None:
        self._busy -= 1
        if connection.reusable and connection.waiter is None:
            self._idle.append(connection)
        elif connection.transport is not None:
            connection.transport.abort()
        self._wake()

    async def post(self, request: bytes, timeout_s: float) -> int:
        """Send one whole request on a pooled connection; its status code."""
        connection = await self.acquire()
        try:
            return await connection.send(request, timeout_s)
        finally:
            self.release(connection)

    def close(self) -> None:
        for connection in self._idle:
            if connection.transport is not None:
                connection.transport.close()
        self._idle.clear()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        server_hostname = self.target.host if self._ssl is not None else None
        connect = loop.create_connection(
            Connection, self.target.host, self.target.port, ssl=self._ssl, server_hostname=server_hostname
        )
        _, connection = await asyncio.wait_for(connect, self.connect_timeout_s)
        self.opened += 1
        return connection
