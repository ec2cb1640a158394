"""`investo bench api`: signed orders over HTTP against a running `investo up`, open-loop.

For each offered rate, orders are *scheduled* at fixed intervals (``1/rate``)
for a fixed duration and sent whether or not earlier ones have been answered
(open loop). Each latency is measured from the order's scheduled time to its
answer, so a server that stalls is charged for the whole queue behind the stall
(no coordinated omission). The orders alternate buy and sell at one price near
the market so that about half of them trade, from many funded users; every one
is signed with its user's Ed25519 key as ccxt would sign it, with the timestamp of the
moment it is sent.

The load generator shares the machine with the server, so its own cost is taken from the
server's: it runs on uvloop, sends over keep-alive connections with
:mod:`investo.bench.http_load` (a few µs of Python per request, where aiohttp spends
~0.2 ms), and signs a rate's orders with libsodium before that rate's clock starts (each
one carries the wall-clock time it is scheduled for as its ``timestamp``, so the bytes are
those a client signing at the last moment would send; signing at send time would add
~0.05 ms of the generator's CPU per order to the machine under test).
When the bench starts the server itself it also reads the server's CPU time, and
prints the CPU each order cost the server and the load generator: a figure that
holds still on a noisy machine, where latencies do not.

Figures per rate: offered and achieved orders/s, errors, latency p50/p99/p99.9/max
in milliseconds, and CPU milliseconds per order (server, load generator).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import quote, urlsplit

import httpx
import uvloop
from cryptography.hazmat.primitives import serialization
from nacl.signing import SigningKey

from investo.bench.http_load import HttpLoadClient, HttpLoadError
from investo.bench.proc_cpu import cpu_seconds
from investo.bench.stats import percentile
from investo.client import InvestoClient
from investo.security.signing import API_KEY_HEADER, encode_params, generate_key_pair
from investo.tasks import settle_heap

MAX_IN_FLIGHT = 2_000  # beyond this the run is overloaded; later orders count as failed
MIN_SLEEP_S = 0.001  # the generator's shortest nap between sends (orders due meanwhile go together)
ANSWER_GRACE_S = 30.0  # after the last order is sent, answers still missing by then count as failed


@dataclass
class RateResult:
    offered: int
    sent: int
    ok: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    server_cpu_s: float | None = None  # CPU the server process used during the rate (if known)
    loadgen_cpu_s: float = 0.0  # CPU this process (the load generator) used during the rate
    first_error: str = ""  # what the first failed order got (status and body, or why it failed)

    @property
    def achieved(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        return percentile(self.latencies_ms, p)

    def cpu_ms_per_order(self, cpu_s: float | None) -> str:
        if cpu_s is None or not self.sent:
            return "n/a"
        return f"{cpu_s * 1000 / self.sent:.3f}"

    def line(self) -> str:
        return (
            f"offered={self.offered}/s achieved={self.achieved:.0f}/s ok={self.ok} errors={self.errors} "
            f"p50_ms={self.percentile(50):.2f} p99_ms={self.percentile(99):.2f} "
            f"p999_ms={self.percentile(99.9):.2f} max_ms={max(self.latencies_ms, default=float('nan')):.2f} "
            f"server_cpu_ms_per_order={self.cpu_ms_per_order(self.server_cpu_s)} "
            f"loadgen_cpu_ms_per_order={self.cpu_ms_per_order(self.loadgen_cpu_s)}"
            + (f" first_error={self.first_error!r}" if self.first_error else "")
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_processes(processes: Iterable[subprocess.Popen[bytes]], timeout_s: float = 10) -> None:
    """SIGTERM every process, then wait for each; one still running after ``timeout_s`` is killed."""
    processes = list(processes)
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()


@dataclass(frozen=True)
class LocalServer:
    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process so far (every thread), from /proc."""
        seconds = cpu_seconds(self.pid)
        if seconds is None:
            raise RuntimeError(f"no CPU reading for the server (pid {self.pid}): has it exited?")
        return seconds


@contextmanager
def local_server(bots: bool = False) -> Iterator[LocalServer]:
    """Start `investo up` in a subprocess on a free port with a temporary data dir."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="investo-bench-") as data:
        cmd = [sys.executable, "-m", "investo.cli", "up", "--port", str(port), "--data-dir", data,
               "--rate-limit", "0", "--order-limit", "0"] + ([] if bots else ["--no-bots"])  # fmt: skip
        process = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy()
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, process)
            yield LocalServer(url, process.pid)
        finally:
            stop_processes([process])


@contextmanager
def local_exchange(bots: bool = False) -> Iterator[str]:
    """The URL of `investo up` started here (see :func:`local_server`)."""
    with local_server(bots) as server:
        yield server.url


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode() if process.stdout else ""
            raise RuntimeError(f"investo up exited early:\n{output}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready in 30 s")


@dataclass
class Trader:
    api_key: str
    signer: SigningKey  # the user's Ed25519 key, as libsodium signs with it


async def make_traders(url: str, count: int) -> list[Trader]:
    """``count`` new users, registered and funded through the API."""
    traders = []
    for i in range(count):
        key = generate_key_pair()[0]
        async with InvestoClient(url, key) as client:
            await client.register(f"bench{os.getpid()}x{i}x{time.monotonic_ns() % 10**9}")
            await client.claim_demo_funds()
            assert client.api_key is not None
            seed = key.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
            traders.append(Trader(client.api_key, SigningKey(seed)))
    return traders


@dataclass
class OrderLoad:
    """Everything needed to place signed orders fast: connections, funded traders, prices.

    Order ``i`` goes to ``clients[i % len(clients)]`` (one client per server: several
    gateways take the orders in turn) and trades ``symbols[(i // len(clients)) % len(symbols)]``
    at that market's price (every gateway sees every market); each trader alternates buy
    and sell from one round of traders to the next, so about half the orders trade.
    """

    clients: list[HttpLoadClient]
    traders: list[Trader]
    symbols: list[str]
    prices: list[str]
    sides: tuple[str, str] = ("BUY", "SELL")
    sent: int = field(default=0)

    @property
    def http(self) -> HttpLoadClient:
        """The first server's connections."""
        return self.clients[0]

    def client(self, i: int) -> HttpLoadClient:
        """The connections order ``i`` is sent on."""
        return self.clients[i % len(self.clients)]

    def order_request(self, i: int, timestamp_ms: int) -> bytes:
        """The ``i``-th order as a complete HTTP request, signed (as ccxt signs) for ``timestamp_ms``.

        Its client order id ``bench<i>`` makes every request unique, as ccxt's do: two
        orders of one trader signed in the same millisecond would otherwise be one
        request twice, and the second refused as a replay.
        """
        trader = self.traders[i % len(self.traders)]
        market = (i // len(self.clients)) % len(self.symbols)
        params: dict[str, str | int] = {
            "symbol": self.symbols[market], "side": self.sides[(i // len(self.traders)) % 2],
            "type": "LIMIT", "timeInForce": "GTC", "quantity": "1", "price": self.prices[market],
            "newClientOrderId": f"bench{i}", "newOrderRespType": "ACK",
            "timestamp": timestamp_ms, "recvWindow": 60_000,
        }  # fmt: skip
        encoded = encode_params(params)
        signature = base64.b64encode(trader.signer.sign(encoded.encode()).signature).decode()
        body = f"{encoded}&signature={quote(signature, safe='')}".encode()
        return (
            f"POST /api/v3/order HTTP/1.1\r\nHost: {self.http.host}\r\n{API_KEY_HEADER}: {trader.api_key}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body


@asynccontextmanager
async def order_load(
    url: str | Sequence[str], users: int, connections: int = 64, markets: int = 1
) -> AsyncIterator[OrderLoad]:
    """Funded traders and open connections to ``url`` (or to each of several), trading the first
    ``markets`` markets near their last prices; traders register and are funded on the first URL."""
    urls = [url] if isinstance(url, str) else list(url)
    traders = await make_traders(urls[0], users)
    symbols, prices = [], []
    async with httpx.AsyncClient(base_url=urls[0], timeout=30) as http:
        for info in (await http.get("/api/v3/exchangeInfo")).json()["symbols"][:markets]:
            last = (await http.get("/api/v3/ticker/price", params={"symbol": info["symbol"]})).json()["price"]
            symbols.append(info["symbol"])
            prices.append(_on_tick(last if Decimal(last) else "100", info["filters"][0]["tickSize"]))
    clients = []
    try:
        for each in urls:
            where = urlsplit(each)
            clients.append(HttpLoadClient(where.hostname or "127.0.0.1", where.port or 80, connections))
            await clients[-1].open()
        yield OrderLoad(clients, traders, symbols, prices)
    finally:
        for client in clients:
            client.close()


async def run_rate(
    load: OrderLoad,
    rate: int,
    seconds: float,
    server: LocalServer | None = None,
    on_signed: Callable[[], None] = lambda: None,
) -> RateResult:
    """Offer ``rate`` orders per second for ``seconds``; measure from each scheduled time.

    The orders are signed first (:func:`presign`); ``on_signed`` is called then, so a
    caller metering CPU can leave the signing out as this function does for ``server``.

    The generator is the measuring instrument, so its own pauses and its own CPU would show
    as the server's latency: its heap is frozen first (a full collection over the client
    libraries' objects took 50-110 ms and came every few seconds at 2,000/s), each wake-up
    sends every order that is due, and answers are counted from the connections' read
    callbacks (no task or future per order).
    """
    settle_heap()
    total = int(rate * seconds)
    start, requests = presign(load, total, rate)
    latencies: list[float] = []
    counts = {"ok": 0, "errors": 0}
    first_error: list[str] = []
    in_flight = 0
    sending = True
    all_answered = asyncio.Event()
    on_signed()
    server_cpu = server.cpu_seconds() if server else 0.0
    own_cpu = _own_cpu_seconds()

    def on_answer(scheduled: float, status: int, body: bytes, error: HttpLoadError | None) -> None:
        nonlocal in_flight
        latencies.append((time.perf_counter() - scheduled) * 1000)
        ok = error is None and status == 200
        if not ok and not first_error:
            text = body[:200].decode(errors="replace")
            first_error.append(str(error) if error else f"HTTP {status}: {text}")
        counts["ok" if ok else "errors"] += 1
        in_flight -= 1
        if not in_flight and not sending:
            all_answered.set()

    i = 0
    while i < total:
        now = time.perf_counter()
        while i < total and (scheduled := start + i / rate) <= now:  # every order due by now
            if in_flight >= MAX_IN_FLIGHT:
                counts["errors"] += 1
                if not first_error:
                    first_error.append(f"overloaded: {MAX_IN_FLIGHT} orders in flight, later ones not sent")
            else:
                in_flight += 1
                load.client(load.sent + i).request(requests[i], functools.partial(on_answer, scheduled))
            i += 1
        if i < total:
            # at least 1 ms: uvloop rounds a shorter timer to 0, which would spin until the next order
            await asyncio.sleep(max(start + i / rate - time.perf_counter(), MIN_SLEEP_S))
    sending = False
    if in_flight:
        try:
            await asyncio.wait_for(all_answered.wait(), ANSWER_GRACE_S)
        except TimeoutError:  # never answered: a failure to report, not a reason to hang
            counts["errors"] += in_flight
            if not first_error:
                first_error.append(f"{in_flight} orders got no answer within {ANSWER_GRACE_S:g} s")
            for client in load.clients:
                client.abandon()
    elapsed = time.perf_counter() - start
    load.sent += total
    result = RateResult(rate, total, counts["ok"], counts["errors"], elapsed, latencies)
    result.loadgen_cpu_s = _own_cpu_seconds() - own_cpu
    result.first_error = first_error[0] if first_error else ""
    if server:
        result.server_cpu_s = server.cpu_seconds() - server_cpu
    return result


def presign(load: OrderLoad, total: int, rate: int) -> tuple[float, list[bytes]]:
    """A rate's ``total`` orders, signed ahead, and the ``perf_counter()`` time the first is due.

    Order ``k`` is due ``k / rate`` s after that start and is signed with the wall-clock
    time it is due as its ``timestamp``: the bytes a client signing at the last moment would
    send. The start is set far enough ahead for the signing to end (timed on one order); if
    the signing still overruns, the start moves to its end and the timestamps lie a little
    in the past (within the orders' 60 s ``recvWindow``).
    """
    began = time.perf_counter()
    load.order_request(load.sent, 0)  # times the signing of one order
    lead_s = 0.05 + 2 * (time.perf_counter() - began) * total
    start = time.perf_counter() + lead_s
    start_ms = time.time_ns() / 1e6 + lead_s * 1000
    requests = [load.order_request(load.sent + k, int(start_ms + k * 1000 / rate)) for k in range(total)]
    return max(start, time.perf_counter() + 0.01), requests


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def bench(
    url: str, rates: Sequence[int], seconds: float, users: int, connections: int,
    server: LocalServer | None = None,
) -> list[RateResult]:  # fmt: skip
    async with order_load(url, users, connections) as load:
        await run_rate(load, min(rates), 1.0)  # warm up
        return [await run_rate(load, rate, seconds, server) for rate in rates]


def _on_tick(price: str, tick: str) -> str:
    """``price`` as a decimal string that is a multiple of ``tick`` (exact, no float)."""
    step = Decimal(tick)
    value = (Decimal(price) // step) * step
    return format(value.normalize(), "f") if value else tick


def run(
    url: str | None, rates: Sequence[int], seconds: float, users: int, connections: int
) -> list[RateResult]:
    if url:
        return uvloop.run(bench(url, rates, seconds, users, connections))
    with local_server() as server:
        return uvloop.run(bench(server.url, rates, seconds, users, connections, server))
