"""Redis loses everything (restarted without its data): the cluster is rebuilt from Postgres.

Under order load a 2 + 2 shard cluster trades with two DB writers; once the writers have
caught up, Redis restarts with an empty data directory. The DB writers keep running and
must refuse to write the lost streams; the engines, idle, notice the loss and stop (exit
code 4). Then the engines start again with ``--database``: one rebuilds the whole cluster
from SQL, the others wait for it. Every shard then has the state hash it had before the
loss; new orders trade against the rebuilt books; and at the end nothing is stored twice
and SQL agrees with the engines.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from cluster_rig import Load, Rig, check_consistent, started_rig, wait_written
from sqlalchemy import text

from investo.cluster.client import ClusterClient
from investo.cluster.engine import ShardEngine
from investo.cluster.rebuild import RebuildRefused, rebuild_cluster
from investo.cluster.replica import ShardReplica
from investo.cluster.shards import AccountsShard
from investo.core.messages import OrderType, PlaceOrder, Side, TimeInForce, TradeExecuted
from investo.store.db import make_engine


@pytest.fixture
async def rig(tmp_path: Path, postgres_url: str) -> AsyncIterator[Rig]:
    async with started_rig(tmp_path, postgres_url) as made:
        yield made


async def _states(rig: Rig) -> dict[tuple[str, int], tuple[str, object]]:
    """Each shard's state hash and what it holds (accounts: balances; matching: open orders)."""
    assert rig.topology is not None
    out: dict[tuple[str, int], tuple[str, object]] = {}
    for role, shard in rig.topology.every_output():
        engine = ShardEngine(rig.redis.url, rig.topology, role, shard)
        try:
            await engine.recover()
            held: object
            if isinstance(engine.shard, AccountsShard):
                accounts = engine.shard.engine
                held = {u: accounts.balances(u) for u in range(0, 9)}
                accounts.check_invariants()
            else:
                held = {s: e.open_orders() for s, e in engine.shard.engines.items()}
            out[role, shard] = (engine.shard.state_hash(), held)
        finally:
            await engine.close()
    return out


async def _load(rig: Rig, seconds: float, fund: bool) -> Load:
    client = ClusterClient(rig.cluster_url, timeout_s=3.0)
    await client.start()
    load = Load(client)
    try:
        if fund:
            await load.fund()
        running = asyncio.create_task(load.run(workers=4))
        await asyncio.sleep(seconds)
        load.running = False
        await running
    finally:
        await client.close()
    return load


async def test_redis_restarted_without_data_is_rebuilt_from_postgres(rig: Rig) -> None:
    assert rig.topology is not None
    await _load(rig, 2.0, fund=True)
    await wait_written(rig)
    before = await _states(rig)  # read from Redis while the engines idle
    # Replicas, as gateways keep them, follow the shards through the loss and the rebuild.
    reloads: list[object] = []
    replicas = {
        key: ShardReplica(rig.redis.url, rig.topology, *key, on_reload=lambda k=key: reloads.append(k))
        for key in before
    }
    stop_following = asyncio.Event()
    for replica in replicas.values():
        await replica.start()
        await replica.catch_up()
    following = [asyncio.create_task(r.follow(stop_following)) for r in replicas.values()]
    assert any(orders for _, held in before.values() if isinstance(held, dict) for orders in held.values())

    # Redis loses everything: killed, its AOF removed, started empty.
    rig.redis.kill()
    shutil.rmtree(rig.redis.dir)
    rig.redis.dir.mkdir()
    rig.redis.start()
    deadline = time.monotonic() + 20
    for engine in rig.engines.values():  # each notices that Redis lost what it published, and stops
        assert engine.process is not None
        while engine.process.poll() is None:
            assert time.monotonic() < deadline, f"{engine.name} did not notice the loss\n{rig.logs()}"
            await asyncio.sleep(0.1)
        assert engine.process.returncode == 4, rig.logs()
        assert "Redis lost what this engine published" in engine.output()

    db = make_engine(rig.database_url)
    server_url = rig.redis.url
    try:
        dry = await rebuild_cluster(server_url, rig.namespace, db, dry_run=True)
        assert not dry.written and {(s.role, s.shard): s.state_hash for s in dry.shards} == {
            key: value[0] for key, value in before.items()
        }
        client = aioredis.Redis.from_url(server_url)
        await asyncio.sleep(2.0)  # the DB writers try to take the lost streams: they must refuse
        assert any("Redis lost the cluster" in w.output() for w in rig.writers), rig.logs()

        since = int(time.time() * 1000)
        for engine in rig.engines.values():
            engine.args += ["--database", rig.database_url]
            engine.start()
        await rig.wait_engines_up(since_ms=since)
        rebuilt_by = [e.name for e in rig.engines.values() if "REDIS LOST CLUSTER" in e.output()]
        assert len(rebuilt_by) == 1, rig.logs()
        for (role, shard), (state_hash, _) in before.items():
            status = await client.hgetall(f"{rig.topology.input_prefix(role, shard)}:status")
            assert status[b"state_hash"].decode() == state_hash, (role, shard, rig.logs())
        with pytest.raises(RebuildRefused, match="still holds"):  # never over a live cluster
            await rebuild_cluster(server_url, rig.namespace, db)

        # New orders trade against the rebuilt books: a taker sweeping one market's best level.
        after = await _states(rig)
        symbol, maker = next(
            (symbol, orders[0])
            for _, (_, held) in sorted(after.items())
            if isinstance(held, dict)
            for symbol, orders in sorted(held.items())
            if isinstance(orders, list) and orders
        )
        cluster = ClusterClient(rig.cluster_url, timeout_s=5.0)
        await cluster.start()
        try:
            taker = 8 if maker.user != 8 else 7
            side = Side.SELL if maker.side == Side.BUY else Side.BUY
            applied = await cluster.submit(
                PlaceOrder(0, taker, symbol, side, OrderType.LIMIT, TimeInForce.IOC, maker.price, 1)
            )
            trades = [e for e in applied.events if isinstance(e, TradeExecuted)]
            assert trades and trades[0].maker_order_id == maker.order_id, applied.events
        finally:
            await cluster.close()

        load = await _load(rig, 2.0, fund=False)
        assert any(isinstance(e, TradeExecuted) for events in load.acknowledged for e in events)
        await wait_written(rig)
        codes = rig.stop_all()
        assert codes == dict.fromkeys(codes, 0), f"{codes}\n{rig.logs()}"
        for (role, shard), replica in replicas.items():
            status = await client.hgetall(f"{rig.topology.input_prefix(role, shard)}:status")
            deadline = time.monotonic() + 10
            while replica.applied != int(status[b"applied"]):
                assert time.monotonic() < deadline, (role, shard, replica.applied, status)
                await asyncio.sleep(0.05)
            assert replica.state_hash() == status[b"state_hash"].decode(), (role, shard)
        assert sorted(reloads) == sorted(replicas), reloads  # each reloaded the rebuilt snapshot once
        stop_following.set()
        await asyncio.gather(*following)
        for replica in replicas.values():
            await replica.close()
        await check_consistent(rig, load)
        async with db.connect() as conn:  # nothing stored twice across the loss
            dupes = await conn.scalar(
                text("SELECT count(*) FROM (SELECT log_offset, idx FROM order_updates "
                     "GROUP BY log_offset, idx HAVING count(*) > 1) d")
            )  # fmt: skip
            assert dupes == 0
        await client.aclose()
    finally:
        await db.dispose()
