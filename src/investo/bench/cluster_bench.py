"""`investo bench cluster`: the distributed pipeline alone, open-loop at fixed offered rates.

For each matching-shard count (1, 2, …) the bench makes a fresh cluster: a new Redis
namespace, a new Postgres database, ``investo cluster init`` with two markets dealt to
the matching shards (and as many accounts shards), one ``investo engine`` process
per shard and one ``investo dbwriter``. The shared order flow (../shared/bench) is
split over the two markets by order id and over 1,000 funded users.

Commands are appended straight to the shards' input streams (no HTTP), scheduled at
fixed intervals for each offered rate whether or not earlier ones were answered, in
ticks of 5 ms (one append per shard per tick). A command's latency runs from its
scheduled time to its answer on the bench's reply channel (accounts → matching →
answer, both engines and three stream hops). After the last rate the bench waits
until the DB writer has committed every output entry to Postgres: that wait is the
DB writer's lag, and orders/s *committed* is counted up to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import redis.asyncio as aioredis
from sqlalchemy.engine import make_url

from investo.bench.api_bench import stop_processes
from investo.bench.flow import FlowLine
from investo.bench.proc_cpu import CpuMeter
from investo.bench.stats import percentile
from investo.cluster import topology as topo
from investo.cluster.records import ENCODER, Envelope
from investo.core.messages import (
    CancelOrder,
    Command,
    Deposit,
    OrderType,
    PlaceOrder,
    Side,
    StpMode,
    TimeInForce,
)
from investo.log.redis import RedisLog
from investo.tasks import cancel_and_wait

USERS = 1_000
FUNDS = 10**15
MARKETS = ("BENCHAINR", "BENCHBINR")
MARKETS_TOML = "[assets.INR]\ndecimals = 2\n[assets.BA]\ndecimals = 0\n[assets.BB]\ndecimals = 0\n" + "".join(
    f"""
[markets.{symbol}]
base = "{base}"
quote = "INR"
tick_size = "0.01"
lot_size = "1"
max_price = "100000"
max_qty = "1000000000"
maker_fee_bps = 10
taker_fee_bps = 20
"""
    for symbol, base in zip(MARKETS, ("BA", "BB"), strict=True)
)
TICK_S = 0.005


@dataclass
class RateResult:
    shards: int
    offered: int
    sent: int
    answered: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)

    def percentile(self, p: float) -> float:
        return percentile(self.latencies_ms, p)

    def line(self) -> str:
        return (
            f"shards={self.shards} offered={self.offered}/s achieved={self.answered / self.seconds:.0f}/s "
            f"sent={self.sent} answered={self.answered} "
            f"p50_ms={self.percentile(50):.1f} p99_ms={self.percentile(99):.1f} "
            f"max_ms={self.percentile(100):.1f}"
        )


@dataclass
class ClusterRun:
    shards: int
    rates: list[RateResult]
    committed: int  # commands whose every output entry is in Postgres
    seconds_to_commit: float  # from the first command to the last commit
    writer_lag_s: float  # from the last answer to the last commit
    load_average: float  # the machine's 1-minute load average when the run began
    cpu_ms_per_1k: dict[str, float]  # CPU milliseconds per 1,000 commands, per process group
    writer_stats: list[str]  # the DB writer's own account of each stream (funding included)

    def lines(self) -> list[str]:
        cpu = " ".join(f"{label}={ms:.0f}" for label, ms in self.cpu_ms_per_1k.items())
        return [r.line() for r in self.rates] + [
            f"shards={self.shards} committed_to_postgres={self.committed} "
            f"committed_per_sec={self.committed / self.seconds_to_commit:.0f} "
            f"db_writer_lag_after_last_answer_s={self.writer_lag_s:.2f} "
            f"load_average={self.load_average:.2f}",
            f"shards={self.shards} cpu_ms_per_1000_commands: {cpu}",
            *(f"shards={self.shards} {line}" for line in self.writer_stats),
        ]


def flow_commands(flow: Sequence[FlowLine]) -> list[Command]:
    """The flow as commands of 1,000 users on two markets (market by order id); cancels by client id."""
    commands: list[Command] = []
    for line in flow:
        user = line.id % USERS + 1
        market = MARKETS[line.id % len(MARKETS)]
        client_id = f"o{line.id}"
        side = Side.BUY if line.buy else Side.SELL
        if line.op == "C":
            commands.append(CancelOrder(0, user, market, client_order_id=client_id))
        elif line.op == "L":
            commands.append(
                PlaceOrder(0, user, market, side, OrderType.LIMIT, TimeInForce.GTC, line.price, line.qty,
                           client_order_id=client_id, stp=StpMode.NONE)
            )  # fmt: skip
        else:
            commands.append(
                PlaceOrder(0, user, market, side, OrderType.MARKET, TimeInForce.IOC, 0, line.qty,
                           client_order_id=client_id, stp=StpMode.NONE)
            )  # fmt: skip
    return commands


def deposits() -> list[Command]:
    return [Deposit(0, user, asset, FUNDS) for user in range(1, USERS + 1) for asset in ("INR", "BA", "BB")]


# ---------------------------------------------------------------------- processes


ENGINE_LAYOUTS = ("per-shard", "together", "auto")


def together_in_one_process(layout: str, shards: int, cores: int | None = None) -> bool:
    """Whether a cluster of ``shards`` matching and ``shards`` accounts shards hosts them in one
    engine process (``investo engine --shards all``) rather than one process per shard.

    ``per-shard`` and ``together`` say which; ``auto`` hosts them together unless the machine
    has more ``cores`` (by default ``os.cpu_count()``) than their own processes would be (two
    per shard count), so that the gateways, Redis and the DB writer still find a core. On 2
    cores at 2,000 orders/s (BENCHMARKS.md) one process answered with a lower p99 for
    2 + 2 (about half) and for 1 + 1 (median 15.4 vs 17.4 ms over seven alternated runs),
    with less CPU per order.
    """
    if layout not in ENGINE_LAYOUTS:
        raise ValueError(f"engine layout {layout!r}: use one of {', '.join(ENGINE_LAYOUTS)}")
    if layout == "auto":
        return (cores or os.cpu_count() or 1) <= 2 * shards
    return layout == "together"


@contextlib.contextmanager
def cluster_processes(
    redis_url: str,
    database_url: str,
    shards: int,
    log_dir: Path,
    gateway_ports: Sequence[int] = (),
    engines_together: bool = False,
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Start one engine per shard (or, ``engines_together``, one ``investo engine --shards all``
    process hosting every shard), a DB writer and a gateway on each of ``gateway_ports`` (no rate
    limits); yield them by label; terminate them at exit. Output goes to ``log_dir``."""
    base = [sys.executable, "-m", "investo.cli"]
    if engines_together:
        commands = {"engines": [*base, "engine", "--shards", "all", "--redis", redis_url]}
    else:
        commands = {
            f"{role}-{shard}": [*base, "engine", "--role", role, "--shard", str(shard), "--redis", redis_url]
            for role in topo.ROLES
            for shard in range(shards)
        }
    commands["dbwriter"] = [*base, "dbwriter", "--redis", redis_url, "--database", database_url]
    for number, port in enumerate(gateway_ports):
        commands[f"gateway-{number}"] = [
            *base, "gateway", "--redis", redis_url, "--database", database_url,
            "--port", str(port), "--rate-limit", "0", "--order-limit", "0",
        ]  # fmt: skip
    started: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for label, command in commands.items():
            out = (log_dir / f"{label}.log").open("wb")
            started[label] = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy()
            )
        yield started
    finally:
        stop_processes(started.values(), timeout_s=30)


async def _fresh_database(admin_url: str) -> str:
    import asyncpg

    name = f"investo_bench_{secrets.token_hex(6)}"
    dsn = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


async def _drop_database(admin_url: str, database_url: str) -> None:
    import asyncpg

    name = make_url(database_url).database
    dsn = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


# ---------------------------------------------------------------------- driving


@dataclass(frozen=True)
class Tick:
    """Commands sent together: ``batches`` per shard input, numbered ``corrs``, at tick ``number``."""

    number: int
    corrs: range
    batches: dict[tuple[topo.Role, int], list[bytes]]


_CORRELATIONS = msgspec.msgpack.Decoder(list[tuple[int, msgspec.Raw]])
"""A reply message's correlation numbers, leaving the events undecoded (the bench needs none)."""


class Driver:
    """Appends commands to the shards' inputs and times their answers.

    Commands are encoded before a rate's clock starts (:meth:`plan`), so the load
    generator's cost while it runs is one append per shard input per tick and the
    answers' correlation numbers.
    """

    def __init__(self, server_url: str, topology: topo.Topology) -> None:
        self.topology = topology
        self.client: aioredis.Redis = aioredis.Redis.from_url(server_url)
        self.channel = topology.reply_channel(f"bench-{secrets.token_hex(4)}")
        self.logs = {
            (role, shard): RedisLog(topo.log_url(server_url, topology.input_prefix(role, shard)))
            for role, shard in topology.every_output()
        }
        self.sent_at: dict[int, float] = {}
        self.latencies_ms: list[float] = []
        self.answered = 0
        self.last_answer = 0.0
        self._corr = 0

    def _target(self, command: Command) -> tuple[topo.Role, int]:
        if isinstance(command, CancelOrder):
            shard = self.topology.matching_shard(command.market)
            assert shard is not None
            return "matching", shard
        assert isinstance(command, PlaceOrder | Deposit)
        return "accounts", self.topology.accounts_shard(command.user)

    def encode(self, commands: Sequence[Command], ts: int, number: int = 0) -> Tick:
        """Stamp, number and encode ``commands`` as one tick's appends (one batch per shard input)."""
        batches: dict[tuple[topo.Role, int], list[bytes]] = {}
        first = self._corr + 1
        for command in commands:
            self._corr += 1
            envelope = Envelope(msgspec.structs.replace(command, ts=ts), self.channel, self._corr)
            batches.setdefault(self._target(command), []).append(ENCODER.encode(envelope))
        return Tick(number, range(first, self._corr + 1), batches)

    def plan(self, commands: Sequence[Command], rate: int, ts: int) -> list[Tick]:
        """The ticks that send ``commands`` at ``rate``, encoded ahead (``ts``: the first tick's time)."""
        ticks = []
        sent = number = 0
        while sent < len(commands):
            number += 1
            upto = min(len(commands), int(rate * number * TICK_S))
            if upto > sent:
                ticks.append(self.encode(commands[sent:upto], ts + int(number * TICK_S * 1000), number))
                sent = upto
        return ticks

    async def send(self, tick: Tick, scheduled: float) -> None:
        """Append a tick's batches, one per shard input, concurrently; time them from ``scheduled``."""
        for corr in tick.corrs:
            self.sent_at[corr] = scheduled
        await asyncio.gather(*(self.logs[target].append(batch) for target, batch in tick.batches.items()))

    async def listen(self, ready: asyncio.Event) -> None:
        pubsub = self.client.pubsub()
        await pubsub.subscribe(self.channel)
        ready.set()
        try:
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None:
                    continue
                now = time.perf_counter()
                for corr, _ in _CORRELATIONS.decode(message["data"]):
                    scheduled = self.sent_at.pop(corr, None)
                    if scheduled is not None:
                        self.latencies_ms.append((now - scheduled) * 1000)
                        self.answered += 1
                        self.last_answer = now
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        for log in self.logs.values():
            await log.close()
        await self.client.aclose()


def plan_rates(
    driver: Driver, commands: Sequence[Command], rates: Sequence[int], seconds: float
) -> list[tuple[int, list[Tick]]]:
    """Every rate's ticks, encoded before any clock starts: ``rate × seconds`` commands each, in turn.

    Commands are stamped as if each rate followed the one before it at once.
    """
    plans = []
    offset = 0
    ts = time.time_ns() // 1_000_000
    for rate in rates:
        chunk = commands[offset : offset + int(rate * seconds)]
        offset += len(chunk)
        plans.append((rate, driver.plan(chunk, rate, ts)))
        ts += int(seconds * 1000)
    return plans


async def _open_loop(
    driver: Driver, ticks: Sequence[Tick], rate: int, seconds: float, shards: int
) -> RateResult:
    """Send planned ticks on their schedule; then wait (at most 30 s) for every answer."""
    start = time.perf_counter()
    answered_before = driver.answered
    first_latency = len(driver.latencies_ms)
    for tick in ticks:
        due = start + tick.number * TICK_S
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        # every command of this tick is scheduled at its own instant within the tick
        await driver.send(tick, due - TICK_S / 2)
    sent = sum(len(tick.corrs) for tick in ticks)
    deadline = time.perf_counter() + 30
    while driver.sent_at and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    elapsed = max(driver.last_answer, start + seconds) - start
    return RateResult(
        shards, rate, sent, driver.answered - answered_before, elapsed, driver.latencies_ms[first_latency:]
    )


class Watch:
    """Reads the bench's progress on one Redis and one Postgres connection (opened once)."""

    def __init__(self, client: aioredis.Redis, topology: topo.Topology, database: Any) -> None:
        self.client = client
        self.topology = topology
        self.database = database  # an asyncpg connection to the bench's database

    @classmethod
    async def open(cls, client: aioredis.Redis, topology: topo.Topology, database_url: str) -> Watch:
        import asyncpg

        return cls(client, topology, await asyncpg.connect(_asyncpg_dsn(database_url)))

    async def written(self) -> tuple[int, int]:
        """(output entries in Redis, of which committed to SQL), over every output stream."""
        import asyncpg

        outputs = 0
        for role, shard in self.topology.every_output():
            outputs += int(await self.client.get(f"{self.topology.output_prefix(role, shard)}:next") or 0)
        try:
            rows = await self.database.fetch("SELECT log_offset FROM writer_progress")
        except asyncpg.UndefinedTableError:  # the writer has not migrated yet
            rows = []
        return outputs, sum(int(row[0]) // topo.STREAMS_PER_OFFSET for row in rows)

    async def backends(self) -> list[int]:
        """The Postgres server processes serving the bench's database (this connection's excepted)."""
        rows = await self.database.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return [int(row[0]) for row in rows]

    async def postgres_helpers(self) -> list[int]:
        """Postgres's WAL writer, checkpointer and background writer (shared by every database)."""
        rows = await self.database.fetch(
            "SELECT pid FROM pg_stat_activity "
            "WHERE backend_type IN ('walwriter', 'checkpointer', 'background writer')"
        )
        return [int(row[0]) for row in rows]

    async def redis_pid(self) -> int | None:
        """The Redis server's pid if it runs on this machine."""
        pid = int((await self.client.info("server"))["process_id"])
        try:
            with open(f"/proc/{pid}/comm") as handle:
                return pid if handle.read().startswith("redis") else None
        except OSError:
            return None

    async def close(self) -> None:
        await self.database.close()


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass
class FreshCluster:
    """A bench's own cluster: a new Redis namespace and a new Postgres database (:func:`fresh_cluster`)."""

    server_url: str  # the Redis server
    cluster_url: str  # the Redis server with ?prefix=<namespace>: what every process takes
    database_url: str
    topology: topo.Topology
    admin: aioredis.Redis  # one connection to the Redis server, for the bench's own reads
    log_dir: Path  # each process's output, <label>.log


@contextlib.asynccontextmanager
async def fresh_cluster(redis_url: str, admin_url: str, shards: int) -> AsyncIterator[FreshCluster]:
    """A new namespace with :data:`MARKETS` dealt to ``shards`` matching shards (as many accounts
    shards) and a new database, both deleted at exit; no process is started here."""
    server_url, _ = topo.split_url(redis_url)
    namespace = f"investo-bench-{secrets.token_hex(4)}"
    database_url = await _fresh_database(admin_url)
    admin = aioredis.Redis.from_url(server_url)
    try:
        matching = {symbol: index % shards for index, symbol in enumerate(MARKETS)}
        topology = await topo.store(admin, topo.Topology(namespace, MARKETS_TOML, matching, shards))
        log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / namespace
        log_dir.mkdir(parents=True, exist_ok=True)
        yield FreshCluster(
            server_url, topo.log_url(server_url, namespace), database_url, topology, admin, log_dir
        )
    finally:
        keys = [key async for key in admin.scan_iter(match=f"{namespace}:*", count=1000)]
        for start in range(0, len(keys), 500):
            await admin.delete(*keys[start : start + 500])
        await admin.aclose()
        await _drop_database(admin_url, database_url)


async def run_one(
    redis_url: str,
    admin_url: str,
    shards: int,
    commands: Sequence[Command],
    rates: Sequence[int],
    seconds: float,
    engines_together: bool = False,
) -> ClusterRun:
    async with fresh_cluster(redis_url, admin_url, shards) as cluster:
        topology = cluster.topology
        driver = Driver(cluster.server_url, topology)
        watch = await Watch.open(cluster.admin, topology, cluster.database_url)
        meter = CpuMeter()
        try:
            with cluster_processes(
                cluster.cluster_url, cluster.database_url, shards, cluster.log_dir,
                engines_together=engines_together,
            ) as processes:  # fmt: skip
                ready = asyncio.Event()
                listener = asyncio.create_task(driver.listen(ready))
                await ready.wait()
                await _fund(driver)
                await until_committed(watch)
                await meter_processes(meter, processes, watch)
                load = os.getloadavg()[0]
                plans = plan_rates(driver, commands, rates, seconds)
                meter.start()
                results = []
                first = time.perf_counter()  # the clock starts with nothing left to encode
                for rate, ticks in plans:
                    results.append(await _open_loop(driver, ticks, rate, seconds, shards))
                offset = sum(result.sent for result in results)
                last_answer = driver.last_answer
                await until_committed(watch)
                done = time.perf_counter()
                meter.add("postgres", await watch.backends())
                meter.stop()
                await cancel_and_wait(listener)
            writer_lines = _writer_stats(cluster.log_dir / "dbwriter.log")
        finally:
            await driver.close()
            await watch.close()
    return ClusterRun(
        shards,
        results,
        offset,
        done - first,
        done - last_answer,
        load,
        meter.per_thousand(offset),
        writer_lines,
    )


def _writer_stats(path: Path) -> list[str]:
    """What the DB writer said at exit of each stream it wrote (entries, transactions, rows)."""
    return [line.strip() for line in path.read_text().splitlines() if " transactions, " in line]


async def _fund(driver: Driver) -> None:
    """Deposit every user's funds and wait for the answers."""
    funding = deposits()
    for start in range(0, len(funding), 500):
        tick = driver.encode(funding[start : start + 500], time.time_ns() // 1_000_000)
        await driver.send(tick, time.perf_counter())
    while driver.sent_at:
        await asyncio.sleep(0.05)


async def until_committed(watch: Watch, timeout_s: float = 120.0) -> None:
    """Wait until every output entry in Redis is committed to Postgres (RuntimeError after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        outputs, committed = await watch.written()
        if committed >= outputs:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the DB writer committed {committed} of {outputs} entries in {timeout_s:.0f} s"
            )
        await asyncio.sleep(0.05)


async def meter_processes(
    meter: CpuMeter, processes: dict[str, subprocess.Popen[bytes]], watch: Watch
) -> None:
    """Meter the bench's processes, this one, Redis and the database's Postgres processes."""
    for label, process in processes.items():
        meter.add(label, [process.pid])
    meter.add("bench", [os.getpid()])
    redis_pid = await watch.redis_pid()
    if redis_pid is not None:
        meter.add("redis(shared)", [redis_pid])
    meter.add("postgres", await watch.backends())
    meter.add("postgres-aux(shared)", await watch.postgres_helpers())


def run(
    redis_url: str,
    admin_url: str,
    shard_counts: Sequence[int],
    flow: Sequence[FlowLine],
    rates: Sequence[int],
    seconds: float,
    engines: str = "per-shard",
) -> Iterator[ClusterRun]:
    """Each shard count's run in turn; ``engines`` is a layout of :func:`together_in_one_process`."""
    commands = flow_commands(flow)
    needed = int(sum(rates) * seconds)
    if len(commands) < needed:
        raise ValueError(f"the flow has {len(commands)} commands; the rates need {needed}")
    for shards in shard_counts:
        together = together_in_one_process(engines, shards)
        yield asyncio.run(run_one(redis_url, admin_url, shards, commands, rates, seconds, together))
