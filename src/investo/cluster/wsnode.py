"""``investo ws``: a cluster's public market streams, served from Redis pub/sub.

A node subscribes to every market's channel, the ``!miniTicker@arr`` channel and the
heartbeats that ``investo marketdata`` publishes (:mod:`investo.cluster.mdpublisher`),
runs each market's sequence check (:class:`~investo.cluster.wsfeed.MarketFeed`) and
hands the messages to its clients through the embedded mode's WebSocket gateway
(:func:`investo.ws.gateway.mount_ws`: ``/ws/<stream>``, ``/stream?streams=``,
``SUBSCRIBE``/``UNSUBSCRIBE``/``LIST_SUBSCRIPTIONS``, pings, slow clients dropped), the
frames built once per node for all its clients. Nodes share nothing: run as many as the
clients need, behind any load balancer; a client whose node dies reconnects to another
and resyncs its book from ``/api/v3/depth`` as after any reconnect.

While a market is stale (a gap, until its snapshot arrives) its depth diffs are held
back; ``/health`` answers ``ready: true`` once every market holds a book and none is
stale (503 before), ``/metrics`` the open clients, gaps and resyncs.

A gateway started with ``--market-streams`` runs a :class:`WsNode` on its own hub, so
the trading screen it serves gets its market streams from the same origin (``investo up
--redis`` does that). The node needs no SQL. It reads the markets from the shard map at start (a new shard
map with other markets needs a restart of the nodes). Costs: per message one msgpack
decode and the clients' writes (:mod:`investo.ws.gateway`); idle, one heartbeat
every ``heartbeat_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from redis.asyncio.client import PubSub
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from investo.cluster import topology as topo
from investo.cluster.wsfeed import (
    ALL_MARKETS,
    HEARTBEAT_DECODER,
    MESSAGE_DECODER,
    MarketFeed,
    heartbeat_channel,
    market_channel,
    resync_channel,
)
from investo.marketdata.hub import Hub
from investo.marketdata.service import market_streams
from investo.node import wall_clock_ms
from investo.tasks import cancel_and_wait
from investo.ws.client import WsClient
from investo.ws.gateway import mount_ws

log = logging.getLogger(__name__)

CLOSE_RESYNC = 1012  # "service restart": reconnect and resync


@dataclass
class WsNodeConfig:
    redis_url: str
    buffer_limit: int = 1 << 20  # bytes a client may leave unsent before it is dropped
    resync_s: float = 1.0  # a stale market asks again for a snapshot after this long
    clock_ms: Callable[[], int] = wall_clock_ms


class WsNode:
    """The pub/sub subscriber and its feeds; see the module docstring."""

    def __init__(self, config: WsNodeConfig, hub: Hub | None = None) -> None:
        self.config = config
        self.server_url, self.namespace = topo.split_url(config.redis_url)
        self.redis: aioredis.Redis = aioredis.Redis.from_url(self.server_url)
        self.hub = hub or Hub()  # a gateway's own hub with --market-streams
        self.feeds: dict[str, MarketFeed] = {}
        self.streams: frozenset[str] = frozenset()
        self.topology: topo.Topology | None = None
        self.received = 0
        self.discard_next: set[str] = set()  # tests: markets whose next message is lost here
        self._channels: dict[bytes, MarketFeed] = {}
        self._asked: dict[str, float] = {}  # market -> when a snapshot was last asked for
        self._wanted: set[str] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._pubsub: PubSub | None = None

    @property
    def ready(self) -> bool:
        return bool(self.feeds) and all(feed.ready for feed in self.feeds.values())

    async def start(self) -> None:
        topology = self.topology = await topo.load_when_reachable(
            self.redis, self.namespace, lambda exc: log.warning("waiting for Redis: %s", exc)
        )
        clock = self.config.clock_ms
        for name in [*sorted(topology.markets), ALL_MARKETS]:
            spec = topology.markets.get(name)
            feed = MarketFeed(spec, name, self.hub, self._want, self._drop_depth, clock)
            self.feeds[name] = feed
            self._channels[market_channel(self.namespace, name).encode()] = feed
        names = {n for spec in topology.markets.values() for n in market_streams(spec.symbol)}
        self.streams = frozenset({"!miniTicker@arr"} | names)
        self._pubsub = self.redis.pubsub()
        await self._pubsub.subscribe(*map(bytes.decode, self._channels), heartbeat_channel(self.namespace))
        self._want("*")
        self._tasks = [
            asyncio.create_task(self._listen(self._pubsub), name="ws-node-listen"),
            asyncio.create_task(self._ask(), name="ws-node-resync"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            await cancel_and_wait(task)
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self.redis.aclose()

    # ------------------------------------------------------------------ input

    async def _listen(self, pubsub: PubSub) -> None:
        beat = heartbeat_channel(self.namespace).encode()
        while True:
            try:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the connection: whatever came meanwhile is lost
                log.warning("market data subscription lost (%s); resubscribing", exc)
                for feed in self.feeds.values():
                    feed.lost_connection()
                await asyncio.sleep(0.5)
                continue
            if message is None:
                continue
            try:
                self._dispatch(message["channel"], message["data"], beat)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.error("undecodable market data message on %r: %s", message["channel"], exc)

    def _dispatch(self, channel: bytes, data: bytes, beat: bytes) -> None:
        self.received += 1
        if channel == beat:
            heartbeat = HEARTBEAT_DECODER.decode(data)
            for name, seq in heartbeat.seqs.items():
                feed = self.feeds.get(name)
                if feed is not None:
                    feed.on_heartbeat(heartbeat.epoch, seq)
            return
        feed = self._channels.get(channel)
        if feed is None:
            return
        if feed.name in self.discard_next:
            self.discard_next.discard(feed.name)
            return
        feed.on_message(MESSAGE_DECODER.decode(data))

    # ------------------------------------------------------------------ snapshots

    def _want(self, name: str) -> None:
        self._wanted.add(name)
        self._wake.set()

    async def _ask(self) -> None:
        """Ask for the snapshots wanted (at most once per ``resync_s`` each); ask again while stale."""
        channel = resync_channel(self.namespace)
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.resync_s / 2):
                    await self._wake.wait()
            self._wake.clear()
            now = time.monotonic()
            names = self._wanted | {n for n, f in self.feeds.items() if f.stale}
            self._wanted = set()
            due = [n for n in sorted(names) if now - self._asked.get(n, 0.0) >= self.config.resync_s]
            self._wanted |= {"*"} & (names - set(due))  # stale markets are found again each pass
            try:
                for name in due:
                    await self.redis.publish(channel, name)
                    self._asked[name] = now
            except Exception as exc:
                log.warning("asking for market data snapshots failed: %s", exc)
                self._wanted |= set(due)
                await asyncio.sleep(0.5)

    def _drop_depth(self, streams: list[str]) -> None:
        for stream in streams:
            for subscriber in self.hub.subscribers(stream):
                if isinstance(subscriber, WsClient):
                    subscriber.drop("market data gap: resync your book from /api/v3/depth", CLOSE_RESYNC)

    # ------------------------------------------------------------------ reporting

    def health(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "markets": {
                name: {"ready": feed.ready, "u": feed.last, "gaps": feed.gaps, "resyncs": feed.resyncs}
                for name, feed in self.feeds.items()
                if feed.spec is not None
            },
        }


def build_ws_app(node: WsNode, *, print_line: Callable[[], None] | None = None) -> Starlette:
    """The node's HTTP app: the market streams, ``/health`` and ``/metrics``."""
    registry = CollectorRegistry()
    clients = Gauge("investo_websocket_clients", "Open WebSocket clients", registry=registry)
    Gauge("investo_md_gaps", "Market data gaps seen", registry=registry).set_function(
        lambda: sum(f.gaps for f in node.feeds.values())
    )
    Gauge("investo_md_resyncs", "Books resynced from a snapshot", registry=registry).set_function(
        lambda: sum(f.resyncs for f in node.feeds.values())
    )
    Gauge("investo_md_stale_markets", "Markets waiting for a snapshot", registry=registry).set_function(
        lambda: sum(1 for f in node.feeds.values() if f.stale)
    )

    async def health(_: Request) -> Response:
        body = node.health()
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await node.start()
        if print_line is not None:
            print_line()
        try:
            yield
        finally:
            await node.stop()

    app = Starlette(
        routes=[Route("/health", health), Route("/metrics", metrics)],
        lifespan=lifespan,
    )
    mount_ws(app, node.hub, lambda: node.streams, buffer_limit=node.config.buffer_limit, on_count=clients.set)
    return app
