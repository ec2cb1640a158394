"""A lean HTTP/1.1 client for load generators: keep-alive connections, one request in flight each.

The benchmarks run their load generator on the same cores as the server they measure, so
the generator's own cost per request is taken from the server. aiohttp spends about
0.2 ms of Python per request; this client writes a request's bytes to a connection and
reads back the status line, headers and a ``Content-Length`` body with a few byte-string
operations, which is all a load generator needs (it never follows redirects, decodes
chunked bodies or handles cookies: a response without ``Content-Length`` is an error).

:meth:`HttpLoadClient.request` takes a callback, called with the answer from the
connection's read callback: no task, coroutine or future per request, which the
generator would otherwise pay for thousands of times a second. :meth:`HttpLoadClient.send`
is the same as a coroutine, for callers that are not in a hurry.

A request waits for an idle connection (FIFO), so with every connection busy the queueing
shows in the latency the caller measures, as it should in an open-loop benchmark. A
connection the server closed (a failed request, or idle past the server's keep-alive
timeout) stays in the pool and is dialled again when a request next takes it, so the
pool keeps ``connections`` connections and a waiting request is never left behind.
Every request gets exactly one answer or one error, unless it is given up on
(:meth:`HttpLoadClient.abandon`, a cancelled ``send``): then its connection is closed, so
its late answer can never reach the next request.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import cast

Answer = Callable[[int, bytes, "HttpLoadError | None"], None]
"""Called once per request: (status, body, None), or (0, b"", the error)."""


class HttpLoadError(Exception):
    """The server closed the connection or sent a response this client does not read."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection: hands each complete response to its request's callback.

    It is busy while ``on_answer`` is set; ``on_free`` (the pool's) hears each busy-to-idle turn.
    """

    def __init__(self, on_free: Callable[[_Connection], None]) -> None:
        self.transport: asyncio.Transport | None = None
        self.on_answer: Answer | None = None
        self.on_free = on_free
        self._buffer = bytearray()
        self._head_end = -1  # index of the blank line ending the headers, once seen
        self._response_end = -1  # index past the body, once the headers are parsed
        self._status = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def start(self, request: bytes, on_answer: Answer) -> None:
        assert self.transport is not None and self.on_answer is None
        self.on_answer = on_answer
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._response_end < 0 and not self._parse_head():
            return
        if len(self._buffer) < self._response_end:
            return
        body = bytes(self._buffer[self._head_end + 4 : self._response_end])
        del self._buffer[: self._response_end]
        self._head_end = self._response_end = -1
        on_answer, self.on_answer = self.on_answer, None
        if on_answer is None:
            self._fail(HttpLoadError("an answer to no request"))
            return
        self.on_free(self)
        on_answer(self._status, body, None)

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
        self._fail(HttpLoadError(f"connection closed: {exc}"))

    def abandon(self) -> None:
        """Give up on the request in flight: close, so the pool dials afresh (no stale answer)."""
        if self.on_answer is not None:
            self.on_answer = None
            self.on_free(self)
        self._close()

    def _fail(self, error: HttpLoadError) -> None:
        on_answer, self.on_answer = self.on_answer, None
        self._close()
        if on_answer is not None:
            self.on_free(self)
            on_answer(0, b"", error)

    def _close(self) -> None:
        self.closed = True
        self._buffer.clear()
        self._head_end = self._response_end = -1
        if self.transport is not None:
            self.transport.close()


class HttpLoadClient:
    """``connections`` keep-alive connections to one ``host:port``; see the module docstring."""

    def __init__(self, host: str, port: int, connections: int) -> None:
        self.host = host
        self.port = port
        self.connections = connections
        self._idle: deque[_Connection] = deque()
        self._queue: deque[tuple[bytes, Answer]] = deque()  # requests waiting for a connection
        self._all: list[_Connection] = []

    async def open(self) -> None:
        for _ in range(self.connections):
            connection = await self._dial()
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

    def request(self, request: bytes, on_answer: Answer) -> None:
        """Write one complete request on the next idle connection (now, if one is idle)."""
        self._queue.append((request, on_answer))
        self._dispatch()

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """:meth:`request` as a coroutine: return the (status, body) it gets, raise its error."""
        future: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()

        def on_answer(status: int, body: bytes, error: HttpLoadError | None) -> None:
            if future.done():
                return
            if error is None:
                future.set_result((status, body))
            else:
                future.set_exception(error)

        self.request(request, on_answer)
        try:
            return await future
        except asyncio.CancelledError:
            self._give_up(on_answer)
            raise

    def abandon(self) -> int:
        """Give up on every request not answered yet (queued ones are dropped unsent); return how many."""
        dropped = len(self._queue)
        self._queue.clear()
        busy = [connection for connection in self._all if connection.on_answer is not None]
        for connection in busy:
            connection.abandon()
        return dropped + len(busy)

    def _give_up(self, on_answer: Answer) -> None:
        for queued in self._queue:
            if queued[1] is on_answer:
                self._queue.remove(queued)
                return
        for connection in self._all:
            if connection.on_answer is on_answer:
                connection.abandon()
                return

    def _dispatch(self) -> None:
        while self._queue and self._idle:
            connection = self._idle.popleft()
            if connection.closed:  # the server hung up (an idle keep-alive timeout, an error): dial again
                asyncio.get_running_loop().create_task(self._reopen(connection))
                continue
            request, on_answer = self._queue.popleft()
            connection.start(request, on_answer)

    def _release(self, connection: _Connection) -> None:
        self._idle.append(connection)  # a closed one too: it is dialled again when next taken
        self._dispatch()

    async def _dial(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(lambda: _Connection(self._release), self.host, self.port)
        return connection

    async def _reopen(self, old: _Connection) -> None:
        """Dial again for a closed connection; if that fails, the first queued request gets the error."""
        try:
            new = await self._dial()
        except OSError as error:
            if self._queue:
                _, on_answer = self._queue.popleft()
                on_answer(0, b"", HttpLoadError(f"reconnecting to {self.host}:{self.port} failed: {error}"))
            self._release(old)  # still closed: the next request dials again
            return
        self._all[self._all.index(old)] = new
        self._release(new)
