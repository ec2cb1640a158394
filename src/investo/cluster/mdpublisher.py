"""``investo marketdata``: the one process that builds a cluster's public market streams.

It follows every matching shard (a :class:`~investo.cluster.replica.ShardReplica` each,
the same deterministic stepping as the engines and the gateways' replicas) and feeds
their events to the very :class:`~investo.marketdata.service.MarketData` the embedded
host uses: depth diffs (``U``/``u`` = the engine's ``seq``, so they agree with the
gateways' ``/api/v3/depth``), partial books, book tickers, trades, aggregate trades,
candles and tickers. Every message is serialised once here and PUBLISHed on Redis
pub/sub with a per-market sequence number (the wire: :mod:`investo.cluster.wsfeed`) to
any number of ``investo ws`` nodes.

One active publisher per cluster
--------------------------------
A lease (``<ns>:md:lease``, ``SET NX PX lease_ms``, renewed every third of it from the
moment it is taken) makes one publisher active; others wait as standbys and take over when
it expires. Each lease taken gets a new epoch, the Redis server's clock in microseconds
(one clock for every publisher, and it keeps growing when Redis loses its data, where a
counter would start again); nodes ignore an older epoch, so a publisher that was paused
past its lease is fenced. While the cluster's configuration is missing (Redis lost it and
it is being rebuilt from Postgres) the publisher waits and tries again every second. A
publisher that cannot renew its lease stops publishing and becomes a standby.

Snapshots and heartbeats
------------------------
A market's snapshot (its whole book at the id of its last diff) is published in the
market's channel, after the frames of every batch already stepped, so its order with
the diffs is exact: at the start of a lease, every ``snapshot_s``, and when a node asks
(``<ns>:md:resync``, coalesced). Every ``heartbeat_s`` a heartbeat carries each market's
last seq. Candles and the 24-hour ticker start from SQL when ``database_url`` is given
(else from the first trade seen).

Costs: the matching shards' stepping, every stream's messages built whatever the
subscriptions (once per cluster), one msgpack encode and one PUBLISH per market per
flush (pipelined; Redis copies each to every node).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from investo.cluster import topology as topo
from investo.cluster.replica import ShardReplica, Stepped
from investo.cluster.shards import MatchingShard
from investo.cluster.wsfeed import (
    ALL_MARKETS,
    ENCODER,
    DepthPart,
    Frame,
    Heartbeat,
    Message,
    Snapshot,
    heartbeat_channel,
    lease_key,
    market_channel,
    resync_channel,
)
from investo.core.exchange import Exchange
from investo.core.matching import MatchingEngine
from investo.host import Applied
from investo.log.base import LogError
from investo.marketdata.builders import DepthDiff
from investo.marketdata.hub import Hub
from investo.marketdata.service import MarketData, _Market, depth_diff_json
from investo.markets import MarketSpec
from investo.node import wall_clock_ms
from investo.store.migrate import open_migrated
from investo.tasks import cancel_and_wait

log = logging.getLogger(__name__)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class LeaseLost(Exception):
    pass


@dataclass
class PublisherConfig:
    redis_url: str
    database_url: str | None = None  # to start candles and tickers from the SQL history
    lease_ms: int = 3_000
    heartbeat_s: float = 0.5
    snapshot_s: float = 5.0
    tick_s: float = 1.0
    clock_ms: Callable[[], int] = wall_clock_ms
    publisher_id: str | None = None


class PublishingHub(Hub):
    """A hub where every stream is wanted: messages are kept per market for the next flush."""

    def __init__(self, symbols: Iterable[str], on_pending: Callable[[], None]) -> None:
        super().__init__()
        self.names = {s.lower(): s for s in symbols}
        self.pending: dict[str, list[Frame]] = {}
        self._on_pending = on_pending

    def wants(self, stream: str) -> bool:
        return True

    def _add(self, streams: list[str], data: bytes, depth: DepthPart | None = None) -> None:
        first = streams[0]
        name = ALL_MARKETS if first.startswith("!") else self.names[first.split("@", 1)[0]]
        if not self.pending:
            self._on_pending()
        self.pending.setdefault(name, []).append(Frame(streams, data, depth))
        self.published += 1

    def publish(self, stream: str, payload: Any) -> None:
        self._add([stream], orjson.dumps(payload))

    def publish_json(self, stream: str, data: bytes) -> None:
        self._add([stream], data)

    def publish_many(self, streams: Iterable[str], payload: Any) -> None:
        self._add(list(streams), orjson.dumps(payload))

    def publish_depth(self, streams: list[str], data: bytes, diff: DepthDiff) -> None:
        self._add(streams, data, DepthPart(diff.first, diff.last, diff.bids, diff.asks))

    def take(self) -> dict[str, list[Frame]]:
        pending, self.pending = self.pending, {}
        return pending


class ClusterMarketData(MarketData):
    """The embedded builder, its depth diffs published with their integer levels."""

    hub: PublishingHub

    def _publish_depth(self, m: _Market, diff: DepthDiff, now: int) -> None:
        self.hub.publish_depth(m.depth_streams, orjson.dumps(depth_diff_json(m.spec, diff, now)), diff)


class _Books:
    """``Exchange``'s ``matching(symbol)`` over the matching replicas."""

    def __init__(self, topology: topo.Topology, replicas: Mapping[int, ShardReplica]) -> None:
        self.topology = topology
        self.replicas = replicas

    def matching(self, symbol: str) -> MatchingEngine:
        shard = self.replicas[self.topology.matching[symbol]].shard
        assert isinstance(shard, MatchingShard)
        return shard.engines[symbol]


@dataclass
class _Event:
    events: Sequence[Any]
    replayed: bool = False


class MarketDataPublisher:
    """See the module docstring. :meth:`run` until ``stop``: standby, then active, then standby…"""

    def __init__(self, config: PublisherConfig) -> None:
        self.config = config
        self.server_url, self.namespace = topo.split_url(config.redis_url)
        self.publisher_id = config.publisher_id or secrets.token_hex(6)
        self.redis: aioredis.Redis = aioredis.Redis.from_url(self.server_url)
        self.epoch = 0
        self.active = False
        self.published = 0  # pub/sub messages sent
        self.failed = 0  # pub/sub messages lost to Redis errors
        self.drop_next: set[str] = set()  # tests: markets whose next message is not sent (a gap)
        self._seqs: dict[str, int] = {}
        self._outbox: deque[tuple[str, bytes]] = deque()
        self._wake = asyncio.Event()
        self._want_snapshots: set[str] = set()
        self._md: ClusterMarketData | None = None
        self._books: _Books | None = None
        self._lost = asyncio.Event()

    # ------------------------------------------------------------------ the lease

    async def run(self, stop: asyncio.Event) -> None:
        db = await self._database()
        try:
            waiting = False  # for the cluster: said once, not every second
            while not stop.is_set():
                if not await self._acquire(stop, quiet=waiting):
                    break
                try:
                    await self._lead(stop, db)
                except (LeaseLost, RedisError) as exc:
                    log.warning("market data publisher %s: no longer active (%s)", self.publisher_id, exc)
                    waiting = False
                except (topo.ClusterNotInitialised, LogError) as exc:  # Redis lost the cluster: rebuilt soon
                    if not waiting:
                        log.warning("market data publisher: waiting for the cluster (%s)", exc)
                    waiting = True
                    await asyncio.sleep(1.0)
                finally:
                    self.active = False
                    await self._release()
        finally:
            if db is not None:
                await db.dispose()

    async def close(self) -> None:
        await self.redis.aclose()

    async def _database(self) -> AsyncEngine | None:
        if not self.config.database_url:
            return None
        return await open_migrated(self.config.database_url)

    async def _acquire(self, stop: asyncio.Event, quiet: bool = False) -> bool:
        """Wait (as a standby) until this publisher holds the lease; False if stopped first.

        ``quiet``: taking the lease is not logged (retrying while the cluster is missing)."""
        key, waited = lease_key(self.namespace), False
        while not stop.is_set():
            try:
                if await self.redis.set(key, self.publisher_id, nx=True, px=self.config.lease_ms):
                    seconds, micros = await self.redis.time()
                    self.epoch = seconds * 1_000_000 + micros  # Redis's clock: grows even if its data is lost
                    if not quiet:
                        log.warning(
                            "market data publisher %s: active, epoch %d", self.publisher_id, self.epoch
                        )
                    return True
                if not waited:
                    log.warning("market data publisher %s: standby", self.publisher_id)
                    waited = True
            except RedisError as exc:
                log.warning("market data publisher: waiting for Redis: %s", exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.lease_ms / 3000):
                    await stop.wait()
        return False

    async def _release(self) -> None:
        with contextlib.suppress(RedisError):
            await self.redis.eval(_RELEASE, 1, lease_key(self.namespace), self.publisher_id)

    async def _renew(self) -> None:
        every = self.config.lease_ms / 3000
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(every)
            try:
                held = await self.redis.eval(
                    _RENEW, 1, lease_key(self.namespace), self.publisher_id, str(self.config.lease_ms)
                )
            except RedisError as exc:
                if time.monotonic() - renewed > self.config.lease_ms / 1000:
                    self._lost.set()
                    return
                log.warning("renewing the market data lease failed: %s", exc)
                continue
            if not held:
                self._lost.set()
                return
            renewed = time.monotonic()

    # ------------------------------------------------------------------ active

    async def _lead(self, stop: asyncio.Event, db: AsyncEngine | None) -> None:
        topology = await topo.load(self.redis, self.namespace)
        log.warning(
            "market data publisher %s: publishing %d markets of %d matching shards, epoch %d",
            self.publisher_id,
            len(topology.markets),
            topology.matching_shards,
            self.epoch,
        )
        replicas = {
            shard: ShardReplica(self.server_url, topology, "matching", shard)
            for shard in range(topology.matching_shards)
        }
        halt = asyncio.Event()
        self._lost.clear()
        # renewed from now on: catching up and reading SQL may take longer than the lease
        tasks: list[asyncio.Task[None]] = [asyncio.create_task(self._renew(), name="md-lease")]
        md: ClusterMarketData | None = None
        pubsub: PubSub = self.redis.pubsub()
        try:
            for replica in replicas.values():
                await replica.start()
                await replica.catch_up()
            books = self._books = _Books(topology, replicas)
            hub = PublishingHub(topology.markets, self._wake.set)
            md = self._md = ClusterMarketData(
                topology.markets, self.config.clock_ms, hub=hub, tick_seconds=self.config.tick_s
            )
            md.attach(lambda: cast(Exchange, books))
            await md.start(db)
            self._seqs = {name: 0 for name in [*topology.markets, ALL_MARKETS]}
            self._outbox.clear()
            self._want_snapshots = set(topology.markets)
            for replica in replicas.values():
                replica.on_batch = self._on_batch
                replica.on_reload = halt.set  # it skipped entries: start this lease's work again
            await pubsub.subscribe(resync_channel(self.namespace), topo.changes_channel(self.namespace))
            self.active = True
            if self._lost.is_set():
                raise LeaseLost("the lease expired while catching up")
            tasks += [
                asyncio.create_task(self._send(), name="md-send"),
                asyncio.create_task(self._heartbeats(), name="md-heartbeat"),
                asyncio.create_task(self._requests(pubsub, topology.markets, halt), name="md-requests"),
                *(
                    asyncio.create_task(replica.follow(halt), name=f"md-replica-{shard}")
                    for shard, replica in replicas.items()
                ),
            ]
            waits = [asyncio.ensure_future(e.wait()) for e in (stop, self._lost, halt)]
            try:
                await asyncio.wait([*waits, *tasks], return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise cast(BaseException, task.exception())
            if self._lost.is_set():
                raise LeaseLost("the lease expired or was taken")
        finally:
            halt.set()
            self.active = False
            for task in tasks:
                await cancel_and_wait(task)
            if md is not None:
                await md.stop()
            self._md = self._books = None
            with contextlib.suppress(RedisError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            for replica in replicas.values():
                await replica.close()

    def _on_batch(self, batch: list[Stepped]) -> None:
        md = self._md
        if md is None:
            return
        applied = [_Event(step.output) for _, _, step in batch if step.output]
        if applied:
            md.on_applied(cast(Sequence[Applied], applied))

    # ------------------------------------------------------------------ publishing

    def _flush(self) -> None:
        """Pending frames, then wanted snapshots, into the outbox with their seqs (in this order)."""
        md = self._md
        if md is None:
            return
        for name, frames in md.hub.take().items():
            self._enqueue(name, frames, None)
        wanted, self._want_snapshots = self._want_snapshots, set()
        books = self._books
        assert books is not None
        for symbol in sorted(wanted):
            bids, asks = books.matching(symbol).depth()
            self._enqueue(symbol, [], Snapshot(md.depth_position(symbol), bids, asks))

    def _enqueue(self, name: str, frames: list[Frame], snapshot: Snapshot | None) -> None:
        seq = self._seqs[name] = self._seqs[name] + 1
        if name in self.drop_next:
            self.drop_next.discard(name)
            return
        data = ENCODER.encode(Message(self.epoch, seq, frames, snapshot))
        self._outbox.append((market_channel(self.namespace, name), data))

    async def _send(self) -> None:
        """The one writer of the channels: flushes, then PUBLISHes the outbox in order (pipelined)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._flush()
            outbox = self._outbox
            if not outbox:
                continue
            batch = list(outbox)
            outbox.clear()
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for channel, data in batch:
                        pipe.publish(channel, data)
                    await pipe.execute()
                self.published += len(batch)
            except RedisError as exc:  # lost: the nodes see the gap and ask for snapshots
                self.failed += len(batch)
                log.warning("publishing market data failed (%d messages lost): %s", len(batch), exc)
                await asyncio.sleep(0.2)

    async def _heartbeats(self) -> None:
        channel = heartbeat_channel(self.namespace)
        every_snapshot = max(1, round(self.config.snapshot_s / self.config.heartbeat_s))
        beats = 0
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            beats += 1
            if beats % every_snapshot == 0 and self._md is not None:
                self._want_snapshots.update(self._md.hub.names.values())
            self._flush()
            self._outbox.append((channel, ENCODER.encode(Heartbeat(self.epoch, dict(self._seqs)))))
            self._wake.set()

    async def _requests(self, pubsub: PubSub, markets: Mapping[str, MarketSpec], halt: asyncio.Event) -> None:
        """Snapshot requests from the nodes; a new shard map restarts the lease's work."""
        changes = topo.changes_channel(self.namespace).encode()
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is None:
                continue
            if message["channel"] == changes:
                log.warning("market data publisher: the shard map changed; following it")
                halt.set()
                return
            name = bytes(message["data"]).decode(errors="replace")
            if name == "*":
                self._want_snapshots.update(markets)
            elif name in markets:
                self._want_snapshots.add(name)
            self._wake.set()
