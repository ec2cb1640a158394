"""The gateway's side of the distributed mode: submit a command, wait for its answer.

A :class:`ClusterClient` has its own reply channel (``<ns>:reply:<gateway id>``,
subscribed before the first command is sent). ``submit`` stamps the command with
the gateway's clock, routes it by the shard map (orders, deposits, withdrawals to
the user's accounts shard; cancels to the market's matching shard), appends it to
that shard's input log in an envelope naming the reply channel and a correlation
number, and waits for the :class:`~investo.cluster.records.Reply`.

Guarantees
----------
* An answer is delivered only to the request with its correlation number; late or
  foreign answers are dropped.
* No answer within ``timeout_s``, or an append that fails, raises
  :class:`~investo.host.StatusUnknown`: the command may or may not have been
  executed (Redis pub/sub delivers at most once), and the caller looks the order up
  by its client order id. The client never retries by itself.
* A command submitted with a mark is appended at most once per mark, whichever clients
  of the cluster submit it (the mark is set with ``SET NX`` in the append's own script).
* The shard map is reloaded whenever ``investo cluster init`` announces a change,
  without a restart; ``on_topology`` callbacks hear of it.
* Other announcements of the cluster ride on the same subscription: handlers added
  with :meth:`ClusterClient.on_message` before :meth:`ClusterClient.start`.

Costs: one pub/sub message per answer (read on a lean subscribed connection,
:class:`~investo.log.resp.RespSubscriber`: each message is dispatched from the socket's
read callback, no task or ``get_message`` call per answer), and one append (one round trip, plus the server's
fsync) per command when they come one at a time; commands submitted while a shard's
append is in flight go together in its next one (:class:`~investo.cluster.batcher.Batcher`),
so under load a shard's input takes one append per round trip, not one per command.
A mark (a signed order's replay mark) adds one ``SET NX`` to that append, no round trip.
Appends run on a lean connection per shard input (``RedisLog(lean=True)``,
:mod:`investo.log.resp`): about half redis-py's client CPU per call.
``ts`` never decreases within one client, neither in stamping order nor in the input logs.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Callable

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from investo.cluster import topology as topo
from investo.cluster.batcher import Batcher, BatcherClosed
from investo.cluster.records import ENCODER, REPLIES_DECODER, Envelope
from investo.cluster.topology import Role, Topology
from investo.core.exchange import unknown_market_cancel
from investo.core.messages import CancelAll, CancelOrder, Command, Deposit, Event, PlaceOrder, Withdraw
from investo.host import Applied, HostStopped, StatusUnknown
from investo.log.base import LogError
from investo.log.redis import MarkedEntry, RedisLog
from investo.log.resp import RespSubscriber, hot_subscriber
from investo.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class MarkTaken(Exception):
    """The command's mark was already set (see :meth:`ClusterClient.submit`): it was not sent."""


class ClusterClient:
    """Submits commands to the shards and waits for their answers; see the module docstring."""

    def __init__(
        self,
        redis_url: str,
        *,
        gateway_id: str | None = None,
        timeout_s: float = 5.0,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.server_url, self.namespace = topo.split_url(redis_url)
        self.gateway_id = gateway_id or secrets.token_hex(6)
        self.timeout_s = timeout_s
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._last_ts = 0
        self._client: aioredis.Redis = aioredis.Redis.from_url(self.server_url)
        self._subscriber: RespSubscriber | None = None
        self._pubsub: PubSub | None = None  # where the lean subscriber is not supported
        self._listener: asyncio.Task[None] | None = None
        self._reloading: asyncio.Task[None] | None = None
        self._reload_wanted = False
        self._changes_channel = topo.changes_channel(self.namespace).encode()
        self._logs: dict[tuple[Role, int], RedisLog] = {}
        self._appenders: dict[tuple[Role, int], Batcher[MarkedEntry, int]] = {}
        self._waiting: dict[int, asyncio.Future[list[Event]]] = {}
        self._numbers = itertools.count(1)
        self.topology: Topology | None = None
        self.reply_channel = ""
        self._handlers: dict[bytes, Callable[[bytes], None]] = {}
        self.on_topology: list[Callable[[Topology], None]] = []  # must not block: replies wait

    def on_message(self, channel: str, handler: Callable[[bytes], None]) -> None:
        """Call ``handler(data)`` for every message on ``channel`` (add before :meth:`start`)."""
        self._handlers[channel.encode()] = handler

    async def start(self, *, wait: bool = False) -> None:
        """Load the shard map (waiting for Redis if ``wait``) and subscribe to the reply channel."""
        if wait:
            self.topology = await topo.load_when_reachable(
                self._client, self.namespace, lambda exc: log.warning("waiting for Redis: %s", exc)
            )
        else:
            self.topology = await topo.load(self._client, self.namespace)
        self.reply_channel = self.topology.reply_channel(self.gateway_id)
        channels: list[str | bytes] = [self.reply_channel, self._changes_channel, *self._handlers]
        self._subscriber = hot_subscriber(self.server_url, channels, self._dispatch)
        if self._subscriber is not None:
            await self._subscriber.start()
            return
        self._pubsub = self._client.pubsub()  # TLS or a Unix socket: redis-py's subscription
        await self._pubsub.subscribe(*channels)
        self._listener = asyncio.create_task(self._listen(self._pubsub), name=f"replies-{self.gateway_id}")

    async def close(self) -> None:
        await cancel_and_wait(self._listener)
        if self._subscriber is not None:
            await self._subscriber.close()
        await cancel_and_wait(self._reloading)
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(HostStopped("the gateway is stopping"))
        if self._pubsub is not None:
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        for appender in self._appenders.values():
            await appender.close()
        for shard_log in self._logs.values():
            await shard_log.close()
        await self._client.aclose()

    # ------------------------------------------------------------------ commands

    async def submit(self, command: Command, mark: str | None = None, mark_ttl_ms: int = 0) -> Applied:
        """Send ``command`` to its shard; return it (stamped) with the events it caused.

        With a ``mark`` (a Redis key, e.g. a signed request's replay mark), the command is
        appended only if ``SET mark 1 NX PX mark_ttl_ms`` sets it, in the append's own script
        (one round trip for both); a mark already set raises :class:`MarkTaken`, nothing sent.
        """
        if self.topology is None:
            raise HostStopped("the gateway is not connected to the cluster")
        ts = max(self._clock_ms(), self._last_ts)
        self._last_ts = ts
        command = msgspec.structs.replace(command, ts=ts)
        target = self._route(self.topology, command)
        if target is None:
            assert isinstance(command, CancelOrder | CancelAll)
            return Applied(0, command, [unknown_market_cancel(command)])
        corr = next(self._numbers)
        future: asyncio.Future[list[Event]] = asyncio.get_running_loop().create_future()
        self._waiting[corr] = future
        try:
            try:
                offset = await self._appender(*target).submit(
                    (ENCODER.encode(Envelope(command, self.reply_channel, corr)), mark, mark_ttl_ms)
                )
            except (LogError, BatcherClosed) as exc:
                raise StatusUnknown(f"appending to {target[0]} shard {target[1]} failed: {exc}") from exc
            if offset == 0:
                raise MarkTaken(f"{mark} is already set: the command was not sent")
            timer = asyncio.get_running_loop().call_later(self.timeout_s, _time_out, future)
            try:
                events = await future  # (a timer, not asyncio.wait_for: no extra future and task hop)
            except TimeoutError:
                raise StatusUnknown(
                    f"no answer from {target[0]} shard {target[1]} within {self.timeout_s} s"
                ) from None
            finally:
                timer.cancel()
            return Applied(offset, command, events)
        finally:
            self._waiting.pop(corr, None)

    @staticmethod
    def _route(topology: Topology, command: Command) -> tuple[Role, int] | None:
        if isinstance(command, PlaceOrder | Deposit | Withdraw):
            return "accounts", topology.accounts_shard(command.user)
        shard = topology.matching_shard(command.market)
        return None if shard is None else ("matching", shard)

    def _appender(self, role: Role, shard: int) -> Batcher[MarkedEntry, int]:
        """The shard input's group commit: commands submitted meanwhile go in one append."""
        found = self._appenders.get((role, shard))
        if found is None:
            assert self.topology is not None
            url = topo.log_url(self.server_url, self.topology.input_prefix(role, shard))
            shard_log = self._logs[(role, shard)] = RedisLog(url, lean=True)
            found = self._appenders[(role, shard)] = Batcher(shard_log.append_unless_marked)
        return found

    # ------------------------------------------------------------------ answers

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        """One message on the subscription: answers to their requests, announcements to their handlers."""
        if channel == self._changes_channel:
            self._reload_wanted = True  # one reload at a time, the last one after the last announcement
            if self._reloading is None or self._reloading.done():
                self._reloading = asyncio.create_task(self._reload_topology(), name="shard-map-reload")
            return
        handler = self._handlers.get(channel)
        if handler is not None:
            handler(data)
            return
        for reply in REPLIES_DECODER.decode(data):
            future = self._waiting.get(reply.corr)
            if future is not None and not future.done():
                future.set_result(reply.events)

    async def _reload_topology(self) -> None:
        while self._reload_wanted:
            self._reload_wanted = False
            try:
                self.topology = await topo.load(self._client, self.namespace)
            except Exception:  # Redis unreachable: the next announcement reloads
                log.exception("reloading the shard map of gateway %s", self.gateway_id)
                continue
            log.info("shard map reloaded: version %d", self.topology.version)
            for callback in self.on_topology:
                callback(self.topology)

    async def _listen(self, pubsub: PubSub) -> None:
        """redis-py's subscription, where the lean one cannot connect (TLS, a Unix socket)."""
        while True:
            try:
                # blocks until a message: no timeout scope per read
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                if message is not None:
                    self._dispatch(message["channel"], message["data"])
            except asyncio.CancelledError:
                raise
            except Exception:  # a bad message or a lost connection must not stop the listener
                log.exception("reply listener of gateway %s", self.gateway_id)
                await asyncio.sleep(0.5)


def _time_out(future: asyncio.Future[list[Event]]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())
