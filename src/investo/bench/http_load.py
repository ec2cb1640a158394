"""A lean HTTP/1.1 client for load generators: keep-alive connections, one request in flight each.

The benchmarks run their load generator on the same cores as the server they measure, so
the generator's own cost per request is taken from the server. aiohttp spends about
0.2 ms of Python per request; this client writes a request's bytes to a connection and
reads back the status line, headers and a ``Content-Length`` body with a few byte-string
operations, which is all a load generator needs (it never follows redirects, decodes
chunked bodies or handles cookies: a response without ``Content-Length`` is an error).

A request waits for an idle connection (FIFO), so with every connection busy the queueing
shows in the latency the caller measures, as it should in an open-loop benchmark. A
connection the server closed (a failed request, or idle past the server's keep-alive
timeout) stays in the pool and is dialled again when a request next takes it, so the
pool keeps ``connections`` connections and a waiting request is never left behind.
"""

from __future__ import annotations

import asyncio
from collections import deque


class HttpLoadError(Exception):
    """The server closed the connection or sent a response this client does not read."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection: hands each complete response to the waiting request."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._buffer = bytearray()
        self._head_end = -1  # index of the blank line ending the headers, once seen
        self._response_end = -1  # index past the body, once the headers are parsed
        self._status = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._response_end < 0 and not self._parse_head():
            return
        if len(self._buffer) < self._response_end:
            return
        body = bytes(self._buffer[self._head_end + 4 : self._response_end])
        del self._buffer[: self._response_end]
        self._head_end = self._response_end = -1
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self._status, body))

    def _parse_head(self) -> bool:
        """Parse the status line and headers once they are complete; False until then."""
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self._buffer[:end]).lower()
        marker = head.find(b"\r\ncontent-length:")
        if marker < 0:
            self._fail(HttpLoadError("a response without Content-Length"))
            return False
        line_end = head.find(b"\r\n", marker + 2)
        length = int(head[marker + 17 : line_end if line_end >= 0 else len(head)])
        self._status = int(head[9:12])
        self._head_end = end
        self._response_end = end + 4 + length
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(HttpLoadError(f"connection closed: {exc}"))

    def abandon(self) -> None:
        """Give up on the request in flight: close, so the pool dials afresh (no stale answer)."""
        self.closed = True
        self.waiter = None
        if self.transport is not None:
            self.transport.close()

    def _fail(self, error: Exception) -> None:
        self.closed = True
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        if self.transport is not None:
            self.transport.close()


class HttpLoadClient:
    """``connections`` keep-alive connections to one ``host:port``; see the module docstring."""

    def __init__(self, host: str, port: int, connections: int) -> None:
        self.host = host
        self.port = port
        self.connections = connections
        self._idle: deque[_Connection] = deque()
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._all: list[_Connection] = []

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self.connections):
            _, connection = await loop.create_connection(_Connection, self.host, self.port)
            self._all.append(connection)
            self._idle.append(connection)

    def close(self) -> None:
        for connection in self._all:
            if connection.transport is not None:
                connection.transport.close()

    async def post_form(self, path: str, body: str, headers: str = "") -> tuple[int, bytes]:
        """POST ``body`` as a form; return (status, body). ``headers``: extra ``Name: value\\r\\n`` lines."""
        data = body.encode()
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\n{headers}"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(data)}\r\n\r\n"
        ).encode() + data
        return await self.send(request)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Write one complete request on an idle connection; return the (status, body) it gets."""
        connection = await self._acquire()
        try:
            if connection.closed or connection.transport is None:
                raise HttpLoadError("connection closed")
            waiter: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
            connection.waiter = waiter
            connection.transport.write(request)
            return await waiter
        except asyncio.CancelledError:
            connection.abandon()  # its answer may still come: never hand it to the next request
            raise
        finally:
            self._release(connection)

    async def _acquire(self) -> _Connection:
        while not self._idle:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            await waiter
        connection = self._idle.popleft()
        if connection.closed:  # the server hung up (an idle keep-alive timeout, an error): dial again
            connection = await self._reopen(connection)
        return connection

    async def _reopen(self, old: _Connection) -> _Connection:
        try:
            _, new = await asyncio.get_running_loop().create_connection(_Connection, self.host, self.port)
        except OSError as error:
            self._release(old)  # still closed: the next request dials again
            raise HttpLoadError(f"reconnecting to {self.host}:{self.port} failed: {error}") from None
        self._all[self._all.index(old)] = new
        return new

    def _release(self, connection: _Connection) -> None:
        self._idle.append(connection)  # a closed one too: it is dialled again when next taken
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break
