"""The built-in bots against a real `investo up` process on a free loopback port.

* bots on (the default): within seconds both markets have resting bids and asks, trades happen
  and keep happening, and the book is never crossed;
* ``--no-bots``: the book is empty; a fleet run in-process against that server then trades,
  and every trade has two different users on its two sides (read back through each bot's own
  signed ``myTrades``), no maker's open orders ever cross each other, and stopping the fleet
  cancels the makers' orders.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from investo.bots import BotConfig, BotFleet
from investo.bots.quoting import OpenOrder, crossed
from investo.client import ApiError
from serving import free_port

SYMBOLS = ("TATAINR", "ZOMATOINR")


class UpProcess:
    def __init__(self, data_dir: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.with_name(data_dir.name + ".log")
        command = [sys.executable, "-m", "investo.cli", "up", "--port", str(self.port),
                   "--data-dir", str(data_dir), *args]  # fmt: skip
        with self.log.open("wb") as out:
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.http = httpx.Client(base_url=self.url, timeout=5)
        deadline = time.monotonic() + 20
        while True:
            assert self.proc.poll() is None, f"investo up exited:\n{self.log.read_text()}"
            try:
                if self.http.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"investo up not ready:\n{self.log.read_text()}"
            time.sleep(0.1)

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def depth(self, symbol: str) -> tuple[list[Decimal], list[Decimal]]:
        book = self.get("/api/v3/depth", symbol=symbol, limit=100)
        return [Decimal(p) for p, _ in book["bids"]], [Decimal(p) for p, _ in book["asks"]]

    def trades(self, symbol: str) -> list[dict[str, Any]]:
        trades: list[dict[str, Any]] = self.get("/api/v3/trades", symbol=symbol, limit=1000)
        return trades

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def up(tmp_path: Path) -> Iterator[list[UpProcess]]:
    started: list[UpProcess] = []
    yield started
    for process in started:
        process.stop()


def assert_not_crossed(bids: list[Decimal], asks: list[Decimal]) -> None:
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
    if bids and asks:
        assert bids[0] < asks[0], f"crossed book: best bid {bids[0]} >= best ask {asks[0]}"


def test_investo_up_runs_bots_that_keep_both_markets_alive(up: list[UpProcess], tmp_path: Path) -> None:
    server = UpProcess(tmp_path / "data")
    up.append(server)
    deadline = time.monotonic() + 12
    while True:
        books = {s: server.depth(s) for s in SYMBOLS}
        for bids, asks in books.values():
            assert_not_crossed(bids, asks)
        counts = {s: len(server.trades(s)) for s in SYMBOLS}
        if all(b and a for b, a in books.values()) and all(counts.values()):
            break
        assert time.monotonic() < deadline, f"no live markets yet: {books} {counts}\n{server.log.read_text()}"
        time.sleep(0.25)
    for _ in range(8):  # the book stays uncrossed and two-sided while trades keep coming
        time.sleep(0.25)
        for symbol in SYMBOLS:
            bids, asks = server.depth(symbol)
            assert bids and asks
            assert_not_crossed(bids, asks)
    later = {s: len(server.trades(s)) for s in SYMBOLS}
    assert all(later[s] > counts[s] for s in SYMBOLS), (counts, later)
    ticker = server.get("/api/v3/ticker/24hr", symbol="TATAINR")
    assert int(ticker["count"]) >= later["TATAINR"]
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "data" / "bots").iterdir()).count("mm") == 4


async def test_no_bots_gives_an_empty_book_and_a_fleet_never_trades_with_itself(
    up: list[UpProcess], tmp_path: Path
) -> None:
    server = UpProcess(tmp_path / "data", "--no-bots")
    up.append(server)
    time.sleep(1.0)  # bots, were they on, would have quoted by now
    for symbol in SYMBOLS:
        assert server.depth(symbol) == ([], [])
        assert server.trades(symbol) == []

    config = BotConfig(seed=7, makers=2, traders=2, trader_rate=4.0, requote_interval_s=0.3)
    fleet = BotFleet(server.url, config)
    task = asyncio.create_task(fleet.run())
    try:
        await asyncio.wait_for(fleet.ready.wait(), 10)
        deadline = time.monotonic() + 15
        while min([len(await asyncio.to_thread(server.trades, s)) for s in SYMBOLS]) < 5:
            assert not task.done(), task
            assert time.monotonic() < deadline, "the in-process fleet made too few trades"
            for maker in fleet.makers:  # a maker's own quotes never cross each other
                if maker.user.client.api_key is not None:
                    try:
                        orders = await maker.user.client.open_orders(maker.market.symbol)
                    except ApiError as error:  # the maker signed the same query in the same ms
                        assert error.code == -1022, error
                        continue
                    assert not crossed(OpenOrder.from_json(maker.market, o) for o in orders)
            await asyncio.sleep(0.3)

        public = {(s, int(t["id"])) for s in SYMBOLS for t in await asyncio.to_thread(server.trades, s)}
        sides: dict[tuple[str, int], list[str]] = {}  # read after `public`: holds all of its trades
        for user in fleet.users:
            for symbol in SYMBOLS:
                for trade in await user.client.my_trades(symbol, limit=1000):
                    sides.setdefault((symbol, int(trade["id"])), []).append(user.name)
        assert public <= set(sides), "every trade is between bots here"
        for key in public:
            assert len(sides[key]) == 2 and len(set(sides[key])) == 2, f"self trade {key}: {sides[key]}"
        assert all(m.placed > 0 for m in fleet.makers) and all(t.sent > 0 for t in fleet.traders)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    for symbol in SYMBOLS:  # cancel_on_stop: only what noise traders never rest is left: nothing
        assert server.depth(symbol) == ([], [])
