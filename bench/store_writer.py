"""Throughput of the history writer on SQLite or Postgres: applied commands written per second.

Run: ``.venv/bin/python bench/store_writer.py [--commands 50000] [--batch 256] [--dir PATH]
[--postgres postgresql://postgres@127.0.0.1:5432/test]`` (with ``--postgres`` each case
writes to a fresh database created from that one, and dropped after).

A synthetic flow (deposits, then limit orders around a drifting mid price of which
about a third cross, cancels, market orders) runs through a real
:class:`~investo.core.exchange.Exchange` *before* timing; only the writer is timed,
on a freshly migrated SQLite file (WAL, ``synchronous=NORMAL``) or Postgres database.
Besides throughput each case prints the CPU milliseconds per 1,000 commands of this
process and, on Postgres, of the database's server processes (from ``/proc``): a
figure that holds still on a busy machine. Two cases:

* **backlog**: every batch is queued at once (as after a restart or a burst); the
  writer coalesces up to ``max_commands`` per transaction.
* **paced**: one host-sized batch at a time, waiting for its commit before the next
  (the smallest transactions the writer makes under steady load).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import secrets
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

from investo.bench.proc_cpu import CpuMeter
from investo.core.exchange import Exchange
from investo.core.messages import (
    CancelOrder,
    Command,
    Deposit,
    OrderType,
    PlaceOrder,
    Side,
    TimeInForce,
)
from investo.host import Applied
from investo.markets import load_markets
from investo.store.db import make_engine
from investo.store.migrate import upgrade_async
from investo.store.writer import HistoryWriter

USERS = 200


def synthetic_flow(count: int, seed: int = 7) -> list[Applied]:
    """``count`` applied commands: deposits for every user, then a random order flow."""
    markets = load_markets(None)
    exchange = Exchange({symbol: spec.core for symbol, spec in markets.items()})
    rng = random.Random(seed)
    symbols = sorted(markets)
    mids = {symbol: markets[symbol].initial_price_ticks or 10_000 for symbol in symbols}
    open_ids: list[tuple[int, int, str]] = []  # (order id, user, symbol)
    applied: list[Applied] = []
    ts = 1_700_000_000_000

    def apply(command: Command) -> None:
        events = exchange.apply(command)
        applied.append(Applied(len(applied) + 1, command, events))
        for event in events:
            order_id = getattr(event, "order_id", 0)
            if type(event).__name__ == "OrderRested":
                open_ids.append((order_id, command.user, command.market))  # type: ignore[union-attr]

    for user in range(1, USERS + 1):
        apply(Deposit(ts, user, "INR", 10**12))
        for symbol in symbols:
            apply(Deposit(ts, user, markets[symbol].base, 10**7))
    while len(applied) < count:
        ts += rng.randint(0, 40)
        symbol = rng.choice(symbols)
        user = rng.randint(1, USERS)
        roll = rng.random()
        if roll < 0.25 and open_ids:
            order_id, owner, market = open_ids.pop(rng.randrange(len(open_ids)))
            apply(CancelOrder(ts, owner, market, order_id))
            continue
        mids[symbol] = max(100, mids[symbol] + rng.randint(-3, 3))
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        qty = rng.randint(1, 50)
        if roll < 0.33:
            apply(PlaceOrder(ts, user, symbol, side, OrderType.MARKET, TimeInForce.IOC, 0, qty))
            continue
        offset = rng.randint(-10, 30)  # a third cross the mid
        price = mids[symbol] - offset if side == Side.BUY else mids[symbol] + offset
        apply(PlaceOrder(ts, user, symbol, side, OrderType.LIMIT, TimeInForce.GTC, max(1, price), qty))
    return applied[:count]


async def run_case(url: str, name: str, flow: list[Applied], batch: int, paced: bool) -> str:
    await upgrade_async(url)
    engine = make_engine(url)
    markets = load_markets(None)
    writer = HistoryWriter(engine, markets)
    await writer.load_progress()
    writer.start()
    batches = [flow[i : i + batch] for i in range(0, len(flow), batch)]
    meter = CpuMeter()
    meter.add("writer", [os.getpid()])
    postgres = await _backends(url)
    meter.start()
    began = time.perf_counter()
    for chunk in batches:
        writer.on_applied(chunk)
        if paced:
            await writer.wait_for(chunk[-1].offset)
    await writer.wait_for(flow[-1].offset)
    elapsed = time.perf_counter() - began
    meter.add("postgres", postgres + await _backends(url))
    meter.stop()
    stats = writer.stats
    await writer.stop()
    await engine.dispose()
    cpu = " ".join(f"{label}={ms:.1f}" for label, ms in meter.per_thousand(len(flow)).items())
    return (
        f"{name:<8} {len(flow) / elapsed:>10,.0f} commands/s  {stats.rows / elapsed:>10,.0f} rows/s  "
        f"{stats.transactions:>5} transactions  {stats.rows:>9,} rows  {elapsed:6.2f} s  "
        f"cpu_ms_per_1000_commands: {cpu}"
    )


async def _backends(url: str) -> list[int]:
    """The pids of the Postgres processes serving ``url``'s database (none for SQLite)."""
    if not url.startswith("postgresql"):
        return []
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await connection.close()
    return [int(row[0]) for row in rows]


@contextlib.asynccontextmanager
async def _database(admin: str | None, directory: Path, name: str) -> AsyncIterator[str]:
    """A fresh SQLite file in ``directory``, or a fresh Postgres database next to ``admin``'s."""
    if admin is None:
        yield f"sqlite:///{directory / (name + '.db')}"
        return
    database = f"investo_bench_{name}_{secrets.token_hex(4)}"
    connection = await asyncpg.connect(admin)
    try:
        await connection.execute(f'CREATE DATABASE "{database}"')
        yield admin.rsplit("/", 1)[0] + "/" + database
    finally:
        await connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await connection.close()


async def main(count: int, batch: int, directory: str | None, postgres: str | None) -> None:
    database = "Postgres" if postgres else f"SQLite {sqlite3.sqlite_version}"
    print(f"{database}, Python {platform.python_version()}, {platform.platform()}")
    began = time.perf_counter()
    flow = synthetic_flow(count)
    trades = sum(1 for a in flow for e in a.events if type(e).__name__ == "TradeExecuted")
    print(
        f"{len(flow):,} commands, {sum(len(a.events) for a in flow):,} events, {trades:,} trades "
        f"(generated in {time.perf_counter() - began:.1f} s); host batches of {batch}"
    )
    with tempfile.TemporaryDirectory(dir=directory, prefix="investo-bench-") as tmp:
        for name, paced in (("backlog", False), ("paced", True)):
            async with _database(postgres, Path(tmp), name) as url:
                print(await run_case(url, name, flow, batch, paced=paced))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dir", default=None, help="where the database files go (default: system temp)")
    parser.add_argument("--postgres", default=None, help="fresh Postgres databases made from this one")
    args = parser.parse_args()
    asyncio.run(main(args.commands, args.batch, args.dir, args.postgres))
