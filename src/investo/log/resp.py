"""A lean Redis connection for a process's few hot calls: commands written as RESP, answers parsed by hiredis.

redis-py's asyncio client costs the caller about 75–90 µs of CPU per round trip on a
2-core VM (connection pool, retry layer, health checks, argument encoding), where the
socket and the event loop alone cost about 35 (``bench/redis_calls.py``). A cluster
engine makes two calls per batch it wakes up for (a blocking ``XREAD`` and its publish
script), so at a few thousand orders per second those layers were most of its CPU.
:class:`RespConnection` does only what those calls need: one TCP connection, commands
encoded with a few byte joins, answers parsed by hiredis (which redis-py uses too).

Invariants
----------
* Answers are matched to calls in the order the calls were written (Redis answers in
  order), so calls may overlap; each gets its own answer or exception.
* An error answer raises the exception redis-py raises for it (``ResponseError``,
  ``NoScriptError`` for ``NOSCRIPT``, ``BusyLoadingError`` — a ``ConnectionError`` — for
  a server still loading its data, …: redis-py's own table), a lost connection or an
  unreadable answer :class:`redis.exceptions.ConnectionError` for every call in flight;
  so callers keep their handling. The next call connects
  again (``AUTH`` and ``SELECT`` as the URL says).
* No retries. With ``timeout_s`` a call not answered in time closes the connection (the
  answers behind it could no longer be matched) and fails, like every call in flight, with
  a ``ConnectionError``; without, a call waits as long as the server takes (a blocking
  command: as long as it asked to). Callers decide what to retry.

Supported URLs: ``redis://[user:password@]host[:port][/db]``; anything else (TLS, a
Unix socket) is refused by :func:`hot_connection`, and the caller keeps redis-py.
Costs: one ``transport.write`` per call, one hiredis feed per received chunk.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, cast

import hiredis
from redis._parsers import BaseParser
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

Arg = bytes | str | int
CONNECT_TIMEOUT_S = 5.0


def encode_command(args: tuple[Arg, ...]) -> bytes:
    """``args`` as one RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n" % len(data))
        parts.append(data)
        parts.append(b"\r\n")
    return b"".join(parts)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.pending: deque[asyncio.Future[Any]] = deque()
        # Error answers become the exceptions redis-py raises for them (its own hiredis parser
        # does the same): e.g. LOADING a BusyLoadingError, a ConnectionError that callers retry.
        self.reader = hiredis.Reader(replyError=BaseParser.parse_error)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.reader.feed(data)
            while (reply := self.reader.gets()) is not False:
                if not self.pending:
                    raise hiredis.ProtocolError("an answer nobody asked for")
                future = self.pending.popleft()
                if future.done():  # its caller was cancelled
                    continue
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        except hiredis.ProtocolError:  # the stream cannot be trusted any more: fail what waits
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        while self.pending:
            future = self.pending.popleft()
            if not future.done():
                future.set_exception(RedisConnectionError(f"connection to Redis lost: {exc or 'closed'}"))


def _expire(future: asyncio.Future[Any], transport: asyncio.Transport) -> None:
    """A call's time is up: drop its connection, which fails it and every call behind it."""
    if not future.done():
        transport.close()


class RespConnection:
    """One connection to Redis for hot calls; see the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        *,
        timeout_s: float | None = None,
    ) -> None:
        self.host, self.port, self.db = host, port, db
        self.timeout_s = timeout_s
        self._auth: tuple[str, ...] = ()
        if password is not None:
            self._auth = ("AUTH", username, password) if username else ("AUTH", password)
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def call(self, *args: Arg) -> Any:
        """Send one command and return its answer (see the module docstring for errors)."""
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            protocol = await self._connect()
        transport = protocol.transport
        if transport is None:
            raise RedisConnectionError("connection to Redis lost")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        protocol.pending.append(future)
        transport.write(encode_command(args))
        if self.timeout_s is None:
            return await future
        timer = loop.call_later(self.timeout_s, _expire, future, transport)
        try:
            return await future
        finally:
            timer.cancel()

    async def evalsha(self, sha: str, script: str, keys: list[str], args: list[Arg]) -> Any:
        """Run a script by its SHA1, loading it first if the server does not know it (``NOSCRIPT``)."""
        try:
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.call("SCRIPT", "LOAD", script)
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)

    async def _connect(self) -> _Protocol:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:  # overlapping calls share one new connection
            if self._protocol is not None and self._protocol.transport is not None:
                return self._protocol
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    _, protocol = await loop.create_connection(_Protocol, self.host, self.port)
            except (OSError, TimeoutError) as exc:
                where = f"{self.host}:{self.port}"
                raise RedisConnectionError(f"cannot connect to Redis at {where}: {exc}") from exc
            self._protocol = protocol
            if self._auth:
                await self.call(*self._auth)
            if self.db:
                await self.call("SELECT", self.db)
            return protocol

    def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None


def hot_connection(server_url: str, timeout_s: float | None = None) -> RespConnection | None:
    """A :class:`RespConnection` to the server of ``server_url``, or None where it is not supported."""
    if not server_url.startswith("redis://"):
        return None
    options: dict[str, Any] = parse_url(server_url)  # type: ignore[no-untyped-call]
    if "path" in options or "host" not in options:
        return None
    return RespConnection(
        options["host"],
        int(options.get("port", 6379)),
        int(options.get("db", 0) or 0),
        options.get("username"),
        options.get("password"),
        timeout_s=timeout_s,
    )
