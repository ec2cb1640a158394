"""`investo bench api`: signed orders over HTTP against a running `investo up`, open-loop.

For each offered rate, orders are *scheduled* at fixed intervals (``1/rate``)
for a fixed duration and sent whether or not earlier ones have been answered
(open loop). Each latency is measured from the order's scheduled time to its
answer, so a server that stalls is charged for the whole queue behind the stall
(no coordinated omission). The orders alternate buy and sell at one price near
the market so that about half of them trade, from many funded users; every one
is signed with its user's Ed25519 key as ccxt would sign it. The load generator
uses aiohttp, whose client costs a third of httpx's per request: on a 2-core
machine the generator shares the CPU with the server, and its own cost counts.

Figures per rate: offered and achieved orders/s, errors, and latency
p50/p99/p99.9/max in milliseconds.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal

import aiohttp
import httpx

from investo.bench.stats import percentile
from investo.client import InvestoClient
from investo.security.signing import API_KEY_HEADER, generate_key_pair, sign_params

MAX_IN_FLIGHT = 2_000  # beyond this the run is overloaded; later orders count as failed


@dataclass
class RateResult:
    offered: int
    sent: int
    ok: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def achieved(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        return percentile(self.latencies_ms, p)

    def line(self) -> str:
        return (
            f"offered={self.offered}/s achieved={self.achieved:.0f}/s ok={self.ok} errors={self.errors} "
            f"p50_ms={self.percentile(50):.2f} p99_ms={self.percentile(99):.2f} "
            f"p999_ms={self.percentile(99.9):.2f} max_ms={max(self.latencies_ms, default=float('nan')):.2f}"
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def local_exchange() -> Iterator[str]:
    """Start `investo up` in a subprocess on a free port with a temporary data dir."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="investo-bench-") as data:
        cmd = [sys.executable, "-m", "investo.cli", "up", "--port", str(port), "--data-dir", data,
               "--rate-limit", "0", "--order-limit", "0", "--no-bots"]  # fmt: skip
        process = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy()
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, process)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


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
    client: InvestoClient


async def make_traders(url: str, count: int) -> list[Trader]:
    traders = []
    for i in range(count):
        key = generate_key_pair()[0]
        client = InvestoClient(url, key)
        await client.register(f"bench{os.getpid()}x{i}x{time.monotonic_ns() % 10**9}")
        await client.claim_demo_funds()
        assert client.api_key is not None
        traders.append(Trader(client.api_key, client))
    return traders


async def run_rate(
    http: aiohttp.ClientSession, traders: Sequence[Trader], symbol: str, price: str, rate: int, seconds: float
) -> RateResult:
    """Offer ``rate`` orders per second for ``seconds``; measure from each scheduled time."""
    total = int(rate * seconds)
    latencies: list[float] = []
    counts = {"ok": 0, "errors": 0}
    in_flight = 0
    start = time.perf_counter() + 0.05

    async def send(i: int, scheduled: float) -> None:
        nonlocal in_flight
        trader = traders[i % len(traders)]
        side = "BUY" if (i // len(traders)) % 2 == 0 else "SELL"
        params: dict[str, str | int] = {
            "symbol": symbol, "side": side, "type": "LIMIT", "timeInForce": "GTC", "quantity": "1",
            "price": price, "newOrderRespType": "ACK", "timestamp": int(time.time() * 1000),
            "recvWindow": 60_000,
        }  # fmt: skip
        assert trader.client.private_key is not None
        body = sign_params(params, trader.client.private_key)
        headers = {API_KEY_HEADER: trader.api_key, "Content-Type": "application/x-www-form-urlencoded"}
        try:
            async with http.post("/api/v3/order", data=body, headers=headers) as response:
                await response.read()
                ok = response.status == 200
        except aiohttp.ClientError:
            ok = False
        latencies.append((time.perf_counter() - scheduled) * 1000)
        counts["ok" if ok else "errors"] += 1
        in_flight -= 1

    tasks = []
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if in_flight >= MAX_IN_FLIGHT:
            counts["errors"] += 1
            continue
        in_flight += 1
        tasks.append(asyncio.create_task(send(i, scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    return RateResult(rate, total, counts["ok"], counts["errors"], elapsed, latencies)


async def bench(
    url: str, rates: Sequence[int], seconds: float, users: int, connections: int
) -> list[RateResult]:
    traders = await make_traders(url, users)
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as http:
        async with http.get("/api/v3/exchangeInfo") as response:
            info = (await response.json())["symbols"][0]
        symbol = info["symbol"]
        tick = info["filters"][0]["tickSize"]
        async with http.get("/api/v3/ticker/price", params={"symbol": symbol}) as response:
            last = (await response.json())["price"]
        price = _on_tick(last if Decimal(last) else "100", tick)
        await run_rate(http, traders, symbol, price, min(rates), 1.0)  # warm up
        results = []
        for rate in rates:
            results.append(await run_rate(http, traders, symbol, price, rate, seconds))
    for trader in traders:
        await trader.client.close()
    return results


def _on_tick(price: str, tick: str) -> str:
    """``price`` as a decimal string that is a multiple of ``tick`` (exact, no float)."""
    step = Decimal(tick)
    value = (Decimal(price) // step) * step
    return format(value.normalize(), "f") if value else tick


def run(
    url: str | None, rates: Sequence[int], seconds: float, users: int, connections: int
) -> list[RateResult]:
    if url:
        return asyncio.run(bench(url, rates, seconds, users, connections))
    with local_exchange() as local:
        return asyncio.run(bench(local, rates, seconds, users, connections))
