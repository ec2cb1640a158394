"""The WebSocket gateway alone, fed market data as fast as its clients take it (bench only).

``investo bench ws`` runs this in a subprocess (``python -m investo.bench.ws_feed
--port P``) to measure what the gateway can deliver to one client, which no order
load on this machine can produce. It is the production gateway with no engine: a
:class:`~investo.marketdata.hub.Hub` with :func:`~investo.ws.gateway.mount_ws` on a
Starlette app under uvicorn with :data:`~investo.ws.protocol.UVICORN_OPTIONS`, the
shape of a gateway process fed market data from elsewhere.

The feed publishes ``depthUpdate`` and ``trade`` messages of the first market:
recorded at start-up from the market-data service's own builders
(:func:`~investo.marketdata.service.depth_diff_json`,
:func:`~investo.marketdata.service.trade_json`: the real shapes and formatting, prices
on a random walk, 1,024 of each), then replayed in a ring with their ids renumbered
(depth update ids contiguous, trade ids consecutive) and ``E``/``T`` set to now. Each
is published into the hub as a payload, so it is serialised and framed once per
message, as the engine host's listener or a gateway fed from elsewhere does; building
the payloads (the engine host's share) is not counted. They go out in bursts of
``burst`` messages per event-loop pass (an engine batch of a busy market makes a
depth diff, partial books, trades, candles… in one pass), and the feed holds back
while any client's connection holds more than ``high_water`` unsent bytes. So a
client receives as fast as the gateway delivers and the client reads, and is never
dropped. Nothing is published while nobody is connected.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from starlette.applications import Starlette

from investo.core.messages import Side, TradeExecuted
from investo.marketdata.builders import DepthDiff
from investo.marketdata.hub import Hub
from investo.marketdata.service import depth_diff_json, market_streams, trade_json
from investo.markets import MarketSpec, load_markets
from investo.ws.gateway import Connections, mount_ws
from investo.ws.protocol import UVICORN_OPTIONS

BURST = 20
HIGH_WATER = 256 * 1024
BUFFER_LIMIT = 1 << 20


RECORDED = 1_024


class Feed:
    """Recorded depth diffs and trades of one market, replayed in sequence (module docstring)."""

    def __init__(self, spec: MarketSpec, seed: int = 1) -> None:
        symbol = spec.symbol.lower()
        self.depth_streams = [f"{symbol}@depth", f"{symbol}@depth@100ms"]
        self.trade_stream = f"{symbol}@trade"
        self.diffs, self.trades = _record(spec, random.Random(seed), RECORDED)
        self.update_id = 0
        self.trade_id = 0
        self.published = 0

    def publish(self, hub: Hub, count: int) -> None:
        """Publish ``count`` messages: depth diffs and trades, alternately."""
        now = time.time_ns() // 1_000_000
        for i in range(count):
            if i % 2:
                self.trade_id += 1
                trade = self.trades[self.trade_id % RECORDED]
                trade["t"], trade["T"], trade["E"] = self.trade_id, now, now
                hub.publish(self.trade_stream, trade)
            else:
                self.update_id += 1
                diff = self.diffs[self.update_id % RECORDED]
                diff["U"] = diff["u"] = self.update_id
                diff["E"] = now
                hub.publish_many(self.depth_streams, diff)
        self.published += count


def _record(
    spec: MarketSpec, rng: random.Random, n: int
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """``n`` depth diffs and ``n`` trades made by the market-data builders, prices on a random walk."""
    diffs, trades = [], []
    price = 100_000  # ticks
    for i in range(n):
        price += rng.choice((-1, 0, 1))
        bids = [(price - k, rng.randrange(0, 50)) for k in range(1, 1 + rng.randrange(1, 4))]
        asks = [(price + k, rng.randrange(0, 50)) for k in range(1, 1 + rng.randrange(1, 4))]
        diffs.append(depth_diff_json(spec, DepthDiff(i, i, bids, asks), 0))
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        trade = TradeExecuted(0, 0, spec.symbol, i, price, rng.randrange(1, 20), side, 0, 0, 0, 0, 0, 0)
        trades.append(trade_json(spec, trade, 0))
    return diffs, trades


async def run_feed(hub: Hub, connections: Connections, feed: Feed, burst: int, high_water: int) -> None:
    """Publish bursts while someone listens and every client keeps up (module docstring)."""
    while True:
        clients = connections.clients
        if not clients or max(client.buffered() for client in clients) > high_water:
            await asyncio.sleep(0.001)
            continue
        feed.publish(hub, burst)
        await asyncio.sleep(0)  # the flush of this burst runs first


def build_app(burst: int = BURST, high_water: int = HIGH_WATER) -> Starlette:
    spec = next(iter(load_markets(None).values()))
    hub = Hub()
    feed = Feed(spec)
    streams = frozenset(market_streams(spec.symbol))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(run_feed(hub, connections, feed, burst, high_water))
        try:
            yield
        finally:
            task.cancel()

    app = Starlette(lifespan=lifespan)
    connections = mount_ws(app, hub, lambda: streams, buffer_limit=BUFFER_LIMIT)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--burst", type=int, default=BURST, help="messages per event-loop pass")
    args = parser.parse_args()
    config = uvicorn.Config(
        build_app(args.burst), host="127.0.0.1", port=args.port, log_level="warning", **UVICORN_OPTIONS
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
