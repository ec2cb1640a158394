"""`investo up --database postgresql://…`: the whole exchange with its SQL history on Postgres.

A real ``investo up`` subprocess (no bots) on a fresh Postgres database (``postgres_url``,
tests/conftest.py): it migrates the database at start, two users trade through the
signed API, and the answers served from SQL (``allOrders``, ``myTrades``, ``klines``,
the 24h ticker) are checked, as are the rows in Postgres. After a graceful restart on the
same data dir and database the same answers come back, nothing is written twice, and
``investo candles rebuild --database`` recomputes the candles there.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from investo.cli import app
from investo.client import InvestoClient
from investo.security.signing import generate_key_pair
from investo.store.db import make_engine
from investo.store.models import Order, Trade, User

SYMBOL = "TATAINR"

pytestmark = pytest.mark.postgres


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Up:
    """``investo up --database URL --no-bots`` on a free port; its output goes to a file."""

    def __init__(self, data_dir: Path, database_url: str) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.port = _free_port()
        self.log_path = data_dir.with_name("server.log")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 30.0) -> None:
        command = [
            sys.executable, "-m", "investo.cli", "up", "--no-bots", "--port", str(self.port),
            "--data-dir", str(self.data_dir), "--database", self.database_url,
        ]  # fmt: skip
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"investo up exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).json().get("ready") is True:
                    return
            except (httpx.TransportError, ValueError):
                pass
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"investo up not ready after {timeout:.0f} s:\n{self.output()}")
            time.sleep(0.1)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"investo up did not stop on SIGTERM:\n{self.output()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


async def _history(client: InvestoClient) -> dict[str, Any]:
    """What the SQL history serves to one user (and publicly) about SYMBOL."""
    mine = await client.my_trades(SYMBOL)
    return {
        "allOrders": await client.signed("GET", "/api/v3/allOrders", symbol=SYMBOL),
        "myTrades": mine,
        "trades": await client.public("GET", "/api/v3/trades", symbol=SYMBOL),
        "klines": await client.public("GET", "/api/v3/klines", **_hour_of(mine[-1]["time"])),
    }


def _hour_of(time_ms: int) -> dict[str, Any]:
    """The klines query for the hour of ``time_ms`` alone (whatever the clock says now)."""
    return {"symbol": SYMBOL, "interval": "1h", "endTime": time_ms}


async def _trade(url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Bob rests two asks, Alice takes one and part of the other; the history both then see."""
    (alice_key, _), (bob_key, _) = generate_key_pair(), generate_key_pair()
    async with InvestoClient(url, alice_key) as alice, InvestoClient(url, bob_key) as bob:
        await alice.register("alice")
        await bob.register("bob")
        await alice.claim_demo_funds()
        await bob.claim_demo_funds()
        await bob.place_order(SYMBOL, "SELL", "LIMIT", quantity="5", price="950.00", timeInForce="GTC")
        await bob.place_order(SYMBOL, "SELL", "LIMIT", quantity="5", price="951.50", timeInForce="GTC")
        taken = await alice.place_order(
            SYMBOL, "BUY", "LIMIT", quantity="7", price="951.50", timeInForce="IOC"
        )
        assert taken["status"] == "FILLED" and Decimal(taken["executedQty"]) == 7
        return await _history(alice), await _history(bob)


async def _rows(database_url: str) -> dict[str, int]:
    db = make_engine(database_url)
    try:
        async with db.connect() as conn:
            counts = {
                model.__tablename__: int(await conn.scalar(select(func.count()).select_from(model)) or 0)
                for model in (User, Order, Trade)
            }
            counts["watermark"] = int(
                await conn.scalar(text("SELECT log_offset FROM writer_progress WHERE name = 'embedded'")) or 0
            )
            counts["cum_quote"] = int(await conn.scalar(select(func.sum(Order.cum_quote_qty))) or 0)
        return counts
    finally:
        await db.dispose()


def test_investo_up_keeps_its_sql_history_in_postgres(postgres_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    up = Up(data_dir, postgres_url)
    try:
        up.start()
        alice, bob = asyncio.run(_trade(up.url))
        offset = httpx.get(f"{up.url}/api/v1/investo/state").json()["offset"]
        assert [(t["price"], t["qty"], t["isBuyer"]) for t in alice["myTrades"]] == [
            ("950.00000000", "5.00000000", True),
            ("951.50000000", "2.00000000", True),
        ]
        assert [t["isMaker"] for t in bob["myTrades"]] == [True, True]
        assert [(o["status"], o["executedQty"]) for o in bob["allOrders"]] == [
            ("FILLED", "5.00000000"),
            ("PARTIALLY_FILLED", "2.00000000"),
        ]
        (kline,) = alice["klines"]
        assert (kline[2], kline[3], kline[5], kline[8]) == ("951.50000000", "950.00000000", "7.00000000", 2)
        assert Decimal(kline[7]) == Decimal("950.00") * 5 + Decimal("951.50") * 2  # quote volume, exact
        ticker = httpx.get(f"{up.url}/api/v3/ticker/24hr", params={"symbol": SYMBOL}).json()
        assert (ticker["volume"], ticker["count"]) == ("7.00000000", 2)
        assert up.terminate() in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM once stopped
        assert not (data_dir / "history.db").exists()  # the history went to Postgres only
        rows = asyncio.run(_rows(postgres_url))
        assert rows == {
            "users": 2,
            "orders": 3,
            "trades": 2,
            "watermark": rows["watermark"],
            "cum_quote": 2 * (95_000 * 5 + 95_150 * 2),  # paise: the taker's and the makers' sides
        }
        assert rows["watermark"] >= offset > 0

        up.start()  # the same data dir (log, snapshot) and the same database
        again = httpx.get(f"{up.url}/api/v3/trades", params={"symbol": SYMBOL}).json()
        assert again == alice["trades"]
        klines = httpx.get(f"{up.url}/api/v3/klines", params=_hour_of(again[-1]["time"])).json()
        assert klines == alice["klines"]
        assert up.terminate() in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM once stopped
        assert asyncio.run(_rows(postgres_url)) == rows  # the restart replayed nothing into SQL twice
    finally:
        up.kill()

    result = CliRunner().invoke(app, ["candles", "rebuild", "--database", postgres_url])
    assert result.exit_code == 0, result.output
    assert "rebuilt 8 candles" in result.output  # one per interval: every trade in one minute
