"""A small distributed Investo's shape for tests: 4 markets on 2 matching shards, 2 accounts shards."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg
import redis.asyncio as aioredis
from sqlalchemy.engine import make_url

from investo.cluster import topology as topo
from redis_fixtures import redis_namespace_url

SYMBOLS = ("AINR", "BINR", "CINR", "DINR")
ASSETS = ("INR", *(s[0] for s in SYMBOLS))
MARKETS_TOML = "[assets.INR]\ndecimals = 2\n" + "".join(
    f'\n[assets.{s[0]}]\ndecimals = 0\n\n[markets.{s}]\nbase = "{s[0]}"\nquote = "INR"\n'
    'tick_size = "0.05"\nlot_size = "1"\nmaker_fee_bps = 10\ntaker_fee_bps = 20\n'
    for s in SYMBOLS
)
MATCHING = {s: i % 2 for i, s in enumerate(SYMBOLS)}  # AINR, CINR on shard 0; BINR, DINR on 1


async def init_cluster(server_url: str, namespace: str) -> topo.Topology:
    """Store the 4-market, 2 + 2 shard configuration under ``namespace``."""
    client = aioredis.Redis.from_url(server_url)
    try:
        return await topo.store(client, topo.Topology(namespace, MARKETS_TOML, MATCHING, 2))
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def configured_cluster() -> AsyncIterator[tuple[str, topo.Topology]]:
    """(cluster URL, topology) on the test Redis under a fresh namespace, deleted afterwards."""
    with redis_namespace_url() as url:
        yield url, await init_cluster(*topo.split_url(url))


async def bench_leftovers(redis_url: str, postgres_admin_url: str) -> set[str]:
    """The namespaces of `investo bench cluster` with keys in Redis and its databases in Postgres."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = client.scan_iter(match="investo-bench-*", count=1000)
        namespaces = {key.decode().split(":", 1)[0] async for key in keys}
    finally:
        await client.aclose()
    dsn = make_url(postgres_admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'investo_bench_%'")
    finally:
        await connection.close()
    return namespaces | {row["datname"] for row in rows}
