"""`investo bench ws`: many WebSocket clients on a busy market, fed by orders at a fixed rate.

Against a running ``investo up`` (``--url``) or one started here (with its bots on):

1. ``clients`` WebSocket clients (``websockets``; spread over ``processes`` worker
   processes, each a single asyncio loop) connect to ``/ws/<sym>@depth`` and
   ``SUBSCRIBE`` to ``<sym>@trade`` of the first market;
2. once all are connected (a common wall-clock start), the load generator places
   signed LIMIT orders over REST at ``rate`` per second, alternately buying and
   selling at one price near the market so that about half of them trade (open
   loop, as ``investo bench api``), for ``seconds``;
3. every client counts what it receives; on each ``trade`` message it notes the
   latency from the match (the trade's ``T``, stamped by the engine host) to its
   receipt (the local wall clock: same machine, same clock).

Then one client alone, subscribed to every stream of every market, receives under
the same load: its messages/s is the single-client figure.

Printed: clients connected, messages/s delivered (all clients), trade latency
p50/p99/max in ms, and the single client's messages/s. Nothing is tuned: the load
generator, the clients and (when started here) the server share the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
import orjson
import websockets

from investo.bench import api_bench
from investo.bench.stats import percentile

CONNECT_BATCH = 100


@dataclass
class ClientStats:
    connected: int = 0
    messages: int = 0
    latencies_ms: list[float] = field(default_factory=list)


@dataclass
class WsResult:
    clients: int
    connected: int
    seconds: float
    messages: int
    orders_ok: int
    latencies_ms: list[float]
    single_messages: int
    single_seconds: float

    def percentile(self, p: float) -> float:
        return percentile(self.latencies_ms, p)

    def lines(self) -> list[str]:
        rate = self.messages / self.seconds if self.seconds else 0.0
        single = self.single_messages / self.single_seconds if self.single_seconds else 0.0
        return [
            f"clients={self.clients} connected={self.connected} seconds={self.seconds:.1f} "
            f"orders_ok={self.orders_ok}",
            f"messages_per_sec={rate:.0f} messages={self.messages} trade_samples={len(self.latencies_ms)}",
            f"trade_latency_ms p50={self.percentile(50):.2f} p99={self.percentile(99):.2f} "
            f"max={max(self.latencies_ms, default=float('nan')):.2f}",
            f"single_client_messages_per_sec={single:.0f}",
        ]


def _ws_url(url: str) -> str:
    return "ws" + url.removeprefix("http")


async def _client(
    ws_url: str, streams: Sequence[str], start_at: float, end_at: float, stats: ClientStats
) -> None:
    try:
        ws = await websockets.connect(f"{ws_url}/ws/{streams[0]}", max_size=None, open_timeout=60)
    except (OSError, websockets.WebSocketException, TimeoutError):
        return
    async with ws:
        if len(streams) > 1:
            await ws.send(
                orjson.dumps({"method": "SUBSCRIBE", "params": list(streams[1:]), "id": 1}).decode()
            )
        stats.connected += 1
        latencies = stats.latencies_ms
        with contextlib.suppress(websockets.ConnectionClosed, TimeoutError):
            while True:
                remaining = end_at - time.time()
                if remaining <= 0:
                    break
                text = await asyncio.wait_for(ws.recv(), remaining)
                now = time.time()
                if now < start_at:
                    continue
                stats.messages += 1
                if isinstance(text, str) and text.startswith('{"e":"trade"'):
                    latencies.append(now * 1000 - orjson.loads(text)["T"])


async def _clients(
    ws_url: str, n: int, streams: Sequence[str], start_at: float, end_at: float
) -> ClientStats:
    stats = ClientStats()
    tasks = []
    for i in range(0, n, CONNECT_BATCH):  # a burst of thousands of SYNs overflows the listen backlog
        batch = [
            asyncio.create_task(_client(ws_url, streams, start_at, end_at, stats))
            for _ in range(min(CONNECT_BATCH, n - i))
        ]
        tasks += batch
        while stats.connected < i + len(batch) and time.time() < start_at:
            await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    return stats


def _worker(args: tuple[str, int, list[str], float, float]) -> tuple[int, int, list[float]]:
    ws_url, n, streams, start_at, end_at = args
    stats = asyncio.run(_clients(ws_url, n, streams, start_at, end_at))
    return stats.connected, stats.messages, stats.latencies_ms


async def _load(url: str, rate: int, seconds: float, users: int, start_at: float) -> int:
    """Wait until ``start_at``, then place orders at ``rate``/s for ``seconds``; return how many were ok."""
    async with api_bench.order_load(url, users) as load:
        delay = start_at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        result = await api_bench.run_rate(load, rate, seconds)
    return result.ok


async def _symbols(url: str) -> list[str]:
    async with aiohttp.ClientSession(url) as http, http.get("/api/v3/exchangeInfo") as response:
        return [s["symbol"] for s in (await response.json())["symbols"]]


def _every_stream(symbols: Sequence[str]) -> list[str]:
    from investo.marketdata import market_streams

    return [name for s in symbols for name in market_streams(s)] + ["!miniTicker@arr"]


def bench(url: str, clients: int, rate: int, seconds: float, users: int, processes: int) -> WsResult:
    symbols = asyncio.run(_symbols(url))
    sym = symbols[0].lower()
    streams = [f"{sym}@depth", f"{sym}@trade"]
    ws_url = _ws_url(url)
    processes = max(1, min(processes, clients))
    setup = 3.0 + clients / 200 + users * 0.05
    start_at = time.time() + setup
    end_at = start_at + seconds
    shares = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes) as pool:
        pending = pool.map_async(_worker, [(ws_url, n, streams, start_at, end_at) for n in shares])
        orders_ok = asyncio.run(_load(url, rate, seconds, users, start_at))
        parts = pending.get(timeout=setup + seconds + 120)
    connected = sum(p[0] for p in parts)
    messages = sum(p[1] for p in parts)
    latencies = [x for p in parts for x in p[2]]

    # one client, every stream of every market, the same load
    every = _every_stream(symbols)
    start1 = time.time() + 2.0 + users * 0.05
    end1 = start1 + seconds
    with ctx.Pool(1) as pool:
        pending = pool.map_async(_worker, [(ws_url, 1, every, start1, end1)])
        asyncio.run(_load(url, rate, seconds, users, start1))
        single = pending.get(timeout=seconds + 120)[0]
    return WsResult(clients, connected, seconds, messages, orders_ok, latencies, single[1], seconds)


def raise_fd_limit(wanted: int) -> None:
    """Lift the soft open-files limit towards ``wanted`` (inherited by a server started here)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def run(url: str | None, clients: int, rate: int, seconds: float, users: int, processes: int) -> WsResult:
    raise_fd_limit(4 * clients + 1024)
    if url:
        return bench(url, clients, rate, seconds, users, processes)
    with api_bench.local_exchange() as local:
        return bench(local, clients, rate, seconds, users, processes)
