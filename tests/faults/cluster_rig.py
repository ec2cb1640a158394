"""A distributed Investo for fault tests: its own Redis (the shipped AOF-always config), real Postgres,
every engine shard and DB writer as a separate ``investo`` process that a test can kill -9.

``Load`` keeps orders flowing through a :class:`ClusterClient` while faults happen and remembers
every acknowledged answer; ``check_consistent`` then compares Postgres with the engines.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, ProgrammingError

from cluster_fixtures import ASSETS, SYMBOLS, init_cluster
from investo.cluster import topology as topo
from investo.cluster.client import ClusterClient
from investo.cluster.engine import ShardEngine
from investo.cluster.shards import AccountsShard
from investo.core.messages import (
    CancelOrder,
    Command,
    Deposit,
    OrderAccepted,
    OrderType,
    PlaceOrder,
    Side,
    TimeInForce,
    TradeExecuted,
)
from investo.host import StatusUnknown
from investo.store.db import make_engine
from investo.store.queries import ledger_balances
from serving import free_port

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "redis.conf"
USERS = range(1, 9)


class RedisServer:
    """redis-server with deploy/redis.conf (AOF, appendfsync always) on a free port and its own dir."""

    def __init__(self, data_dir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail("redis-server is missing (Debian package redis-server)")
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.dir = data_dir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, str(CONFIG), "--port", str(self.port), "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        time.sleep(0.2)  # loading the AOF

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
            self.process = None


class PostgresServer:
    """A private PostgreSQL (Debian's server binaries) on a free port with its own data dir.

    Postgres refuses to run as root: as root the server runs as the ``postgres`` user. The
    postmaster is this process's own child, so a kill -9 is reaped here at once.
    """

    def __init__(self) -> None:
        bindir = _pg_bindir()
        self.initdb, self.postgres = Path(bindir) / "initdb", Path(bindir) / "postgres"
        # Not under pytest's tmp_path: its folders are private to root, which postgres is not.
        self.dir = data_dir = Path(tempfile.mkdtemp(prefix="investo-pg-"))
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user:
            shutil.chown(data_dir, self._user)
        initdb = [
            str(self.initdb),
            "-D",
            str(data_dir / "pg"),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
        ]
        subprocess.run(
            initdb,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            user=self._user,
        )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = [
            "-p",
            str(self.port),
            "-k",
            str(self.dir),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=on",
        ]
        log = (self.dir / "server.log").open("ab")
        self.process = subprocess.Popen([str(self.postgres), "-D", str(self.dir / "pg"), *options],
                                        stdout=log, stderr=subprocess.STDOUT, user=self._user)  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"postgres did not start: {(self.dir / 'server.log').read_text()[-2000:]}")
            time.sleep(0.1)
        time.sleep(0.5)  # accepting connections once recovery is done

    def kill(self) -> None:
        """SIGKILL the postmaster (its backends then exit); a restart runs crash recovery."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(20)
            self.process = None

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def _pg_bindir() -> str:
    found = shutil.which("pg_config")
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("pg_config is missing (Debian package postgresql)")
        pytest.skip("PostgreSQL server binaries are not installed")
    return subprocess.run([found, "--bindir"], check=True, capture_output=True, text=True).stdout.strip()


class Process:
    """One ``investo`` command as a subprocess, with its output in a file."""

    def __init__(self, name: str, args: list[str], log_dir: Path) -> None:
        self.name = name
        self.args = [sys.executable, "-m", "investo.cli", *args]
        self.log = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.process = None  # dead: stop() has nothing to stop until start() again

    def stop(self) -> int:
        """SIGTERM and wait; the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.terminate()
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Rig:
    redis: RedisServer
    database_url: str
    log_dir: Path
    namespace: str = "faults"
    topology: topo.Topology | None = None
    postgres: PostgresServer | None = None  # a private server (to restart), else a database of the shared one
    engines: dict[tuple[topo.Role, int], Process] = field(default_factory=dict)
    writers: list[Process] = field(default_factory=list)
    engine_host: Process | None = None  # with engines_together: one process hosting every shard
    engines_together: bool = False

    @property
    def cluster_url(self) -> str:
        return f"{self.redis.url}?prefix={self.namespace}"

    async def init(self) -> None:
        self.topology = await init_cluster(self.redis.url, self.namespace)
        if self.engines_together:
            args = ["engine", "--shards", "all", "--redis", self.cluster_url, "--snapshot-every", "300"]
            self.engine_host = Process("engines", args, self.log_dir)
        else:
            for role, shard in self.topology.every_output():
                args = ["engine", "--role", role, "--shard", str(shard), "--redis", self.cluster_url]
                args += ["--snapshot-every", "300"]
                self.engines[(role, shard)] = Process(f"{role}-{shard}", args, self.log_dir)
        for number in range(2):
            args = [
                "dbwriter",
                "--redis",
                self.cluster_url,
                "--database",
                self.database_url,
                "--lease-ms",
                "1500",
            ]
            self.writers.append(Process(f"dbwriter-{number}", args, self.log_dir))
        for process in self.processes():
            process.start()
        await self.wait_engines_up()
        await self.wait_writers_up()

    async def wait_writers_up(self, timeout_s: float = 60.0) -> None:
        """Until every DB writer has said it runs (it prints that once its database is migrated)."""
        deadline = time.monotonic() + timeout_s
        for writer in self.writers:
            while "db writer " not in writer.output():
                if time.monotonic() > deadline:
                    raise AssertionError(f"{writer.name} did not start\n{self.logs()}")
                await asyncio.sleep(0.05)

    async def wait_engines_up(self, since_ms: int = 0, timeout_s: float = 60.0) -> None:
        """Until every engine has recorded its status (after its recovery) since ``since_ms``."""
        assert self.topology is not None
        client = aioredis.Redis.from_url(self.redis.url)
        deadline = time.monotonic() + timeout_s
        try:
            for role, shard in self.topology.every_output():
                key = f"{self.topology.input_prefix(role, shard)}:status"
                while int((await client.hget(key, "at_ms")) or 0) <= since_ms:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{role} {shard} did not start\n{self.logs()}")
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    def processes(self) -> list[Process]:
        hosts = [self.engine_host] if self.engine_host is not None else []
        return [*self.engines.values(), *hosts, *self.writers]

    def stop_all(self) -> dict[str, int]:
        return {p.name: p.stop() for p in self.processes()}

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.output()[-12000:]}" for p in self.processes())


@contextlib.asynccontextmanager
async def started_rig(
    tmp_path: Path, database_url: str, postgres: PostgresServer | None = None, engines_together: bool = False
) -> AsyncIterator[Rig]:
    """A rig on its own Redis server (data in ``tmp_path/redis``), cluster initialised; stopped after."""
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    server = RedisServer(redis_dir)
    server.start()
    logs = tmp_path / "logs"
    logs.mkdir()
    cluster = Rig(server, database_url, logs, postgres=postgres, engines_together=engines_together)
    try:
        await cluster.init()
        yield cluster
    finally:
        cluster.stop_all()
        server.kill()


@dataclass
class Load:
    """Orders from several users, many in flight, until stopped; remembers what was acknowledged."""

    client: ClusterClient
    acknowledged: list[list[object]] = field(default_factory=list)
    unknown: int = 0
    running: bool = True

    async def fund(self) -> None:
        for user in USERS:
            for asset in ASSETS:
                await self.client.submit(Deposit(0, user, asset, 10_000_000 if asset == "INR" else 100_000))

    async def run(self, workers: int = 8, seed: int = 1) -> None:
        await asyncio.gather(*(self._worker(random.Random(seed * 100 + n), n) for n in range(workers)))

    async def _worker(self, rng: random.Random, number: int) -> None:
        count = 0
        while self.running:
            count += 1
            user = rng.choice(USERS)
            symbol = rng.choice(SYMBOLS)
            command: Command
            if rng.random() < 0.2:
                command = CancelOrder(0, user, symbol, client_order_id=f"w{number}-{count - 3}")
            else:
                side = rng.choice((Side.BUY, Side.SELL))
                command = PlaceOrder(
                    0, user, symbol, side, OrderType.LIMIT, TimeInForce.GTC, rng.randint(1995, 2005),
                    rng.randint(1, 5), client_order_id=f"w{number}-{count}",
                )  # fmt: skip
            try:
                applied = await self.client.submit(command)
            except StatusUnknown:
                self.unknown += 1
                await asyncio.sleep(0.05)
                continue
            self.acknowledged.append(list(applied.events))


async def wait_written(rig: Rig, timeout_s: float = 60.0) -> None:
    """Until every engine has consumed its input and the DB writers have committed every output."""
    assert rig.topology is not None
    client = aioredis.Redis.from_url(rig.redis.url)
    db = make_engine(rig.database_url)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            behind = []
            for role, shard in rig.topology.every_output():
                inputs = int(await client.get(f"{rig.topology.input_prefix(role, shard)}:next") or 0)
                done = int(await client.get(rig.topology.done_key(role, shard)) or 0)
                out_prefix = rig.topology.output_prefix(role, shard)
                outputs = int(await client.get(f"{out_prefix}:next") or 0)
                try:
                    async with db.connect() as conn:
                        written = await conn.scalar(
                            text("SELECT log_offset FROM writer_progress WHERE name = :n"), {"n": out_prefix}
                        )
                except ProgrammingError:  # no writer has migrated the database yet
                    written = 0
                except DBAPIError:  # the database is restarting (a fault) or still recovering
                    written = -1
                written = int(written or 0) // topo.STREAMS_PER_OFFSET
                if done < inputs or written < outputs:
                    behind.append((role, shard, inputs, done, outputs, written))
            if not behind:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"not caught up: {behind}\n{rig.logs()}")
            await asyncio.sleep(0.1)
    finally:
        await client.aclose()
        await db.dispose()


async def check_consistent(rig: Rig, load: Load) -> None:
    """Nothing acknowledged lost, nothing stored twice, SQL agrees with the engines' state."""
    assert rig.topology is not None
    accepted = {e.order_id for events in load.acknowledged for e in events if isinstance(e, OrderAccepted)}
    trades = {
        (e.market, e.trade_id) for events in load.acknowledged for e in events if isinstance(e, TradeExecuted)
    }
    db = make_engine(rig.database_url)
    try:
        async with db.connect() as conn:
            stored = [row[0] for row in (await conn.execute(text("SELECT order_id FROM orders"))).all()]
            stored_trades = (await conn.execute(text("SELECT symbol, trade_id FROM trades"))).all()
        # Each user's holdings by SQL: the ledger (deposits, withdrawals) plus what its trades moved.
        markets = {symbol: spec.core for symbol, spec in rig.topology.markets.items()}
        books = {
            (user, asset): total
            for user in USERS
            for asset, total in (await ledger_balances(db, user, markets)).items()
        }
    finally:
        await db.dispose()
    assert len(stored) == len(set(stored)), "an order stored twice"
    assert accepted <= set(stored), (
        f"acknowledged orders missing from SQL: {sorted(accepted - set(stored))[:5]}"
    )
    assert len(stored_trades) == len(set(stored_trades)), "a trade stored twice"
    assert trades <= {tuple(t) for t in stored_trades}
    # Every engine, rebuilt from Redis alone, has the state the running one ended with, and the
    # SQL holdings of every account equal its balance (available + reserved) on its accounts shard.
    server_url = rig.redis.url
    client = aioredis.Redis.from_url(server_url)
    for role, shard in rig.topology.every_output():  # hosted one per process or all in one
        rebuilt = ShardEngine(server_url, rig.topology, role, shard)
        try:
            await rebuilt.recover()
            status = await client.hgetall(f"{rig.topology.input_prefix(role, shard)}:status")
            assert int(status[b"applied"]) == rebuilt.applied, (role, shard)
            assert status[b"state_hash"].decode() == rebuilt.shard.state_hash(), (role, shard)
            if isinstance(rebuilt.shard, AccountsShard):
                for user in (0, *USERS):
                    if user % 2 != shard and user != 0:
                        continue
                    for asset in ASSETS:
                        available, reserved = rebuilt.shard.engine.balance(user, asset)
                        if user == 0:
                            continue  # the fee account has a copy per shard; SQL sums them
                        assert books.get((user, asset), 0) == available + reserved, (user, asset)
        finally:
            await rebuilt.close()
    await client.aclose()
