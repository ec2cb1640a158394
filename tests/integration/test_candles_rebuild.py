"""``investo candles rebuild``: the candles table recomputed from the trades equals the writer's, twice.

On SQLite (the data dir's ``history.db``) and on Postgres (``--database``), see ``history_url``
in tests/conftest.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

from sqlalchemy import Table, select, text
from typer.testing import CliRunner

from investo.cli import app
from investo.core.messages import Deposit, OrderType, PlaceOrder, Side, StpMode, TimeInForce
from investo.markets import load_markets
from investo.node import Node, NodeConfig
from investo.store.db import make_engine
from investo.store.models import Candle

_table = cast(Table, Candle.__table__)


def _sql(database_url: str, *statements: str) -> list[tuple[object, ...]]:
    """Run ``statements`` in one transaction; then every candle row, in key order."""

    async def run() -> list[tuple[object, ...]]:
        engine = make_engine(database_url)
        try:
            async with engine.begin() as conn:
                for statement in statements:
                    await conn.execute(text(statement))
                c = _table.c
                query = select(*c).order_by(c.symbol, c.interval, c.open_time_ms)
                return [tuple(row) for row in await conn.execute(query)]
        finally:
            await engine.dispose()

    return asyncio.run(run())


async def _trade(tmp_path: Path, database_url: str) -> None:
    clock = [1_700_000_000_000]

    def now() -> int:
        clock[0] += 7_919  # trades spread over several minutes and hours
        return clock[0]

    node = Node(
        NodeConfig(data_dir=tmp_path, markets=load_markets(None), database_url=database_url, clock_ms=now)
    )
    await node.start()
    host = node.host
    assert host is not None
    for user in (1, 2):
        await host.submit(Deposit(0, user, "INR", 10**13))
        await host.submit(Deposit(0, user, "TATA", 10**9))
    for i in range(300):
        price = 19_000 + (i * 37) % 200
        for user, side in ((1, Side.SELL), (2, Side.BUY)):
            await host.submit(
                PlaceOrder(
                    0, user, "TATAINR", side, OrderType.LIMIT, TimeInForce.GTC, price, 1 + i % 3, 0, "",
                    StpMode.NONE,
                )
            )  # fmt: skip
    await node.caught_up()
    await node.stop()


def test_candles_rebuild_recomputes_the_table_and_is_idempotent(tmp_path: Path, history_url: str) -> None:
    data_dir = tmp_path  # history_url's SQLite file is the data dir's history.db
    asyncio.run(_trade(data_dir, history_url))
    original = _sql(history_url)
    assert len({r[2] for r in original if r[1] == "1m"}) > 5  # several minutes
    assert all(type(v) in (int, str) for row in original for v in row)  # NUMERIC volumes read as int
    damaged = _sql(  # lose some candles, corrupt another
        history_url,
        "DELETE FROM candles WHERE interval = '1m' AND open_time_ms % 120000 = 0",
        "UPDATE candles SET high = high + 1000, trades = 0 WHERE interval = '1h'",
    )
    assert damaged != original
    # without --database: the data dir's history.db, the SQLite case's file
    where = [] if history_url.startswith("sqlite") else ["--database", history_url]
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(app, ["candles", "rebuild", "--data-dir", str(data_dir), *where])
        assert result.exit_code == 0, result.output
        assert f"rebuilt {len(original)} candles" in result.output
        assert _sql(history_url) == original


def test_candles_rebuild_without_a_database_fails(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["candles", "rebuild", "--data-dir", str(tmp_path / "none")])
    assert result.exit_code == 1
