"""The distributed market streams over a real cluster: Redis Streams engines (2 matching + 2 accounts
shards), ``investo marketdata`` publishers and two ``investo ws`` nodes, each a real uvicorn server
in this process, and clients over real WebSockets.

Evidence: a client that keeps a local book (snapshot from the replicas, as ``/api/v3/depth``
answers it, plus the node's diffs, Binance's rules, any hole fails) ends equal to the cluster's
book under orders on both matching shards; a message lost on the way to one node (a forced gap)
makes that node resync from a snapshot and bridge its clients without a hole; a heartbeat
reveals a loss at the end of a burst; the same messages reach both nodes; a standby publisher
takes over when the active one stops, and the clients' books stay right across the change.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import websockets

from cluster_fixtures import configured_cluster
from investo.cluster import topology as topo
from investo.cluster.client import ClusterClient
from investo.cluster.local import LocalCluster
from investo.cluster.mdpublisher import MarketDataPublisher, PublisherConfig
from investo.cluster.view import ClusterView
from investo.cluster.wsnode import WsNode, WsNodeConfig, build_ws_app
from investo.core.messages import Deposit, OrderType, PlaceOrder, Side, TimeInForce
from serving import served
from ws_book import LocalBook

A, B = "AINR", "BINR"  # on matching shards 0 and 1


@dataclass
class Node:
    node: WsNode
    port: int

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


@contextlib.asynccontextmanager
async def serve_node(redis_url: str) -> AsyncIterator[Node]:
    node = WsNode(WsNodeConfig(redis_url, resync_s=0.3))
    async with served(build_ws_app(node)) as port:
        yield Node(node, port)


@contextlib.asynccontextmanager
async def run_publisher(redis_url: str, **options: Any) -> AsyncIterator[MarketDataPublisher]:
    publisher = MarketDataPublisher(
        PublisherConfig(redis_url, lease_ms=1_000, heartbeat_s=0.1, snapshot_s=1.0, **options)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(publisher.run(stop))
    try:
        yield publisher
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await publisher.close()


async def wait_for(check: Any, timeout: float = 10.0, what: str = "condition") -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


class BookClient:
    """A client of one node keeping local books of some markets (snapshot from the replicas)."""

    def __init__(self, node: Node, view: ClusterView, symbols: list[str]) -> None:
        self.node, self.view, self.symbols = node, view, symbols
        self.books = {s: LocalBook() for s in symbols}
        self.messages: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._ws: Any = None

    async def start(self) -> None:
        streams = "/".join(f"{s.lower()}@depth" for s in self.symbols)
        self._ws = await websockets.connect(self.node.url(f"/stream?streams={streams}"))
        self._task = asyncio.create_task(self._read())
        await asyncio.sleep(0.05)  # subscribed before the snapshot: no diff falls between
        for symbol in self.symbols:
            self.books[symbol].snapshot(await rest_depth(self.view, symbol))

    async def _read(self) -> None:
        async for raw in self._ws:
            message = orjson.loads(raw)
            self.messages.append(message)
            data = message["data"]
            self.books[data["s"]].diff(data)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self._ws is not None:
            await self._ws.close()


async def rest_depth(view: ClusterView, symbol: str) -> dict[str, Any]:
    """``/api/v3/depth`` as a gateway answers it (its replicas, synced to what the engines published)."""
    await view.sync(view.shards_of_markets([symbol]), "done")
    engine = view.matching(symbol)
    spec = view.topology.markets[symbol]
    bids, asks = engine.depth()
    return {
        "lastUpdateId": engine.seq,
        "bids": [[spec.format_price(p), spec.format_qty(q)] for p, q in bids],
        "asks": [[spec.format_price(p), spec.format_qty(q)] for p, q in asks],
    }


async def books_agree(client: BookClient, timeout: float = 10.0) -> None:
    """Eventually every local book of ``client`` is the cluster's book (raises on a hole at once)."""
    last_error = ""
    async with asyncio.timeout(timeout):
        while True:
            if client._task is not None and client._task.done():
                client._task.result()
            ok = True
            for symbol, book in client.books.items():
                depth = await rest_depth(client.view, symbol)
                expected = ([tuple(x) for x in depth["bids"]], [tuple(x) for x in depth["asks"]])
                if book.levels() != expected:
                    ok = False
                    last_error = f"{symbol}: {book.levels()} != {expected}"
            if ok:
                return
            await asyncio.sleep(0.05)
    raise AssertionError(last_error)


def orders(rng: random.Random, count: int, symbols: tuple[str, ...] = (A, B)) -> list[PlaceOrder]:
    out = []
    for _ in range(count):
        side = rng.choice((Side.BUY, Side.SELL))
        price = rng.randint(1990, 2010)
        out.append(
            PlaceOrder(
                0, rng.choice((1, 2)), rng.choice(symbols), side, OrderType.LIMIT, TimeInForce.GTC,
                price, rng.randint(1, 9),
            )
        )  # fmt: skip
    return out


@pytest.fixture
async def running() -> AsyncIterator[tuple[str, LocalCluster, ClusterClient, ClusterView]]:
    async with configured_cluster() as (url, topology):
        server_url = topo.split_url(url)[0]
        engines = LocalCluster(server_url, topology)
        await engines.start()
        client = ClusterClient(url)
        await client.start()
        for user in (1, 2):
            await client.submit(Deposit(0, user, "INR", 100_000_000))
            for asset in ("A", "B"):
                await client.submit(Deposit(0, user, asset, 1_000_000))
        import redis.asyncio as aioredis

        redis = aioredis.Redis.from_url(server_url)
        view = ClusterView(server_url, topology, redis)
        await view.start()
        try:
            yield url, engines, client, view
        finally:
            await view.stop()
            await redis.aclose()
            await client.close()
            await engines.stop()


async def test_two_nodes_serve_the_cluster_book_and_a_gap_is_bridged_from_a_snapshot(
    running: tuple[str, LocalCluster, ClusterClient, ClusterView],
) -> None:
    url, _engines, cluster, view = running
    rng = random.Random(11)
    for command in orders(rng, 40):  # a book before anybody watches
        await cluster.submit(command)
    async with run_publisher(url) as publisher, serve_node(url) as one, serve_node(url) as two:
        await wait_for(lambda: one.node.ready and two.node.ready, what="nodes ready")
        assert publisher.active
        first, second = BookClient(one, view, [A, B]), BookClient(two, view, [A])
        await first.start()
        await second.start()
        try:
            for command in orders(rng, 60):
                await cluster.submit(command)
            await books_agree(first)
            await books_agree(second)

            one.node.discard_next.add(A)  # the next AINR message never reaches node one
            for command in orders(rng, 30, (A,)):
                await cluster.submit(command)
            await wait_for(lambda: one.node.feeds[A].resyncs >= 1, what="node one resynced")
            await books_agree(first)
            await books_agree(second)
            assert one.node.feeds[A].gaps >= 1
            assert two.node.feeds[A].gaps == 0 and two.node.feeds[A].resyncs == 0

            # a loss at the end of a burst: only the heartbeat can tell
            one.node.discard_next.add(B)
            await cluster.submit(orders(rng, 1, (B,))[0])
            await wait_for(lambda: one.node.feeds[B].resyncs >= 1, what="resync after a heartbeat")
            await books_agree(first)
            assert first.books[A].applied > 0 and first.books[B].applied > 0
        finally:
            await first.close()
            await second.close()


async def test_a_standby_publisher_takes_over_when_the_active_one_dies(
    running: tuple[str, LocalCluster, ClusterClient, ClusterView],
) -> None:
    url, _engines, cluster, view = running
    rng = random.Random(5)
    active = MarketDataPublisher(PublisherConfig(url, lease_ms=1_000, heartbeat_s=0.1, snapshot_s=1.0))
    dying = asyncio.create_task(active.run(asyncio.Event()))
    try:
        await wait_for(lambda: active.active, what="first publisher active")
        async with run_publisher(url) as standby, serve_node(url) as node:
            await wait_for(lambda: node.node.ready, what="node ready")
            assert not standby.active
            client = BookClient(node, view, [A, B])
            await client.start()
            try:
                for command in orders(rng, 20):
                    await cluster.submit(command)
                await books_agree(client)

                async def vanish() -> None:  # no release: the lease has to expire, as after kill -9
                    return None

                active._release = vanish  # type: ignore[method-assign]
                dying.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await dying
                await wait_for(lambda: standby.active, what="standby active")
                assert standby.epoch > active.epoch
                for command in orders(rng, 40):
                    await cluster.submit(command)
                await books_agree(client)
                await wait_for(lambda: node.node.feeds[A].epoch == standby.epoch, what="new epoch")
            finally:
                await client.close()
    finally:
        dying.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await dying
        await active.close()
