"""Faults in the distributed mode, each under steady order load, on real Redis (AOF always) and Postgres.

Each test ends with zero acknowledged orders lost and nothing executed or stored twice:
every acknowledged order and trade is in Postgres once, every account's SQL ledger equals
its balance on its accounts shard, and every engine rebuilt from Redis alone has the state
hash the running engine ended with.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from cluster_rig import Load, PostgresServer, Process, Rig, check_consistent, started_rig, wait_written

from investo.cluster.client import ClusterClient


@pytest.fixture
async def rig(tmp_path: Path, postgres_url: str) -> AsyncIterator[Rig]:
    async with started_rig(tmp_path, postgres_url) as made:
        yield made


async def _under_load(rig: Rig, fault: Callable[[], Awaitable[None]]) -> Load:
    client = ClusterClient(rig.cluster_url, timeout_s=3.0)
    await client.start()
    load = Load(client)
    try:
        await load.fund()
        running = asyncio.create_task(load.run())
        await asyncio.sleep(1.5)
        before = len(load.acknowledged)
        await fault()
        # The load must resume: a restarted process needs its imports, snapshot and replay
        # first (seconds on a slow host), so wait for progress rather than a fixed time.
        deadline = time.monotonic() + 30
        while len(load.acknowledged) <= before + 20 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        resumed = len(load.acknowledged) > before + 20
        await asyncio.sleep(0.5)  # and keep going a little after the fault
        load.running = False
        await running
        assert resumed, f"the load did not resume within 30 s of the fault\n{rig.logs()}"
    finally:
        await client.close()
    await wait_written(rig)
    codes = rig.stop_all()
    assert codes == dict.fromkeys(codes, 0), f"{codes}\n{rig.logs()}"
    return load


def _kill9_and_restart(process: Process) -> Callable[[], Awaitable[None]]:
    async def fault() -> None:
        process.kill9()
        await asyncio.sleep(0.5)
        process.start()

    return fault


async def test_kill9_a_matching_engine_and_restart_it(rig: Rig) -> None:
    load = await _under_load(rig, _kill9_and_restart(rig.engines[("matching", 1)]))
    await check_consistent(rig, load)


async def test_kill9_an_accounts_engine_and_restart_it(rig: Rig) -> None:
    load = await _under_load(rig, _kill9_and_restart(rig.engines[("accounts", 0)]))
    await check_consistent(rig, load)


async def test_kill9_one_process_hosting_every_engine_shard_and_restart_it(
    tmp_path: Path, postgres_url: str
) -> None:
    """``investo engine --shards all``: the four shards die together mid-load and come back together."""
    async with started_rig(tmp_path, postgres_url, engines_together=True) as rig:
        assert rig.engine_host is not None and not rig.engines
        load = await _under_load(rig, _kill9_and_restart(rig.engine_host))
        await check_consistent(rig, load)


async def test_kill9_the_db_writers_mid_batch_and_restart_them(rig: Rig) -> None:
    async def fault() -> None:
        for writer in rig.writers:  # both: nobody is left to take over until they are back
            writer.kill9()
        await asyncio.sleep(0.5)
        for writer in rig.writers:
            writer.start()

    load = await _under_load(rig, fault)
    await check_consistent(rig, load)


async def test_one_db_writer_dies_and_the_other_takes_over(rig: Rig) -> None:
    async def fault() -> None:
        rig.writers[0].kill9()  # its leases expire; the other writer claims its streams

    load = await _under_load(rig, fault)
    await asyncio.sleep(0)
    await check_consistent(rig, load)


async def test_restart_redis_with_aof_always(rig: Rig) -> None:
    async def fault() -> None:
        rig.redis.kill()
        await asyncio.sleep(0.5)
        rig.redis.start()

    load = await _under_load(rig, fault)
    await check_consistent(rig, load)


async def test_restart_postgres(tmp_path: Path) -> None:
    postgres = PostgresServer()
    postgres.start()
    try:
        async with started_rig(tmp_path, postgres.url, postgres) as cluster:

            async def fault() -> None:
                postgres.kill()
                await asyncio.sleep(1.0)
                postgres.start()

            load = await _under_load(cluster, fault)
            await check_consistent(cluster, load)
    finally:
        postgres.remove()
