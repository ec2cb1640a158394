"""`investo bench ws`: many WebSocket clients on a busy market, and what one client can take.

**Many clients, end to end.** Against a running ``investo up`` (``--url``) or one
started here:

1. ``clients`` WebSocket clients (picows: compiled frame parsing and one callback per
   frame, no task per message; spread over ``processes`` worker processes, each a
   single uvloop event loop) connect to
   ``/ws/<sym>@depth`` and ``SUBSCRIBE`` to ``<sym>@trade`` of the first market;
2. once all are connected (a common wall-clock start), the load generator places
   signed LIMIT orders over REST at ``rate`` per second, alternately buying and
   selling at one price near the market so that about half of them trade (open
   loop, as ``investo bench api``), for ``seconds``;
3. every client counts what it receives; on each ``trade`` message (recognised by
   its first bytes, then parsed) it notes the latency from the match (the trade's
   ``T``, stamped by the engine host) to its receipt (the local wall clock: same
   machine, same clock).

**One client, the gateway's capacity.** No order load on this machine makes 50,000
messages a second, so the single-client figure comes from the gateway alone
(:mod:`investo.bench.ws_feed`, started here in its own process): the production
gateway fed ``depthUpdate`` and ``trade`` messages recorded from the market-data
service's own builders and replayed with their ids renumbered, each serialised and
framed once, published into its hub as fast as the client takes them. One picows
client subscribed to both parses every message (orjson) and checks that depth
update ids are contiguous and trade ids consecutive (``gaps`` counts breaks); its
messages/s is the figure, beside its own CPU seconds (near the window's length: the
client is the limit).

Printed: the load average, clients connected, messages/s delivered (all clients),
the clients' CPU seconds, trade latency p50/p99/max in ms (from the match, and from
the publication), and the single client's messages/s. Nothing is tuned: the load
generator, the clients and the server share the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO

import aiohttp
import orjson
import picows
import uvloop

from investo.bench import api_bench
from investo.bench.stats import percentile

CONNECT_BATCH = 100
TRADE_PREFIX = b'{"e":"trade"'


@dataclass
class ClientStats:
    """What clients received in the window; per trade, match→receipt and publish→receipt."""

    connected: int = 0
    messages: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # from the trade's T (match)
    fan_out_ms: list[float] = field(default_factory=list)  # from its E (published by the host)
    cpu_seconds: float = 0.0  # the client processes' CPU time over the window
    load_average: float = 0.0  # the machine's 1-minute load average at the end of the window

    def add(self, other: ClientStats) -> None:
        self.connected += other.connected
        self.messages += other.messages
        self.cpu_seconds += other.cpu_seconds
        self.load_average = max(self.load_average, other.load_average)
        self.latencies_ms += other.latencies_ms
        self.fan_out_ms += other.fan_out_ms


@dataclass
class SingleResult:
    """One client of a gateway fed as fast as it takes: messages parsed, and breaks in the ids."""

    messages: int
    seconds: float
    gaps: int
    cpu_seconds: float = 0.0  # the client's own CPU time in the window (near `seconds`: client-bound)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


@dataclass
class WsResult:
    clients: int
    seconds: float
    orders_ok: int
    many: ClientStats
    single: SingleResult

    @property
    def connected(self) -> int:
        return self.many.connected

    @property
    def messages(self) -> int:
        return self.many.messages

    @property
    def latencies_ms(self) -> list[float]:
        return self.many.latencies_ms

    def percentile(self, p: float) -> float:
        return percentile(self.latencies_ms, p)

    def lines(self) -> list[str]:
        rate = self.messages / self.seconds if self.seconds else 0.0
        fan_out = self.many.fan_out_ms
        return [
            f"clients={self.clients} connected={self.connected} seconds={self.seconds:.1f} "
            f"orders_ok={self.orders_ok} load_average={self.many.load_average:.2f}",
            f"messages_per_sec={rate:.0f} messages={self.messages} trade_samples={len(self.latencies_ms)} "
            f"client_cpu_seconds={self.many.cpu_seconds:.1f}",
            f"trade_latency_ms p50={self.percentile(50):.2f} p99={self.percentile(99):.2f} "
            f"max={max(self.latencies_ms, default=float('nan')):.2f}",
            f"of which publish_to_receipt_ms p50={percentile(fan_out, 50):.2f} "
            f"p99={percentile(fan_out, 99):.2f} max={max(fan_out, default=float('nan')):.2f}",
            f"single_client_messages_per_sec={self.single.rate:.0f} messages={self.single.messages} "
            f"gaps={self.single.gaps} client_cpu_seconds={self.single.cpu_seconds:.1f} "
            "(the gateway alone, fed as fast as the client takes)",
        ]


def _ws_url(url: str) -> str:
    return "ws" + url.removeprefix("http")


def _subscribe(streams: Sequence[str]) -> bytes:
    return orjson.dumps({"method": "SUBSCRIBE", "params": list(streams), "id": 1})


class _Listener(picows.WSListener):
    """One client of the many: counts messages in the window, times each trade."""

    def __init__(self, streams: Sequence[str], window: tuple[float, float], stats: ClientStats) -> None:
        self.subscribe = _subscribe(streams[1:]) if len(streams) > 1 else b""
        self.start_at, self.end_at = window
        self.stats = stats

    def on_ws_connected(self, transport: picows.WSTransport) -> None:
        if self.subscribe:
            transport.send(picows.WSMsgType.TEXT, self.subscribe)
        self.stats.connected += 1

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        if frame.msg_type != picows.WSMsgType.TEXT:
            if frame.msg_type == picows.WSMsgType.CLOSE:
                transport.disconnect()
            return
        now = time.time()
        if not self.start_at <= now < self.end_at:
            return
        stats = self.stats
        stats.messages += 1
        payload = frame.get_payload_as_bytes()
        if payload.startswith(TRADE_PREFIX):
            trade = orjson.loads(payload)
            stats.latencies_ms.append(now * 1000 - trade["T"])
            stats.fan_out_ms.append(now * 1000 - trade["E"])


async def _clients(
    ws_url: str, n: int, streams: Sequence[str], start_at: float, end_at: float
) -> ClientStats:
    """``n`` clients counting from ``start_at`` to ``end_at``, then disconnected."""
    stats = ClientStats()
    url = f"{ws_url}/ws/{streams[0]}"
    transports: list[picows.WSTransport] = []

    def listener() -> _Listener:
        return _Listener(streams, (start_at, end_at), stats)

    for i in range(0, n, CONNECT_BATCH):  # thousands of SYNs at once overflow the listen backlog
        batch = [
            picows.ws_connect(listener, url, max_frame_size=1 << 24) for _ in range(min(CONNECT_BATCH, n - i))
        ]
        for result in await asyncio.gather(*batch, return_exceptions=True):
            if isinstance(result, tuple):
                transports.append(result[0])
        if time.time() >= start_at:
            break
    await asyncio.sleep(max(0.0, start_at - time.time()))
    cpu = time.process_time()
    await asyncio.sleep(max(0.0, end_at - time.time()))
    stats.cpu_seconds = time.process_time() - cpu
    stats.load_average = os.getloadavg()[0]
    for transport in transports:
        transport.disconnect()
    return stats


def _worker(args: tuple[str, int, list[str], float, float]) -> ClientStats:
    ws_url, n, streams, start_at, end_at = args
    return uvloop.run(_clients(ws_url, n, streams, start_at, end_at))


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


def many_clients(
    url: str, clients: int, rate: int, seconds: float, users: int, processes: int
) -> tuple[ClientStats, int]:
    """The end-to-end part (module docstring): what all clients received, and the orders placed."""
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
    stats = ClientStats()
    for part in parts:
        stats.add(part)
    return stats, orders_ok


def raise_fd_limit(wanted: int) -> None:
    """Lift the soft open-files limit towards ``wanted`` (inherited by a server started here)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@contextlib.contextmanager
def gateway_feed(burst: int) -> Iterator[str]:
    """:mod:`investo.bench.ws_feed` in a subprocess on a free port; yields its ``ws://`` URL."""
    port = api_bench.free_port()
    cmd = [sys.executable, "-m", "investo.bench.ws_feed", "--port", str(port), "--burst", str(burst)]
    with tempfile.TemporaryFile() as output:  # a file, not a pipe: nobody reads it while the feed runs
        process = subprocess.Popen(cmd, stdout=output, stderr=subprocess.STDOUT)
        try:
            asyncio.run(_wait_listening(port, process, output))
            yield f"ws://127.0.0.1:{port}"
        finally:
            api_bench.stop_processes([process])


async def _wait_listening(port: int, process: subprocess.Popen[bytes], output: IO[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output.seek(0)
            raise RuntimeError(f"the gateway feed exited early:\n{output.read().decode()}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("the gateway feed did not listen within 30 s")


class _Reader(picows.WSListener):
    """The single client: parses every message, checks the ids, counts a window after a warm-up."""

    def __init__(self, streams: Sequence[str], seconds: float, warmup: float) -> None:
        self.subscribe = _subscribe(streams[1:])
        self.seconds, self.warmup = seconds, warmup
        self.result: asyncio.Future[SingleResult] = asyncio.get_running_loop().create_future()
        self.last_u = self.last_t = self.count = self.gaps = 0
        self.began = self.end = self.cpu = 0.0
        self.counting = False

    def on_ws_connected(self, transport: picows.WSTransport) -> None:
        transport.send(picows.WSMsgType.TEXT, self.subscribe)
        self.began = time.perf_counter() + self.warmup
        self.end = self.began + self.seconds

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        if frame.msg_type != picows.WSMsgType.TEXT:
            if frame.msg_type == picows.WSMsgType.CLOSE and not self.result.done():
                self.result.set_exception(RuntimeError("the gateway feed closed the connection"))
            return
        m = orjson.loads(frame.get_payload_as_bytes())
        kind = m.get("e")
        if kind == "depthUpdate":
            self.gaps += self.last_u != 0 and m["U"] != self.last_u + 1
            self.last_u = m["u"]
        elif kind == "trade":
            self.gaps += self.last_t != 0 and m["t"] != self.last_t + 1
            self.last_t = m["t"]
        self.count += 1
        if self.count & 255 == 0:
            self._window(time.perf_counter())

    def _window(self, now: float) -> None:
        if not self.counting and now >= self.began:
            self.counting, self.count, self.began = True, 0, now
            self.cpu = time.process_time()
        elif self.counting and now >= self.end and not self.result.done():
            cpu = time.process_time() - self.cpu
            self.result.set_result(SingleResult(self.count, now - self.began, self.gaps, cpu))


async def read_feed(ws_url: str, streams: Sequence[str], seconds: float, warmup: float = 1.0) -> SingleResult:
    """One client: parse every message for ``seconds`` (after ``warmup``), checking the ids."""
    reader = _Reader(streams, seconds, warmup)
    transport, _ = await picows.ws_connect(
        lambda: reader, f"{ws_url}/ws/{streams[0]}", max_frame_size=1 << 24
    )
    try:
        return await asyncio.wait_for(reader.result, warmup + seconds + 30)
    finally:
        transport.disconnect()


def single_client(seconds: float, burst: int) -> SingleResult:
    """The gateway's capacity for one client (module docstring)."""
    with gateway_feed(burst) as ws_url:
        symbol = _first_symbol()
        return uvloop.run(read_feed(ws_url, [f"{symbol}@depth", f"{symbol}@trade"], seconds))


def _first_symbol() -> str:
    from investo.markets import load_markets

    return next(iter(load_markets(None))).lower()


def run(
    url: str | None, clients: int, rate: int, seconds: float, users: int, processes: int, burst: int = 20
) -> WsResult:
    raise_fd_limit(4 * clients + 1024)
    if url:
        many = many_clients(url, clients, rate, seconds, users, processes)
    else:
        with api_bench.local_exchange() as local:
            many = many_clients(local, clients, rate, seconds, users, processes)
    stats, orders_ok = many
    return WsResult(clients, seconds, orders_ok, stats, single_client(seconds, burst))
