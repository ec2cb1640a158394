"""The REST gateway of a cluster (``investo gateway``): the same API as ``investo up``, over the shards.

:class:`GatewayNode` implements :class:`~investo.api.nodes.ApiNode`, so
:func:`investo.api.app.create_app` serves the very same Binance API on it. Where the
embedded :class:`~investo.node.Node` calls its engines, this one goes through the cluster:

* **commands**: :class:`~investo.cluster.client.ClusterClient` (its own reply channel,
  correlation numbers); no answer in time is "status unknown" (-1007), never retried;
* **books and balances**: :class:`~investo.cluster.view.ClusterView`, a replica of every
  shard, synced before each read (read-your-writes); the replicas are lazy (they step
  only for a read) while no user stream is open here, so a gateway that only takes orders
  does not repeat the engines' work (each read checks the shards' input epochs, so a
  replica that rested through a rebuild of the cluster reloads before it answers);
* **SQL reads** (orders, trades, klines, tickers): the history the DB writers write,
  once their watermarks reach what the streams held when the request began
  (:class:`~investo.cluster.sqlprogress.SqlProgress`);
* **the user stream** (listen keys, ``/ws/<listenKey>``, ``/ws-api/v3``): fed by the
  replicas' steps (:meth:`UserStreams.on_order_events` from matching shards,
  :meth:`UserStreams.on_account_steps` from accounts shards). Listen keys live in the
  gateway that made them: a client connects its stream to the gateway it asked;
* **keys**: cached here, loaded from SQL on a miss (a key registered on another
  gateway); a revocation is announced on ``<ns>:keys:revoked`` so every gateway forgets
  the key at once, and every ``key_sweep_s`` each gateway also reads the keys revoked
  lately from SQL (pub/sub delivers at most once);
* **replays**: a signed request is refused if any gateway of the cluster has seen it
  (``SET NX`` of its signature in Redis until it expires), not only this one; the marks
  of requests verified while one pipeline of them is in flight go in the next one. A new
  order's mark is set by its append instead (:meth:`GatewayNode.submit_signed`): the
  order waits for one round trip, not two;
* **demo funds**: a user's claim is checked and made under a Postgres advisory lock,
  so the daily limit holds whichever gateways the claims go to.

Public market streams are served by ``investo ws`` (:mod:`investo.cluster.wsnode`); with
``market_streams`` (``investo gateway --market-streams``) a gateway runs such a node on its
own hub too, so the trading screen it serves has them on the same origin.

Costs per request, beyond the embedded mode's: a signed request one Redis ``SET`` (under
load, many share one pipeline round trip); an order one append carrying its ``SET`` (under
load, many share one) and one answer; a book or balance read one ``MGET`` (plus the replica's
lag, usually nothing); an SQL read one ``MGET`` plus the DB writer's lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from investo.api.keys import KeyCache
from investo.api.limits import RateLimits
from investo.api.nodes import NotCaughtUp
from investo.cluster import topology as topo
from investo.cluster.batcher import Batcher, BatcherClosed
from investo.cluster.client import ClusterClient, MarkTaken
from investo.cluster.records import Settle
from investo.cluster.replica import ShardReplica, Stepped
from investo.cluster.shards import MatchingShard, Shard
from investo.cluster.sqlprogress import SqlProgress
from investo.cluster.topology import Topology
from investo.cluster.view import ClusterView
from investo.cluster.wsnode import WsNode, WsNodeConfig
from investo.core.matching import MatchingEngine
from investo.core.messages import Command, Deposit, Event, PlaceOrder, Withdraw
from investo.host import Applied, BatchObserver, HostStopped
from investo.marketdata.hub import Hub
from investo.marketdata.user import AccountsStep, ListenKeys, StreamSet, UserStreams
from investo.markets import MarketSpec
from investo.node import assets_of, default_demo_limits, wall_clock_ms
from investo.security.signing import ReplayGuard, RequestVerifier, SignatureReplayed, SignedRequest
from investo.store import queries
from investo.store.migrate import open_migrated
from investo.tasks import cancel_and_wait

log = logging.getLogger(__name__)

MAX_REVOKED_REMEMBERED = 100_000
DEMO_CLAIMS_AT_ONCE = 4  # each holds a database connection for its lock


@dataclass
class GatewayConfig:
    redis_url: str  # redis://host:port/db?prefix=<namespace>
    database_url: str  # postgresql://… (the cluster's SQL history)
    clock_ms: Callable[[], int] = wall_clock_ms
    ws_buffer_limit: int = 1 << 20  # bytes a WebSocket client may leave unsent before it is dropped
    reply_timeout_s: float = 5.0  # a command with no answer by then is "status unknown"
    read_timeout_s: float = 5.0  # a read waits at most this long for replicas or SQL to catch up
    key_sweep_s: float = 5.0  # how often keys revoked elsewhere are read from SQL
    demo_limits: Mapping[str, int] = field(default_factory=dict)
    gateway_id: str | None = None
    market_streams: bool = False  # also serve the public market streams (an investo ws node inside)


class GatewayNode:
    """A cluster's REST gateway; see the module docstring."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.clock_ms = config.clock_ms
        self.server_url, self.namespace = topo.split_url(config.redis_url)
        self.client = ClusterClient(
            config.redis_url,
            gateway_id=config.gateway_id,
            timeout_s=config.reply_timeout_s,
            clock_ms=config.clock_ms,
        )
        self.redis: aioredis.Redis = aioredis.Redis.from_url(self.server_url)
        self.keys = KeyCache()
        self.verifier = RequestVerifier(self.keys.lookup, ReplayGuard())
        self.listen_keys = ListenKeys(self.clock_ms)
        self._hub = Hub()
        self.user_streams = UserStreams({}, self.clock_ms, self._hub, self.listen_keys)
        self.market: WsNode | None = None
        if config.market_streams:
            self.market = WsNode(
                WsNodeConfig(config.redis_url, buffer_limit=config.ws_buffer_limit), self._hub
            )
        market = self.market
        self.stream_names: Collection[str] = StreamSet(
            (lambda: market.streams) if market is not None else frozenset, self.listen_keys
        )
        self.rate_limits: RateLimits | None = None
        self.on_batch: BatchObserver | None = None  # the embedded host's metrics hook: unused here
        self.db: AsyncEngine | None = None
        self.ready = False
        self.topology: Topology | None = None
        self._assets: dict[str, int] = {}
        self.view: ClusterView | None = None
        self.sql: SqlProgress | None = None
        self._revoked: dict[str, None] = {}  # revoked key ids, oldest first (bounded)
        self._user_locks: dict[int, asyncio.Lock] = {}
        self._demo_slots = asyncio.Semaphore(DEMO_CLAIMS_AT_ONCE)
        self._seen: Batcher[tuple[str, int], bool] = Batcher(self._mark_seen)  # replay marks, grouped
        self._tasks: list[asyncio.Task[None]] = []
        self._rebuilding: asyncio.Task[None] | None = None
        self.client.on_message(topo.written_channel(self.namespace), self._on_written)
        self.client.on_message(topo.revoked_keys_channel(self.namespace), self._on_revoked)
        self.client.on_topology.append(self._on_topology)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect (waiting for Redis and the database), load keys, replicate every shard."""
        await self.client.start(wait=True)
        topology = self.client.topology
        assert topology is not None
        self.topology = topology
        self._assets = assets_of(topology.markets)
        self.user_streams.set_markets(topology.markets)
        self.db = await open_migrated(self.config.database_url)
        await self.keys.load_all(self.db)
        self.sql = SqlProgress(self.redis, self.db, topology, timeout_s=self.config.read_timeout_s)
        self.view = await self._open_view(topology)
        self.user_streams.attach(self._current_view)
        self.user_streams.start()
        self._tasks.append(asyncio.create_task(self._sweep_revoked_keys(), name="revoked-key-sweep"))
        if self.market is not None:
            await self.market.start()
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await cancel_and_wait(self._rebuilding)
        for task in self._tasks:
            await cancel_and_wait(task)
        await self.user_streams.stop()
        if self.market is not None:
            await self.market.stop()
        await self._seen.close()
        if self.sql is not None:
            await self.sql.close()
        if self.view is not None:
            await self.view.stop()
        await self.client.close()
        await self.redis.aclose()
        if self.db is not None:
            await self.db.dispose()

    async def _open_view(self, topology: Topology) -> ClusterView:
        view = ClusterView(
            self.server_url,
            topology,
            self.redis,
            on_batch=self._on_replica_batch,
            on_reload=self.user_streams.resync,
            timeout_s=self.config.read_timeout_s,
            wanted=self._streams_open,
        )
        try:
            await view.start()
        except BaseException:  # cancelled (a newer shard map) or failed: close what it opened
            await view.stop()
            raise
        return view

    def _streams_open(self) -> bool:
        """Whether a user stream is open here: then the replicas follow every step (eagerly)."""
        return len(self.listen_keys) > 0

    def _current_view(self) -> ClusterView:
        assert self.view is not None
        return self.view

    def _on_topology(self, topology: Topology) -> None:
        """The shard map changed: replicate the new shards (in the background), then switch."""
        if self.view is not None and topology.version != self.view.topology.version:
            if self._rebuilding is not None:
                self._rebuilding.cancel()  # an older map's view, not finished: never used
            self._rebuilding = asyncio.create_task(self._rebuild(topology), name="gateway-rebuild")

    async def _rebuild(self, topology: Topology) -> None:
        view = await self._open_view(topology)
        old, self.view, self.topology = self.view, view, topology
        self._assets = assets_of(topology.markets)
        self.user_streams.set_markets(topology.markets)
        self.user_streams.resync()
        if self.sql is not None:
            self.sql.topology = topology
        if old is not None:
            await old.stop()
        log.info("gateway %s follows shard map version %d", self.client.gateway_id, topology.version)

    # ------------------------------------------------------------------ the user stream feed

    def _on_replica_batch(self, replica: ShardReplica, batch: list[Stepped]) -> None:
        view = self.view
        if view is not None and view.replicas.get((replica.role, replica.shard_no)) is not replica:
            return  # a view being built for a new shard map: it feeds the streams once it is current
        feed_user_streams(self.user_streams, replica.shard, batch)

    # ------------------------------------------------------------------ the API's view

    @property
    def markets(self) -> Mapping[str, MarketSpec]:
        return self.topology.markets if self.topology is not None else {}

    @property
    def assets(self) -> Mapping[str, int]:
        return self._assets

    @property
    def demo_limits(self) -> Mapping[str, int]:
        return self.config.demo_limits or default_demo_limits(self.markets)

    @property
    def ws_buffer_limit(self) -> int:
        return self.config.ws_buffer_limit

    @property
    def hub(self) -> Hub:
        return self._hub

    def progress(self) -> int:
        return 0 if self.view is None else self.view.progress()

    def sql_lag(self) -> float:
        return 0.0 if self.sql is None else float(self.sql.lag())

    async def state(self) -> dict[str, Any]:
        view = self._current_view()
        await view.sync_all()
        return {"offset": view.progress(), "stateHash": view.state_hash(), "shards": view.shard_states()}

    async def submit(self, command: Command) -> Applied:
        if not self.ready:
            raise HostStopped("the gateway is not connected to the cluster")
        return await self.client.submit(command)

    async def sync_books(self, symbols: Iterable[str]) -> None:
        view = self._current_view()
        await view.sync(view.shards_of_markets(symbols), "done")

    def book(self, symbol: str) -> MatchingEngine:
        return self._current_view().matching(symbol)

    async def balances(self, user: int) -> dict[str, tuple[int, int]]:
        view = self._current_view()
        await view.sync([("accounts", view.topology.accounts_shard(user))], "next")
        return view.balances(user)

    async def prepare_user_stream(self, user: int) -> None:
        """Catch up the user's accounts replica and every matching replica, then wake them all.

        Replicas are lazy while no user stream is open here; the stream about to open makes
        them eager (``wanted``), and the poke makes them notice at once.
        """
        view = self._current_view()
        await view.sync(view.shards_of_markets(view.topology.markets), "done")
        await view.sync([("accounts", view.topology.accounts_shard(user))], "next")
        view.poke()

    async def caught_up(self, *symbols: str) -> None:
        assert self.sql is not None
        await self.sql.wait(self.sql.streams_of(symbols))

    # ------------------------------------------------------------------ keys

    def knows_key(self, key_id: str) -> bool:
        return key_id in self.keys

    async def fetch_key(self, key_id: str) -> None:
        if self.db is None or key_id in self._revoked:
            return
        try:
            await self.keys.fetch(self.db, key_id)
        except SQLAlchemyError as exc:
            raise NotCaughtUp(f"the API key cannot be looked up (database: {exc}); try again") from exc
        if key_id in self._revoked:  # revoked while we looked it up
            self.keys.forget(key_id)

    def user_of_key(self, key_id: str) -> int:
        return self.keys.user_of(key_id)

    def remember_key(self, key_id: str, user_id: int, pem: str) -> None:
        self.keys.remember(key_id, user_id, pem)

    async def forget_key(self, key_id: str) -> None:
        """Forget a key revoked here, and tell every other gateway (SQL already says revoked)."""
        self._note_revoked(key_id)
        try:
            await self.redis.publish(topo.revoked_keys_channel(self.namespace), key_id)
        except RedisError as exc:  # the others find it within key_sweep_s
            log.warning("announcing the revocation of a key failed (%s); gateways will sweep it", exc)

    def _on_revoked(self, data: bytes) -> None:
        self._note_revoked(data.decode(errors="replace"))

    def _note_revoked(self, key_id: str) -> None:
        self.keys.forget(key_id)
        self._revoked[key_id] = None
        while len(self._revoked) > MAX_REVOKED_REMEMBERED:
            del self._revoked[next(iter(self._revoked))]

    async def _sweep_revoked_keys(self) -> None:
        """Every ``key_sweep_s``: forget keys revoked lately (a missed announcement)."""
        since = self.clock_ms()
        while True:
            await asyncio.sleep(self.config.key_sweep_s)
            now = self.clock_ms()
            try:
                assert self.db is not None
                for key_id in await queries.keys_revoked_since(self.db, since - 60_000):  # clock skew
                    if key_id in self.keys:
                        log.info("forgetting key %s… revoked on another gateway", key_id[:6])
                    self._note_revoked(key_id)
                since = now
            except (SQLAlchemyError, OSError) as exc:
                log.warning("reading revoked keys failed: %s", exc)

    async def submit_signed(self, command: Command, key_id: str, request: SignedRequest) -> Applied:
        """Submit ``command`` unless another gateway has seen ``request``: the replay mark is
        set in the append's own script (one round trip for both; see ClusterClient.submit)."""
        if not self.ready:
            raise HostStopped("the gateway is not connected to the cluster")
        try:
            return await self.client.submit(command, *self._replay_mark(key_id, request))
        except MarkTaken:
            raise SignatureReplayed() from None

    def _replay_mark(self, key_id: str, request: SignedRequest) -> tuple[str, int]:
        """The Redis key marking ``request`` as seen, and how long it must live (ms)."""
        name = (
            f"{self.namespace}:seen:"
            + hashlib.blake2b(key_id.encode() + b"\0" + request.signature, digest_size=16).hexdigest()
        )
        ttl_ms = max(request.expires_ms - self.clock_ms(), 0) + 1_000  # past its window: refused anyway
        return name, ttl_ms

    async def check_replay(self, key_id: str, request: SignedRequest) -> None:
        """Refuse the request if another gateway has seen it (this one's guard already checked)."""
        try:
            first = await self._seen.submit(self._replay_mark(key_id, request))
        except (RedisError, BatcherClosed) as exc:
            raise NotCaughtUp(f"the cluster's Redis cannot be reached ({exc}); try again") from exc
        if not first:
            raise SignatureReplayed()

    async def _mark_seen(self, batch: list[tuple[str, int]]) -> list[bool]:
        """``SET name 1 NX PX ttl`` for each (name, ttl) in one pipeline: True where it was new."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, ttl_ms in batch:
                pipe.set(name, 1, nx=True, px=ttl_ms)
            return [bool(done) for done in await pipe.execute()]

    @contextlib.asynccontextmanager
    async def demo_lock(self, user_id: int) -> AsyncIterator[None]:
        """One claim per user at a time here, and across gateways (an advisory lock in Postgres)."""
        assert self.db is not None
        lock = self._user_locks.setdefault(user_id, asyncio.Lock())
        async with lock, self._demo_slots, queries.demo_claim_lock(self.db, user_id):
            yield

    # ------------------------------------------------------------------ announcements

    def _on_written(self, data: bytes) -> None:
        if self.sql is not None:
            self.sql.on_announce(data)


def feed_user_streams(streams: UserStreams, shard: Shard, batch: list[Stepped]) -> None:
    """Hand a replica's stepped batch to the user-stream listener (see the module docstring).

    A matching shard's events make execution reports; an accounts shard's steps make
    balance updates, refused orders' reports and positions (only when somebody listens:
    they track nothing).
    """
    if isinstance(shard, MatchingShard):
        streams.on_order_events([step.output for _, _, step in batch if step.output])
        return
    if not len(streams.keys):
        return
    steps = [_accounts_step(envelope.record, step.output) for _, envelope, step in batch if envelope]
    accounts, number = shard.topology.accounts_shards, shard.shard
    streams.on_account_steps(steps, shard.engine.balance, lambda user: user % accounts == number)


def _accounts_step(record: object, events: Sequence[Event]) -> AccountsStep:
    if isinstance(record, PlaceOrder | Deposit | Withdraw):
        return AccountsStep(record, events)
    if isinstance(record, Settle):
        return AccountsStep(None, events, record.events)
    return AccountsStep(None, events)
