"""ccxt.pro's ``binance`` (async, unchanged) streaming from a real `investo up` with its bots ON.

``urls["api"]["ws"]["spot"]`` points at ``ws://127.0.0.1:PORT/ws`` (ccxt.pro opens
``…/ws/<n>`` and sends ``SUBSCRIBE`` with an id); REST as in test_ccxt.py. The order book is
watched for ``INVESTO_BUSY_SECONDS`` of bot traffic (ccxt checks every diff's ``U``/``u``
itself) and must then equal ``/api/v3/depth`` at the same update id; trades (watched first,
on the same exchange object, which once timed out), candles and the ticker arrive.

Private streams (quiet server): ccxt.pro's spot ``watch_orders`` / ``watch_balance`` /
``watch_my_trades`` use no REST listen key: they open ``urls["api"]["ws"]["ws-api"]["spot"]``
(Binance's WebSocket API, ``ws://127.0.0.1:PORT/ws-api/v3``) and send a *signed*
``userDataStream.subscribe.signature``, which Investo checks like any signed call.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest
from harness import BUSY_SECONDS, IN_CI, SYMBOL, Account, Api, Server, anew_user

try:
    import ccxt.pro
except ImportError:  # pragma: no cover - ccxt is a dev dependency
    if IN_CI:
        raise
    pytest.skip("ccxt is not installed", allow_module_level=True)

TOP = 20


def ccxt_pro_binance(server: Server, account: Account | None = None) -> Any:
    keys = {"apiKey": account.api_key, "secret": account.pem} if account else {}
    exchange = ccxt.pro.binance(
        {
            **keys,
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
    exchange.urls["api"]["ws"]["ws-api"]["spot"] = f"ws://127.0.0.1:{server.port}/ws-api/v3"
    return exchange


def _levels(levels: list[Any]) -> list[tuple[float, float]]:
    return [(float(p), float(q)) for p, q, *_ in levels[:TOP]]


async def test_ccxt_pro_streams_a_busy_market(busy: Server, busy_api: Api) -> None:
    exchange = ccxt_pro_binance(busy)
    exchange.urls["api"]["ws"]["spot"] = busy.market_ws("/ws")  # investo ws when distributed
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


async def test_ccxt_pro_watches_orders_balance_and_my_trades(server: Server, api: Api) -> None:
    trader, maker = await anew_user(server.base_url), await anew_user(server.base_url)
    exchange = ccxt_pro_binance(server, trader)
    try:
        await exchange.load_markets()
        pair = exchange.markets_by_id[SYMBOL][0]["symbol"]
        await asyncio.wait_for(exchange.authenticate(), 10)  # the signed subscription, acknowledged
        assert exchange.urls["api"]["ws"]["ws-api"]["spot"] in exchange.clients
        assert exchange.safe_dict(exchange.options, "spot", {}).get("listenKey") is None  # no REST key
        orders = asyncio.ensure_future(exchange.watch_orders(pair))
        balance = asyncio.ensure_future(exchange.watch_balance())
        trades = asyncio.ensure_future(exchange.watch_my_trades(pair))
        await asyncio.sleep(0.3)

        bid = await exchange.create_order(pair, "limit", "buy", 2, 980)
        seen = await asyncio.wait_for(orders, 10)
        assert [(o["id"], o["status"], o["price"], o["amount"]) for o in seen] == [
            (bid["id"], "open", 980.0, 2.0)
        ]
        held = await asyncio.wait_for(balance, 10)
        assert held["INR"]["used"] == float(Decimal(1960) * Decimal("1.002"))  # notional + taker fee
        assert not trades.done()

        orders = asyncio.ensure_future(exchange.watch_orders(pair))
        balance = asyncio.ensure_future(exchange.watch_balance())
        await asyncio.to_thread(api.order, maker, side="SELL", type="MARKET", quantity="2")
        mine = await asyncio.wait_for(trades, 10)
        assert [(t["order"], t["side"], t["price"], t["amount"]) for t in mine] == [
            (bid["id"], "buy", 980.0, 2.0)
        ]
        assert mine[0]["takerOrMaker"] == "maker" and mine[0]["fee"]["currency"] == "INR"
        done = await asyncio.wait_for(orders, 10)
        assert (done[-1]["id"], done[-1]["status"], done[-1]["filled"]) == (bid["id"], "closed", 2.0)
        after = await asyncio.wait_for(balance, 10)
        rest = await asyncio.to_thread(api.balances, trader)
        for asset in ("INR", "TATA"):
            assert (after[asset]["free"], after[asset]["used"]) == tuple(float(v) for v in rest[asset])
    finally:
        await exchange.close()
