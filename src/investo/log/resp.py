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

:class:`RespSubscriber` is the same for a connection in ``SUBSCRIBE`` mode (a gateway's
reply channel): each message is handed to a callback from the loop's read callback, with
no task, future or ``get_message`` call per message.

* :meth:`RespSubscriber.start` returns once Redis has confirmed every channel, so a
  message published after it returns is delivered.
* A lost connection is dialled again (every ``RETRY_S``) and the channels subscribed
  again; what was published in between is lost, as pub/sub is at most once: callers time
  out on the answers they miss.

Supported URLs: ``redis://[user:password@]host[:port][/db]``; anything else (TLS, a
Unix socket) is refused by :func:`hot_connection` and :func:`hot_subscriber`, and the
caller keeps redis-py.
Costs: one ``transport.write`` per call, one hiredis feed per received chunk.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, cast

import hiredis
from redis._parsers import BaseParser
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from investo.tasks import cancel_and_wait

Arg = bytes | str | int
CONNECT_TIMEOUT_S = 5.0
RETRY_S = 0.5  # between a subscriber's attempts to connect again

log = logging.getLogger(__name__)


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
        self._auth = _auth_command(username, password)
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
            protocol = cast(_Protocol, await _open(self.host, self.port, _Protocol))
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


async def _open(host: str, port: int, factory: Callable[[], asyncio.Protocol]) -> asyncio.Protocol:
    """A TCP connection to Redis within ``CONNECT_TIMEOUT_S``; failures as redis-py's ConnectionError."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            _, protocol = await loop.create_connection(factory, host, port)
    except (OSError, TimeoutError) as exc:
        raise RedisConnectionError(f"cannot connect to Redis at {host}:{port}: {exc}") from exc
    return protocol


def _auth_command(username: str | None, password: str | None) -> tuple[str, ...]:
    if password is None:
        return ()
    return ("AUTH", username, password) if username else ("AUTH", password)


OnMessage = Callable[[bytes, bytes], None]


class _SubscriberProtocol(asyncio.Protocol):
    """Reads a subscribed connection: confirmations settle ``confirmed``, messages go to ``on_message``."""

    def __init__(self, channels: int, with_auth: bool, on_message: OnMessage) -> None:
        self.transport: asyncio.Transport | None = None
        self.on_message = on_message
        self.reader = hiredis.Reader(replyError=BaseParser.parse_error)
        self.confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._unconfirmed = channels
        self._auth_pending = with_auth
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.reader.feed(data)
            while (reply := self.reader.gets()) is not False:
                self._on_reply(reply)
        except Exception as exc:  # an unreadable stream, a refused AUTH: start over
            if not self.confirmed.done():
                self.confirmed.set_exception(exc)
            if self.transport is not None:
                self.transport.close()

    def _on_reply(self, reply: Any) -> None:
        if self._auth_pending:  # the answer to AUTH comes first
            self._auth_pending = False
            if isinstance(reply, Exception):
                raise reply
            return
        if isinstance(reply, Exception) or not isinstance(reply, list) or len(reply) != 3:
            raise hiredis.ProtocolError(f"unexpected answer on a subscribed connection: {reply!r}")
        kind, channel, data = reply
        if kind == b"message":
            try:
                self.on_message(channel, data)
            except Exception:  # one bad message must not cost the connection
                log.exception("handling a message on %r", channel)
        elif kind == b"subscribe":
            self._unconfirmed -= 1
            if self._unconfirmed == 0 and not self.confirmed.done():
                self.confirmed.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.confirmed.done():
            self.confirmed.set_exception(RedisConnectionError(f"connection to Redis lost: {exc or 'closed'}"))
        if not self.lost.done():
            self.lost.set_result(None)


class RespSubscriber:
    """A lean ``SUBSCRIBE`` connection that keeps itself subscribed; see the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        channels: Sequence[str | bytes],
        on_message: OnMessage,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        if not channels:
            raise ValueError("subscribe to at least one channel")
        self.host, self.port = host, port
        self.channels = [c if isinstance(c, bytes) else c.encode() for c in channels]
        self.on_message = on_message
        self._auth = _auth_command(username, password)
        self._protocol: _SubscriberProtocol | None = None
        self._keeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribe; return once Redis confirmed every channel. Then stay subscribed until :meth:`close`."""
        await self._subscribe()
        self._keeper = asyncio.create_task(self._keep_subscribed(), name="resp-subscriber")

    async def _subscribe(self) -> None:
        def protocol() -> _SubscriberProtocol:
            return _SubscriberProtocol(len(self.channels), bool(self._auth), self.on_message)

        subscriber = cast(_SubscriberProtocol, await _open(self.host, self.port, protocol))
        self._protocol = subscriber
        assert subscriber.transport is not None
        command = encode_command(self._auth) if self._auth else b""
        subscriber.transport.write(command + encode_command(("SUBSCRIBE", *self.channels)))
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await subscriber.confirmed
        except BaseException:
            if subscriber.transport is not None:
                subscriber.transport.close()
            raise

    async def _keep_subscribed(self) -> None:
        while True:
            assert self._protocol is not None
            await self._protocol.lost
            log.warning("subscription to Redis at %s:%d lost: subscribing again", self.host, self.port)
            while True:
                await asyncio.sleep(RETRY_S)
                try:
                    await self._subscribe()
                    break
                except (RedisConnectionError, TimeoutError, hiredis.ProtocolError) as exc:
                    log.warning("subscribing again failed: %s", exc)
            log.info("subscribed again to Redis at %s:%d", self.host, self.port)

    async def close(self) -> None:
        await cancel_and_wait(self._keeper)
        self._keeper = None
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None


def _plain_tcp_options(server_url: str) -> dict[str, Any] | None:
    """``server_url``'s parts if it is a plain TCP ``redis://`` URL, else None."""
    if not server_url.startswith("redis://"):
        return None
    options: dict[str, Any] = parse_url(server_url)  # type: ignore[no-untyped-call]
    if "path" in options or "host" not in options:
        return None
    return options


def hot_connection(server_url: str, timeout_s: float | None = None) -> RespConnection | None:
    """A :class:`RespConnection` to the server of ``server_url``, or None where it is not supported."""
    options = _plain_tcp_options(server_url)
    if options is None:
        return None
    return RespConnection(
        options["host"],
        int(options.get("port", 6379)),
        int(options.get("db", 0) or 0),
        options.get("username"),
        options.get("password"),
        timeout_s=timeout_s,
    )


def hot_subscriber(
    server_url: str, channels: Sequence[str | bytes], on_message: OnMessage
) -> RespSubscriber | None:
    """A :class:`RespSubscriber` to the server of ``server_url``, or None where it is not supported."""
    options = _plain_tcp_options(server_url)
    if options is None:
        return None
    return RespSubscriber(
        options["host"],
        int(options.get("port", 6379)),
        channels,
        on_message,
        options.get("username"),
        options.get("password"),
    )
