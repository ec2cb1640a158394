"""`investo bench cluster --mode http`: signed orders over HTTP through two gateways, end to end.

For each matching-shard count (1, 2, …) the bench makes a fresh cluster as the pipeline
bench does (:func:`investo.bench.cluster_bench.fresh_cluster`: a new Redis namespace, a
new Postgres database, two markets dealt to the matching shards, as many accounts
shards), migrates the database, and starts one ``investo engine`` per shard and role,
one ``investo dbwriter`` and two ``investo gateway`` processes on free loopback ports
(rate limits off); with ``engines_together`` one ``investo engine --shards all`` process
hosts every shard instead. It registers ``users`` traders with Ed25519 keys on the first
gateway and funds them (demo funds); the second gateway loads their keys from Postgres
on first use.

The load is the API bench's (:mod:`investo.bench.api_bench`, :func:`order_load` and
:func:`run_rate`): signed LIMIT ``POST /api/v3/order`` requests, open loop at each
offered rate, order ``i`` to gateway ``i % 2``, both markets in turn, about half of them
trading; each latency runs from the order's *scheduled* time to its answer (no
coordinated omission). The answer is the gateway's ACK, which comes once the accounts
and matching shards have both taken the order.

While a rate runs the bench reads, every 100 ms, how many output entries the engines
have written to Redis and how many of them the DB writer has committed to Postgres: the
difference is the DB writer's lag (the largest seen is printed, and the one at the end
of the rate). It then waits until Postgres holds everything and prints that catch-up
time. CPU milliseconds per order are read from ``/proc`` for every process (each
gateway, engine, the DB writer, the bench, the database's Postgres backends; Redis and
Postgres's own helpers marked ``shared``) over each rate including the catch-up, per
order that went out: past 2,000 orders in flight a rate is overloaded, and the orders it
does not send count as errors (``sent`` is what was offered).

Costs: the load generator (the bench process, on uvloop, each rate's orders signed before
its clock starts: see :mod:`investo.bench.api_bench`) shares the machine with the cluster;
its CPU per order is printed with the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvloop
from sqlalchemy.engine import make_url

from investo.bench import api_bench
from investo.bench.cluster_bench import (
    MARKETS,
    Watch,
    cluster_processes,
    fresh_cluster,
    meter_processes,
    together_in_one_process,
    until_committed,
)
from investo.bench.proc_cpu import CpuMeter
from investo.store.migrate import upgrade_async
from investo.tasks import cancel_and_wait

GATEWAYS = 2
READY_TIMEOUT_S = 60.0
SAMPLE_S = 0.1  # how often the DB writer's lag is read while a rate runs

Step = Callable[[str], None]
"""Told what the bench starts doing next (a progress display); may be a no-op."""


@dataclass
class HttpRate:
    """One offered rate on one cluster: the load's result and the cluster's cost."""

    shards: int
    result: api_bench.RateResult
    writer_behind_max: int  # output entries in Redis not yet in Postgres, the most seen
    writer_behind_end: int  # the same when the rate's last order was answered
    writer_catchup_s: float  # from the last answer until Postgres held everything
    cpu_ms_per_order: dict[str, float] = field(default_factory=dict)  # per order that went out

    def lines(self) -> list[str]:
        r = self.result
        head = f"shards={self.shards} offered={r.offered}/s"
        cpu = " ".join(f"{label}={ms:.3f}" for label, ms in self.cpu_ms_per_order.items())
        return [
            f"{head} achieved={r.achieved:.0f}/s sent={r.sent} ok={r.ok} errors={r.errors} "
            f"p50_ms={r.percentile(50):.2f} p99_ms={r.percentile(99):.2f} "
            f"p999_ms={r.percentile(99.9):.2f} max_ms={max(r.latencies_ms, default=float('nan')):.2f}"
            + (f" first_error={r.first_error!r}" if r.first_error else ""),
            f"{head} db_writer_behind_entries_max={self.writer_behind_max} "
            f"at_end={self.writer_behind_end} catchup_s={self.writer_catchup_s:.2f}",
            f"{head} cpu_ms_per_order: {cpu}",
        ]


@dataclass
class HttpRun:
    shards: int
    rates: list[HttpRate]
    load_average: float  # the machine's 1-minute load average when the run began
    namespace: str = ""  # the cluster's Redis namespace (its processes' logs are in $TMPDIR/<namespace>)
    database: str = ""  # the cluster's Postgres database (dropped at the end, as the namespace)
    engines_together: bool = False  # every shard in one engine process (else one process per shard)

    def lines(self) -> list[str]:
        engines = "together" if self.engines_together else "per-shard"
        head = (
            f"shards={self.shards} gateways={GATEWAYS} engines={engines} load_average={self.load_average:.2f}"
        )
        return [head] + [line for rate in self.rates for line in rate.lines()]


async def run_one(
    redis_url: str,
    admin_url: str,
    shards: int,
    rates: Sequence[int],
    seconds: float,
    users: int,
    connections: int,
    step: Step = lambda _: None,
    engines_together: bool = False,
) -> HttpRun:
    """One fresh cluster of ``shards`` shards a role, every rate in turn (after a 1 s warm-up)."""
    step(f"shards={shards}: starting the cluster")
    async with fresh_cluster(redis_url, admin_url, shards) as cluster:
        await upgrade_async(cluster.database_url)  # once here, not raced by every process
        ports = [api_bench.free_port() for _ in range(GATEWAYS)]
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        watch = await Watch.open(cluster.admin, cluster.topology, cluster.database_url)
        try:
            with cluster_processes(
                cluster.cluster_url, cluster.database_url, shards, cluster.log_dir, ports, engines_together
            ) as procs:
                await until_ready(urls, procs, cluster.log_dir)
                step(f"shards={shards}: registering {users} users")
                async with api_bench.order_load(urls, users, connections, markets=len(MARKETS)) as load:
                    step(f"shards={shards}: warming up")
                    await api_bench.run_rate(load, min(rates), 1.0)
                    await until_committed(watch)
                    meter = CpuMeter()
                    await meter_processes(meter, procs, watch)
                    load_average = os.getloadavg()[0]
                    results = []
                    for rate in rates:
                        step(f"shards={shards}: {rate} orders/s for {seconds:g} s")
                        results.append(await _one_rate(load, rate, seconds, shards, watch, meter))
        finally:
            await watch.close()
    database = make_url(cluster.database_url).database or ""
    return HttpRun(shards, results, load_average, cluster.topology.namespace, database, engines_together)


async def _one_rate(
    load: api_bench.OrderLoad, rate: int, seconds: float, shards: int, watch: Watch, meter: CpuMeter
) -> HttpRate:
    behind_max = 0

    async def sample() -> None:
        nonlocal behind_max
        while True:
            outputs, committed = await watch.written()
            behind_max = max(behind_max, outputs - committed)
            await asyncio.sleep(SAMPLE_S)

    sampler = asyncio.create_task(sample())
    try:
        result = await api_bench.run_rate(load, rate, seconds, on_signed=meter.start)
    finally:
        await cancel_and_wait(sampler)  # re-cancels: redis-py may swallow a cancel mid-command
    answered = time.perf_counter()
    outputs, committed = await watch.written()
    await until_committed(watch)
    catchup = time.perf_counter() - answered
    meter.add("postgres", await watch.backends())  # the gateways' pools may have grown
    meter.stop()
    reached = len(result.latencies_ms)  # orders that went out (an overloaded run sends fewer)
    cpu = {label: ms / 1000 for label, ms in meter.per_thousand(reached).items()}
    behind_end = outputs - committed
    return HttpRate(shards, result, max(behind_max, behind_end), behind_end, catchup, cpu)


async def until_ready(urls: Sequence[str], procs: dict[str, subprocess.Popen[bytes]], log_dir: Path) -> None:
    """Wait until every gateway answers /health with 200 (each one's engines are up)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with httpx.AsyncClient(timeout=1) as http:
        for url in urls:
            while True:
                for label, process in procs.items():
                    if process.poll() is not None:
                        raise RuntimeError(f"{label} exited early; see {log_dir}/{label}.log")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{url}/health")).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url} not ready in {READY_TIMEOUT_S:.0f} s; see {log_dir}")
                await asyncio.sleep(0.1)


def run(
    redis_url: str,
    admin_url: str,
    shard_counts: Sequence[int],
    rates: Sequence[int],
    seconds: float,
    users: int = 20,
    connections: int = 64,
    step: Step = lambda _: None,
    repeat: int = 1,
    engines: str = "per-shard",
) -> Iterator[HttpRun]:
    """Each shard count's run in turn (see the module docstring), the whole round ``repeat`` times;
    ``engines`` is a layout of :func:`~investo.bench.cluster_bench.together_in_one_process`.

    Rounds, not runs of one count back to back: a host that slows down part-way through
    slows every count alike.
    """
    if not rates or min(rates) <= 0:
        raise ValueError("give at least one offered rate, each above 0")
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    for _ in range(repeat):
        for shards in shard_counts:
            together = together_in_one_process(engines, shards)
            yield uvloop.run(
                run_one(redis_url, admin_url, shards, rates, seconds, users, connections, step, together)
            )


def summary_lines(runs: Sequence[HttpRun]) -> list[str]:
    """Per shard count and offered rate over several runs: each run's p99, and the median p50 and p99.

    One run's p99 on a busy 2-core machine moves by a factor of two or more from one run to
    the next (a run is a few thousand orders; its p99 is the worst 1 %), so a figure to quote
    needs several runs: all of them are listed, worst last.
    """
    by_rate: dict[tuple[int, int], list[api_bench.RateResult]] = {}
    for one in runs:
        for rate in one.rates:
            by_rate.setdefault((one.shards, rate.result.offered), []).append(rate.result)
    lines = []
    for (shards, offered), results in sorted(by_rate.items()):
        p99s = sorted(result.percentile(99) for result in results)
        p50s = [result.percentile(50) for result in results]
        lines.append(
            f"shards={shards} offered={offered}/s runs={len(results)} "
            f"p50_ms_median={statistics.median(p50s):.2f} p99_ms_median={statistics.median(p99s):.2f} "
            f"p99_ms_each={','.join(f'{p99:.1f}' for p99 in p99s)} "
            f"errors={sum(result.errors for result in results)}"
        )
    return lines
