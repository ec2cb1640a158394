"""CPU per signed order inside a gateway, without sockets on the HTTP side: a steady figure to
compare gateway code by.

Run: ``.venv/bin/python bench/gateway_cpu.py [--orders 20000] [--concurrency 32] [--profile]``
(Redis on 127.0.0.1:6379 and Postgres as for ``investo bench cluster``; ``--redis`` and
``--postgres`` name others).

``investo bench cluster --mode http`` measures the gateways among eight other busy
processes on two cores, where one run's CPU per order moves by ±10 %. Here a fresh 1 + 1
cluster runs its engines (one ``investo engine --shards all`` process), a DB writer and one
``investo gateway`` subprocess (which registers and funds the traders); this process then
runs a second gateway, in-process, and calls its ASGI app directly with the same signed
``POST /api/v3/order`` requests ``bench api`` sends (signed ahead), ``--concurrency`` at a
time, closed loop. It prints this process's CPU (user + system, ``getrusage``) per order:
the gateway's own Python (the app, the signature check, the cluster client) and its Redis
round trips, not uvicorn's HTTP parsing and socket writes (a few tens of µs more per
request). ``--profile`` adds cProfile's top functions by own time (the last round, under
the profiler, costs about twice as much).

Steadier than the cluster bench, not steady: on a shared 2-core VM rounds of the same code
read 165–270 µs per order. Compare the medians of alternated runs (the previous code on
``PYTHONPATH``), and trust only differences of a tenth or more.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import resource
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

import uvloop

from investo.api.app import create_app
from investo.api.limits import RateLimits
from investo.bench import api_bench
from investo.bench.cluster_bench import cluster_processes, fresh_cluster
from investo.bench.cluster_http import until_ready
from investo.cluster.gateway import GatewayConfig, GatewayNode
from investo.store.migrate import upgrade_async

Message = dict[str, object]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _asgi_parts(request: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The headers (lower-case names) and body of one of ``bench api``'s raw HTTP requests."""
    head, _, body = request.partition(b"\r\n\r\n")
    headers = []
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b": ")
        headers.append((name.lower(), value))
    return headers, body


async def _one(app: object, request: bytes) -> int:
    headers, body = _asgi_parts(request)
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/api/v3/order", "raw_path": b"/api/v3/order", "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    status = 0

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])  # type: ignore[call-overload]

    await app(scope, receive, send)  # type: ignore[operator]
    return status


async def _drive(app: object, requests: Sequence[bytes], concurrency: int) -> list[int]:
    statuses: list[int] = []
    queue = iter(requests)

    async def worker() -> None:
        for request in queue:
            statuses.append(await _one(app, request))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


async def main(args: argparse.Namespace) -> None:
    async with fresh_cluster(args.redis, args.postgres, 1) as cluster:
        await upgrade_async(cluster.database_url)
        port = api_bench.free_port()
        with cluster_processes(
            cluster.cluster_url, cluster.database_url, 1, cluster.log_dir, [port], engines_together=True
        ) as processes:
            url = f"http://127.0.0.1:{port}"
            await until_ready([url], processes, cluster.log_dir)
            async with api_bench.order_load(url, args.users, connections=1, markets=2) as load:
                node = GatewayNode(GatewayConfig(cluster.cluster_url, cluster.database_url))
                app = create_app(node, RateLimits.default(0, 0))
                await node.start()
                try:
                    await _run(app, load, args)
                finally:
                    await node.stop()


async def _run(app: object, load: api_bench.OrderLoad, args: argparse.Namespace) -> None:
    now_ms = time.time_ns() // 1_000_000
    warm = [load.order_request(i, now_ms) for i in range(args.warmup)]
    load.sent = len(warm)
    await _drive(app, warm, args.concurrency)  # keys loaded, caches and pools warm
    for round_number in range(args.rounds):
        now_ms = time.time_ns() // 1_000_000
        requests = [load.order_request(load.sent + i, now_ms) for i in range(args.orders)]
        load.sent += args.orders
        profiler = cProfile.Profile() if args.profile and round_number == args.rounds - 1 else None
        began_cpu, began = _cpu_seconds(), time.perf_counter()
        if profiler:
            profiler.enable()
        statuses = await _drive(app, requests, args.concurrency)
        if profiler:
            profiler.disable()
        cpu, wall = _cpu_seconds() - began_cpu, time.perf_counter() - began
        bad = len(statuses) - statuses.count(200)
        print(
            f"round={round_number + 1} orders={args.orders} concurrency={args.concurrency} "
            f"cpu_us_per_order={cpu / args.orders * 1e6:.1f} orders_per_sec={args.orders / wall:.0f} "
            f"not_ok={bad}",
            flush=True,
        )
        if profiler:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2_000, help="orders sent before the first round")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    if not urlsplit(args.redis).scheme.startswith("redis"):
        parser.error("--redis must be a redis:// URL")
    return args


if __name__ == "__main__":
    uvloop.run(main(_parse()))
