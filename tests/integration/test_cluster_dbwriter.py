"""The DB writer on real Redis and real Postgres (and SQLite): output streams into SQL exactly once.

Evidence: after a run through 2+2 shards, SQL holds every trade, every accepted order, and
holdings (the ledger plus what the trades moved and the fees) that sum to deposits minus
withdrawals per asset; a second writer that takes over
from a dead one (leases expire, pending entries claimed) stores nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import text
from test_cluster import _funding, _random_commands

from investo.cluster import dbwriter
from investo.cluster import topology as topo
from investo.cluster.client import ClusterClient
from investo.cluster.dbwriter import DbWriter
from investo.cluster.local import LocalCluster
from investo.core.messages import Deposited, OrderAccepted, TradeExecuted, Withdrawn
from investo.log.redis import RedisLog
from investo.store.db import make_engine
from investo.store.queries import trade_moves


@contextlib.asynccontextmanager
async def _running(writer: DbWriter) -> AsyncIterator[DbWriter]:
    """``writer`` started and running in a task; stopped (finishing its batches) and closed on exit."""
    await writer.start()
    stop = asyncio.Event()
    running = asyncio.create_task(writer.run(stop))
    try:
        yield writer
    finally:
        stop.set()
        await running
        await writer.close()


async def _run_commands(url: str, topology: topo.Topology, seed: int, count: int) -> dict[str, Any]:
    """Run funding plus ``count`` random commands through the cluster; count what the replies said."""
    engines = LocalCluster(topo.split_url(url)[0], topology)
    await engines.start()
    client = ClusterClient(url)
    await client.start()
    seen: dict[str, Any] = {"trades": 0, "orders": 0, "outputs": 0, "net": {}}
    try:
        commands = _funding() + _random_commands(random.Random(seed), count)
        for start in range(0, len(commands), 25):
            for applied in await asyncio.gather(*(client.submit(c) for c in commands[start : start + 25])):
                for event in applied.events:
                    seen["trades"] += isinstance(event, TradeExecuted)
                    seen["orders"] += isinstance(event, OrderAccepted)
                    if isinstance(event, Deposited | Withdrawn):
                        sign = 1 if isinstance(event, Deposited) else -1
                        seen["net"][event.asset] = seen["net"].get(event.asset, 0) + sign * event.amount
        await engines.drained()
        for engine in engines.engines.values():
            seen["outputs"] += await engine.output.last_offset()
    finally:
        await client.close()
        await engines.stop()
    return seen


async def _wait_written(url: str, topology: topo.Topology, writer: DbWriter, timeout_s: float = 20.0) -> None:
    server_url = topo.split_url(url)[0]
    lasts = {}
    for role, shard in topology.every_output():
        prefix = topology.output_prefix(role, shard)
        out = RedisLog(topo.log_url(server_url, prefix))
        lasts[prefix] = await out.last_offset()
        await out.close()
    for _ in range(int(timeout_s / 0.05)):
        durable = await writer.durable()
        if all(durable.get(prefix, 0) >= last for prefix, last in lasts.items()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not written in time: {await writer.durable()} < {lasts}")


async def _sql_counts(database_url: str, topology: topo.Topology) -> dict[str, object]:
    """Trades and orders stored, and every asset's total held (ledger + what trades moved + fees)."""
    db = make_engine(database_url)
    markets = {symbol: spec.core for symbol, spec in topology.markets.items()}
    try:
        async with db.connect() as conn:
            trades = await conn.scalar(text("SELECT count(*) FROM trades"))
            orders = await conn.scalar(text("SELECT count(*) FROM orders"))
            ledger = await conn.execute(text("SELECT asset, sum(delta) FROM ledger GROUP BY asset"))
            held = {asset: int(total) for asset, total in ledger}
            moves = await trade_moves(conn, markets)
    finally:
        await db.dispose()
    for (_, asset), moved in moves.holdings.items():
        held[asset] = held.get(asset, 0) + moved
    for asset, fees in moves.fees.items():
        held[asset] = held.get(asset, 0) + fees
    return {"trades": trades, "orders": orders, "held": held}


@pytest.mark.parametrize(
    ("backend", "connection"), [("postgres", "lean"), ("sqlite", "lean"), ("postgres", "redis-py")]
)
async def test_the_writer_stores_every_output_once(
    cluster: tuple[str, topo.Topology],
    backend: str,
    connection: str,
    request: pytest.FixtureRequest,
    tmp_path: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On the lean connection, and on redis-py's (what a TLS or Unix-socket URL gets)."""
    if connection == "redis-py":
        monkeypatch.setattr(dbwriter, "hot_connection", lambda url: None)
    url, topology = cluster
    database_url = (
        request.getfixturevalue("postgres_url") if backend == "postgres" else f"sqlite:///{tmp_path}/h.db"
    )
    seen = await _run_commands(url, topology, seed=3, count=300)
    async with _running(DbWriter(url, database_url, lease_ms=2_000)) as writer:
        await _wait_written(url, topology, writer)
    counts = await _sql_counts(database_url, topology)
    assert counts["trades"] == seen["trades"] > 0
    assert counts["orders"] == seen["orders"] > 0
    # Every asset's holdings sum to what came in minus what went out: trades only move value.
    assert counts["held"] == seen["net"]


async def test_a_writer_taking_over_from_a_dead_one_stores_nothing_twice(
    cluster: tuple[str, topo.Topology], postgres_url: str
) -> None:
    url, topology = cluster
    seen = await _run_commands(url, topology, seed=5, count=200)
    server_url = topo.split_url(url)[0]
    # 1. A writer commits part of the streams, then stops.
    async with _running(DbWriter(url, postgres_url, writer_id="first", lease_ms=600, batch=20)) as first:
        while not any((await first.durable()).values()):
            await asyncio.sleep(0.01)
    # 2. A writer that then dies: it took the leases and read every entry again (committed
    #    ones included, as after a crash between commit and XACK), and acknowledged none.
    client = aioredis.Redis.from_url(server_url)
    pending = 0
    for role, shard in topology.every_output():
        prefix = topology.output_prefix(role, shard)
        await client.set(f"{prefix}:dbwriter-lease", "dead", px=500)
        await client.xgroup_setid(f"{prefix}:log", "dbwriter", "0")
        for _, rows in await client.xreadgroup("dbwriter", "dead", {f"{prefix}:log": ">"}, count=100_000):
            pending += len(rows)
    # 3. The heir waits out the leases, claims the dead one's entries and finishes the job.
    async with _running(DbWriter(url, postgres_url, writer_id="heir", lease_ms=600)) as heir:
        await _wait_written(url, topology, heir)
    left = 0
    for role, shard in topology.every_output():
        groups = await client.xinfo_groups(f"{topology.output_prefix(role, shard)}:log")
        left += sum(int(g["pending"]) for g in groups)
    await client.aclose()
    assert pending == seen["outputs"] and left == 0
    counts = await _sql_counts(postgres_url, topology)
    assert counts["trades"] == seen["trades"]
    assert counts["orders"] == seen["orders"]
    assert counts["held"] == seen["net"]
