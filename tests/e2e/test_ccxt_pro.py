"""ccxt.pro's ``binance`` (async, unchanged) streaming from a real `investo up` with its bots ON.

``urls["api"]["ws"]["spot"]`` points at ``ws://127.0.0.1:PORT/ws`` (ccxt.pro opens
``…/ws/<n>`` and sends ``SUBSCRIBE`` with an id); REST as in test_ccxt.py. The order book is
watched for ``INVESTO_BUSY_SECONDS`` of bot traffic (ccxt checks every diff's ``U``/``u``
itself) and must then equal ``/api/v3/depth`` at the same update id; trades (watched first,
on the same exchange object, which once timed out), candles and the ticker arrive.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from harness import BUSY_SECONDS, IN_CI, SYMBOL, Api, Server

try:
    import ccxt.pro
except ImportError:  # pragma: no cover - ccxt is a dev dependency
    if IN_CI:
        raise
    pytest.skip("ccxt is not installed", allow_module_level=True)

TOP = 20


def ccxt_pro_binance(server: Server) -> Any:
    exchange = ccxt.pro.binance(
        {
            "enableRateLimit": False,
            "options": {
                "fetchMarkets": {"types": ["spot"]},
                "fetchCurrencies": False,
                "fetchMargins": False,
                "adjustForTimeDifference": False,
            },
        }
    )
    base = server.base_url
    for name in list(exchange.urls["api"]):
        if name != "ws":
            exchange.urls["api"][name] = f"{base}/not-spot/{name}"
    exchange.urls["api"]["public"] = exchange.urls["api"]["private"] = base + "/api/v3"
    exchange.urls["api"]["ws"]["spot"] = f"ws://127.0.0.1:{server.port}/ws"
    return exchange


def _levels(levels: list[Any]) -> list[tuple[float, float]]:
    return [(float(p), float(q)) for p, q, *_ in levels[:TOP]]


async def test_ccxt_pro_streams_a_busy_market(busy: Server, busy_api: Api) -> None:
    exchange = ccxt_pro_binance(busy)
    try:
        await exchange.load_markets()
        symbol = exchange.markets_by_id[SYMBOL][0]["symbol"]
        trades = await asyncio.wait_for(exchange.watch_trades(symbol), 20)  # before the order book
        assert trades and all(t["symbol"] == symbol and t["price"] > 0 for t in trades)

        history: dict[int, tuple[list[tuple[float, float]], list[tuple[float, float]]]] = {}
        deadline = time.monotonic() + BUSY_SECONDS
        updates = 0
        while time.monotonic() < deadline:
            book = await asyncio.wait_for(exchange.watch_order_book(symbol), 20)
            updates += 1
            bids, asks = _levels(book["bids"]), _levels(book["asks"])
            if bids and asks:
                assert bids[0][0] < asks[0][0], "crossed book"
        assert updates > 5, updates

        matched = 0
        async with httpx.AsyncClient(base_url=busy.base_url) as http:
            for _ in range(40):
                rest = (await http.get("/api/v3/depth", params={"symbol": SYMBOL, "limit": TOP})).json()
                at = rest["lastUpdateId"]
                nonce = 0
                while nonce < at:
                    book = await asyncio.wait_for(exchange.watch_order_book(symbol), 20)
                    nonce = book["nonce"]
                    history[nonce] = (_levels(book["bids"]), _levels(book["asks"]))
                if at in history:
                    assert history[at] == (_levels(rest["bids"]), _levels(rest["asks"])), f"differ at {at}"
                    matched += 1
                    if matched >= 3:
                        break
        assert matched, "never caught the watched book at the REST update id"

        candles = await asyncio.wait_for(exchange.watch_ohlcv(symbol, "1m"), 20)
        assert candles and len(candles[-1]) == 6 and candles[-1][4] > 0
        ticker = await asyncio.wait_for(exchange.watch_ticker(symbol), 20)
        assert ticker["symbol"] == symbol and ticker["last"] > 0
        trades = await asyncio.wait_for(exchange.watch_trades(symbol), 20)
        assert trades
    finally:
        await exchange.close()
