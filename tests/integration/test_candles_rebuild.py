"""``investo candles rebuild``: the candles table recomputed from the trades equals the writer's, twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from investo.cli import app
from investo.core.messages import Deposit, OrderType, PlaceOrder, Side, StpMode, TimeInForce
from investo.markets import load_markets
from investo.node import Node, NodeConfig


def _candles(db: Path) -> list[tuple[object, ...]]:
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM candles ORDER BY symbol, interval, open_time_ms")).all()
    engine.dispose()
    return [tuple(r) for r in rows]


async def _trade(tmp_path: Path) -> None:
    clock = [1_700_000_000_000]

    def now() -> int:
        clock[0] += 7_919  # trades spread over several minutes and hours
        return clock[0]

    node = Node(NodeConfig(data_dir=tmp_path, markets=load_markets(None), clock_ms=now))
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


def test_candles_rebuild_recomputes_the_table_and_is_idempotent(tmp_path: Path) -> None:
    asyncio.run(_trade(tmp_path))
    db = tmp_path / "history.db"
    original = _candles(db)
    assert len({r[2] for r in original if r[1] == "1m"}) > 5  # several minutes
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:  # lose some candles, corrupt another
        conn.execute(text("DELETE FROM candles WHERE interval = '1m' AND open_time_ms % 120000 = 0"))
        conn.execute(text("UPDATE candles SET high = high + 1000, trades = 0 WHERE interval = '1h'"))
    engine.dispose()
    assert _candles(db) != original
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(app, ["candles", "rebuild", "--data-dir", str(tmp_path)])
        assert result.exit_code == 0, result.output
        assert f"rebuilt {len(original)} candles" in result.output
        assert _candles(db) == original


def test_candles_rebuild_without_a_database_fails(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["candles", "rebuild", "--data-dir", str(tmp_path / "none")])
    assert result.exit_code == 1
