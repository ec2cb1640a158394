"""Every REST endpoint of a real `investo up`, over HTTP: Binance's field names, decimal strings, semantics.

One server for the module. Each test makes its own funded users (``make_user``), whose open
orders are canceled when the test ends, so every test starts from an empty book; market
data tests compare against the market's whole trade list rather than assume they are alone.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from decimal import ROUND_DOWN, Decimal
from typing import Any

from harness import (
    DEMO_INR,
    DEMO_SHARES,
    MAKER_BPS,
    OTHER_SYMBOL,
    SYMBOL,
    TAKER_BPS,
    Account,
    Api,
    Server,
    binance_error,
    ok,
    sign,
    unique_name,
)

from investo.security.signing import generate_key_pair, public_key_to_pem, sign_params

D = Decimal
MakeUser = Callable[..., Account]

ACK_FIELDS = {"symbol", "orderId", "orderListId", "clientOrderId", "transactTime"}
RESULT_FIELDS = ACK_FIELDS | {
    "price", "origQty", "executedQty", "origQuoteOrderQty", "cummulativeQuoteQty", "status",
    "timeInForce", "type", "side", "workingTime", "selfTradePreventionMode",
}  # fmt: skip
FULL_FIELDS = RESULT_FIELDS | {"fills"}
FILL_FIELDS = {"price", "qty", "commission", "commissionAsset", "tradeId"}
ORDER_FIELDS = {
    "symbol", "orderId", "orderListId", "clientOrderId", "price", "origQty", "executedQty",
    "cummulativeQuoteQty", "status", "timeInForce", "type", "side", "stopPrice", "icebergQty", "time",
    "updateTime", "isWorking", "workingTime", "origQuoteOrderQty", "selfTradePreventionMode",
}  # fmt: skip
CANCEL_FIELDS = {
    "symbol", "origClientOrderId", "orderId", "orderListId", "clientOrderId", "transactTime", "price",
    "origQty", "executedQty", "cummulativeQuoteQty", "status", "timeInForce", "type", "side",
    "origQuoteOrderQty", "selfTradePreventionMode",
}  # fmt: skip
MY_TRADE_FIELDS = {
    "symbol", "id", "orderId", "orderListId", "price", "qty", "quoteQty", "commission",
    "commissionAsset", "time", "isBuyer", "isMaker", "isBestMatch",
}  # fmt: skip
TRADE_FIELDS = {"id", "price", "qty", "quoteQty", "time", "isBuyerMaker", "isBestMatch"}
TICKER_FIELDS = {
    "symbol", "priceChange", "priceChangePercent", "weightedAvgPrice", "prevClosePrice", "lastPrice",
    "lastQty", "bidPrice", "bidQty", "askPrice", "askQty", "openPrice", "highPrice", "lowPrice", "volume",
    "quoteVolume", "openTime", "closeTime", "firstId", "lastId", "count",
}  # fmt: skip
ACCOUNT_FIELDS = {
    "makerCommission", "takerCommission", "buyerCommission", "sellerCommission", "commissionRates",
    "canTrade", "canWithdraw", "canDeposit", "brokered", "requireSelfTradePrevention", "preventSor",
    "updateTime", "accountType", "balances", "permissions", "uid",
}  # fmt: skip
DECIMAL8 = re.compile(r"^[0-9]+\.[0-9]{8}$")


def f8(value: Decimal | int | str) -> str:
    """Binance's decimal string: fixed point, 8 decimals."""
    return f"{D(value):.8f}"


def fee(notional: Decimal, bps: int) -> Decimal:
    """Investo's fee on a notional in INR: bps of it, rounded down to the paisa."""
    return (notional * bps / 10_000).quantize(D("0.01"), rounding=ROUND_DOWN)


def buy_hold(price: str, qty: int) -> Decimal:
    """What a resting LIMIT BUY holds: notional plus the highest fee it may pay (taker)."""
    notional = D(price) * qty
    return notional + fee(notional, max(MAKER_BPS, TAKER_BPS))


def assert_decimal_strings(body: dict[str, Any], *names: str) -> None:
    for name in names:
        assert DECIMAL8.match(body[name]), f"{name}={body[name]!r} is not an 8-decimal string"


# --------------------------------------------------------------------------------------------
# Public endpoints
# --------------------------------------------------------------------------------------------


def test_ping_time_health_metrics(api: Api) -> None:
    assert api.public("/api/v3/ping") == {}
    server_time = api.public("/api/v3/time")
    assert set(server_time) == {"serverTime"} and type(server_time["serverTime"]) is int
    assert abs(server_time["serverTime"] - time.time() * 1000) < 5_000
    health = ok(api.get("/health"))
    assert health["status"] == "ok" and health["live"] is True and health["ready"] is True
    assert type(health["offset"]) is int
    metrics = api.get("/metrics")
    assert metrics.status_code == 200 and "investo_http_requests" in metrics.text


def test_exchange_info_all_markets(api: Api) -> None:
    info = api.public("/api/v3/exchangeInfo")
    assert {"timezone", "serverTime", "rateLimits", "exchangeFilters", "symbols"} <= set(info)
    assert info["timezone"] == "UTC" and info["exchangeFilters"] == []
    assert {
        "rateLimitType": "REQUEST_WEIGHT",
        "interval": "MINUTE",
        "intervalNum": 1,
        "limit": 60_000,
    } in info["rateLimits"]
    assert {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 10_000} in info[
        "rateLimits"
    ]
    by_symbol = {s["symbol"]: s for s in info["symbols"]}
    assert set(by_symbol) == {SYMBOL, OTHER_SYMBOL}
    tata = by_symbol[SYMBOL]
    assert (tata["status"], tata["baseAsset"], tata["quoteAsset"]) == ("TRADING", "TATA", "INR")
    assert tata["orderTypes"] == ["LIMIT", "LIMIT_MAKER", "MARKET"]
    assert tata["permissions"] == ["SPOT"] and tata["permissionSets"] == [["SPOT"]]
    assert tata["isSpotTradingAllowed"] is True and tata["quoteOrderQtyMarketAllowed"] is True
    assert tata["baseAssetPrecision"] == 8 and tata["quoteAssetPrecision"] == 8
    assert tata["defaultSelfTradePreventionMode"] == "EXPIRE_MAKER"
    assert set(tata["allowedSelfTradePreventionModes"]) == {
        "NONE",
        "EXPIRE_TAKER",
        "EXPIRE_MAKER",
        "EXPIRE_BOTH",
    }
    filters = tata["filters"]
    assert [f["filterType"] for f in filters] == ["PRICE_FILTER", "LOT_SIZE", "NOTIONAL"]
    assert filters[0] == {
        "filterType": "PRICE_FILTER",
        "minPrice": "0.05000000",
        "maxPrice": "100000.00000000",
        "tickSize": "0.05000000",
    }
    assert filters[1] == {
        "filterType": "LOT_SIZE",
        "minQty": "1.00000000",
        "maxQty": "1000000.00000000",
        "stepSize": "1.00000000",
    }
    assert filters[2]["minNotional"] == "10.00000000"
    assert filters[2]["applyMinToMarket"] is False
    assert by_symbol[OTHER_SYMBOL]["filters"][0]["tickSize"] == "0.01000000"


def test_exchange_info_symbol_and_symbols(api: Api) -> None:
    one = api.public("/api/v3/exchangeInfo", symbol=SYMBOL)
    assert [s["symbol"] for s in one["symbols"]] == [SYMBOL]
    both = api.public("/api/v3/exchangeInfo", symbols=f'["{OTHER_SYMBOL}","{SYMBOL}"]')
    assert [s["symbol"] for s in both["symbols"]] == [OTHER_SYMBOL, SYMBOL]
    single = api.public("/api/v3/exchangeInfo", symbols=f'["{SYMBOL}"]')
    assert [s["symbol"] for s in single["symbols"]] == [SYMBOL]
    binance_error(api.get("/api/v3/exchangeInfo", {"symbol": "NOPEINR"}), -1121)
    binance_error(api.get("/api/v3/exchangeInfo", {"symbols": f'["{SYMBOL}","NOPEINR"]'}), -1121)


def test_depth_levels_limit_and_update_id(api: Api, make_user: MakeUser) -> None:
    seller, buyer = make_user(), make_user()
    before = api.depth()
    assert set(before) == {"lastUpdateId", "bids", "asks"}
    assert before["bids"] == [] and before["asks"] == [], "the book should be empty between tests"
    update_ids = [before["lastUpdateId"]]
    for account, side, qty, price in [
        (seller, "SELL", "2", "1001"),
        (seller, "SELL", "3", "1001.00"),
        (seller, "SELL", "1", "1002.5"),
        (buyer, "BUY", "4", "999.95"),
        (buyer, "BUY", "2", "999"),
    ]:
        api.limit(account, side, qty, price)
        update_ids.append(api.depth()["lastUpdateId"])
    assert update_ids == sorted(set(update_ids)), f"lastUpdateId must rise with every order: {update_ids}"
    book = api.depth()
    assert book["asks"] == [["1001.00000000", "5.00000000"], ["1002.50000000", "1.00000000"]]
    assert book["bids"] == [["999.95000000", "4.00000000"], ["999.00000000", "2.00000000"]]
    top = api.depth(limit=1)
    assert top["asks"] == book["asks"][:1] and top["bids"] == book["bids"][:1]
    assert api.public("/api/v3/ticker/bookTicker", symbol=SYMBOL) == {
        "symbol": SYMBOL,
        "bidPrice": "999.95000000",
        "bidQty": "4.00000000",
        "askPrice": "1001.00000000",
        "askQty": "5.00000000",
    }
    api.cancel_all(buyer)
    after_cancel = api.depth()
    assert after_cancel["bids"] == [] and after_cancel["lastUpdateId"] > update_ids[-1]
    other = api.depth(OTHER_SYMBOL)
    assert other["asks"] == [] and other["bids"] == []


def test_trades_and_agg_trades(api: Api, make_user: MakeUser) -> None:
    maker, taker = make_user(), make_user()
    api.limit(maker, "SELL", "2", "1010")
    api.limit(maker, "SELL", "3", "1010")
    api.limit(maker, "SELL", "1", "1010.5")
    bought = api.order(taker, side="BUY", type="MARKET", quantity="6")
    assert bought["status"] == "FILLED" and len(bought["fills"]) == 3
    trades = api.public("/api/v3/trades", symbol=SYMBOL, limit=3)
    assert all(set(t) == TRADE_FIELDS for t in trades)
    assert [(t["price"], t["qty"], t["quoteQty"]) for t in trades] == [
        ("1010.00000000", "2.00000000", "2020.00000000"),
        ("1010.00000000", "3.00000000", "3030.00000000"),
        ("1010.50000000", "1.00000000", "1010.50000000"),
    ]
    ids = [t["id"] for t in trades]
    assert ids == [f["tradeId"] for f in bought["fills"]] and ids == list(range(ids[0], ids[0] + 3))
    assert all(t["isBuyerMaker"] is False and t["isBestMatch"] is True for t in trades)
    assert all(t["time"] == bought["transactTime"] for t in trades)
    assert api.public("/api/v3/trades", symbol=SYMBOL, limit=1) == trades[-1:]

    aggs = api.public("/api/v3/aggTrades", symbol=SYMBOL, limit=2)
    assert all(set(a) == {"a", "p", "q", "f", "l", "T", "m", "M"} for a in aggs)
    assert [(a["p"], a["q"], a["f"], a["l"], a["m"]) for a in aggs] == [
        ("1010.00000000", "5.00000000", ids[0], ids[1], False),
        ("1010.50000000", "1.00000000", ids[2], ids[2], False),
    ]
    # Investo numbers an aggregate by its first trade id (Binance: a sequence of its own)
    assert [a["a"] for a in aggs] == [ids[0], ids[2]] and aggs[0]["T"] == bought["transactTime"]
    assert api.public("/api/v3/aggTrades", symbol=SYMBOL, fromId=aggs[0]["a"], limit=1) == aggs[:1]

    # a seller taking a resting bid: the buyer is the maker
    api.limit(maker, "BUY", "1", "1000")
    api.order(taker, side="SELL", type="MARKET", quantity="1")
    last = api.public("/api/v3/trades", symbol=SYMBOL, limit=1)[0]
    assert (last["price"], last["isBuyerMaker"], last["id"]) == ("1000.00000000", True, ids[2] + 1)
    assert api.public("/api/v3/aggTrades", symbol=SYMBOL, limit=1)[0]["m"] is True


def _all_trades(api: Api, symbol: str = SYMBOL) -> list[dict[str, Any]]:
    trades = api.public("/api/v3/trades", symbol=symbol, limit=1000)
    assert len(trades) < 1000, "this module makes fewer than 1000 trades"
    ids = [t["id"] for t in trades]
    assert ids == list(range(1, len(ids) + 1)), "trade ids are contiguous from 1 within a market"
    return list(trades)


def _candles_from(trades: list[dict[str, Any]], length_ms: int) -> dict[int, list[Any]]:
    """Expected candles by open time: [open, high, low, close, volume, quote volume, count]."""
    out: dict[int, list[Any]] = {}
    for t in trades:
        price, qty, quote = D(t["price"]), D(t["qty"]), D(t["quoteQty"])
        start = t["time"] - t["time"] % length_ms
        c = out.setdefault(start, [price, price, price, price, D(0), D(0), 0])
        c[1], c[2], c[3] = max(c[1], price), min(c[2], price), price
        c[4] += qty
        c[5] += quote
        c[6] += 1
    return out


def test_klines_match_the_trades(api: Api, make_user: MakeUser) -> None:
    maker, taker = make_user(), make_user()
    api.limit(maker, "SELL", "1", "1111.05")
    api.order(taker, side="BUY", type="MARKET", quantity="1")
    trades = _all_trades(api)
    for interval, length in (("1m", 60_000), ("1h", 3_600_000)):
        expected = _candles_from(trades, length)
        first = min(expected)
        candles = api.public("/api/v3/klines", symbol=SYMBOL, interval=interval, startTime=first, limit=1000)
        assert candles[0][0] == first
        previous_close = None
        for candle in candles:
            assert len(candle) == 12
            open_time, o, h, low, c, volume, close_time, quote_volume, count = candle[:9]
            assert close_time == open_time + length - 1
            assert candle[9:] == ["0.00000000", "0.00000000", "0"]
            assert all(DECIMAL8.match(x) for x in (o, h, low, c, volume, quote_volume))
            if open_time in expected:
                assert [D(o), D(h), D(low), D(c), D(volume), D(quote_volume), count] == expected[open_time]
            else:  # an interval without trades: the previous close, nothing traded
                assert (o, h, low, c, volume, count) == (previous_close,) * 4 + ("0.00000000", 0)
            previous_close = c
        assert candles[-1][4] == trades[-1]["price"]
        assert {c[0] for c in candles} >= set(expected)

    now_minute = trades[-1]["time"] - trades[-1]["time"] % 60_000
    last = api.public("/api/v3/klines", symbol=SYMBOL, interval="1m", limit=1)
    assert len(last) == 1 and last[0][0] >= now_minute
    window = api.public(
        "/api/v3/klines", symbol=SYMBOL, interval="1m", startTime=now_minute, endTime=now_minute + 59_999
    )
    assert [c[0] for c in window] == [now_minute] and window[0][4] == trades[-1]["price"]
    first_trade = trades[0]["time"]
    assert api.public("/api/v3/klines", symbol=SYMBOL, interval="1m", endTime=first_trade - 60_000) == []
    assert (
        api.public(
            "/api/v3/klines", symbol=SYMBOL, interval="1m", startTime=int(time.time() * 1000) + 120_000
        )
        == []
    )
    first_minute = first_trade - first_trade % 60_000
    two = api.public("/api/v3/klines", symbol=SYMBOL, interval="1m", startTime=first_minute, limit=2)
    assert 1 <= len(two) <= 2 and two[0][0] == first_minute
    later = api.public("/api/v3/klines", symbol=SYMBOL, interval="1m", startTime=first_minute + 1)
    assert all(c[0] >= first_minute + 60_000 for c in later), "only candles opening at or after startTime"
    binance_error(api.get("/api/v3/klines", {"symbol": SYMBOL, "interval": "2m"}), -1120)


def test_tickers_and_avg_price(api: Api, make_user: MakeUser) -> None:
    maker, taker = make_user(), make_user()
    api.limit(maker, "SELL", "2", "1005")
    api.order(taker, side="BUY", type="MARKET", quantity="1")
    api.limit(taker, "BUY", "3", "998.5")
    trades = _all_trades(api)
    ticker = api.public("/api/v3/ticker/24hr", symbol=SYMBOL)
    assert set(ticker) == TICKER_FIELDS
    prices = [D(t["price"]) for t in trades]
    volume = sum(D(t["qty"]) for t in trades)
    quote_volume = sum(D(t["quoteQty"]) for t in trades)
    assert ticker["symbol"] == SYMBOL
    assert ticker["lastPrice"] == "1005.00000000" and ticker["lastQty"] == "1.00000000"
    assert ticker["openPrice"] == trades[0]["price"]
    assert ticker["highPrice"] == f8(max(prices)) and ticker["lowPrice"] == f8(min(prices))
    assert ticker["volume"] == f8(volume) and ticker["quoteVolume"] == f8(quote_volume)
    assert (ticker["firstId"], ticker["lastId"], ticker["count"]) == (1, len(trades), len(trades))
    change = D(ticker["lastPrice"]) - D(ticker["openPrice"])
    assert D(ticker["priceChange"]) == change
    assert ticker["priceChangePercent"] == f"{change * 100 / D(ticker['openPrice']):.3f}"
    weighted = (quote_volume / volume).quantize(D("0.00000001"), rounding=ROUND_DOWN)
    assert ticker["weightedAvgPrice"] == f8(weighted)
    assert (ticker["bidPrice"], ticker["bidQty"]) == ("998.50000000", "3.00000000")
    assert (ticker["askPrice"], ticker["askQty"]) == ("1005.00000000", "1.00000000")
    assert ticker["closeTime"] - ticker["openTime"] == 86_400_000
    assert re.fullmatch(r"-?[0-9]+\.[0-9]{8}", ticker["priceChange"])
    assert_decimal_strings(ticker, "weightedAvgPrice", "prevClosePrice", "bidQty", "volume", "quoteVolume")

    every = api.public("/api/v3/ticker/24hr")
    assert isinstance(every, list) and {t["symbol"] for t in every} == {SYMBOL, OTHER_SYMBOL}
    assert [t["symbol"] for t in api.public("/api/v3/ticker/24hr", symbols=f'["{SYMBOL}"]')] == [SYMBOL]

    assert api.public("/api/v3/ticker/price", symbol=SYMBOL) == {"symbol": SYMBOL, "price": "1005.00000000"}
    prices_all = api.public("/api/v3/ticker/price")
    assert {p["symbol"] for p in prices_all} == {SYMBOL, OTHER_SYMBOL}
    assert api.public("/api/v3/ticker/price", symbols=f'["{SYMBOL}","{OTHER_SYMBOL}"]') == prices_all

    book = api.public("/api/v3/ticker/bookTicker")
    assert {b["symbol"] for b in book} == {SYMBOL, OTHER_SYMBOL}
    assert next(b for b in book if b["symbol"] == SYMBOL)["askPrice"] == "1005.00000000"

    avg = api.public("/api/v3/avgPrice", symbol=SYMBOL)
    assert set(avg) == {"mins", "price", "closeTime"} and avg["mins"] == 5
    assert DECIMAL8.match(avg["price"]) and type(avg["closeTime"]) is int
    recent = [D(t["price"]) for t in trades if t["time"] >= avg["closeTime"] - 6 * 60_000]
    assert min(recent) <= D(avg["price"]) <= max(recent)


# --------------------------------------------------------------------------------------------
# Trading (signed)
# --------------------------------------------------------------------------------------------


def test_limit_gtc_rests_fills_and_moves_balances(api: Api, make_user: MakeUser) -> None:
    seller, buyer = make_user(), make_user()
    assert api.balances(seller) == {
        "TATA": (DEMO_SHARES, D(0)),
        "INR": (DEMO_INR, D(0)),
        "ZOMATO": (DEMO_SHARES, D(0)),
    }
    sell = api.limit(seller, "SELL", "10", "1000")
    assert set(sell) == FULL_FIELDS and sell["fills"] == []
    assert (sell["status"], sell["price"], sell["origQty"], sell["executedQty"]) == (
        "NEW", "1000.00000000", "10.00000000", "0.00000000",
    )  # fmt: skip
    assert (sell["type"], sell["side"], sell["timeInForce"], sell["orderListId"]) == (
        "LIMIT",
        "SELL",
        "GTC",
        -1,
    )
    assert api.balances(seller)["TATA"] == (DEMO_SHARES - 10, D(10))

    buy = api.limit(buyer, "BUY", "4", "1000")
    assert (buy["status"], buy["executedQty"], buy["cummulativeQuoteQty"]) == (
        "FILLED", "4.00000000", "4000.00000000",
    )  # fmt: skip
    assert buy["fills"] == [
        {
            "price": "1000.00000000",
            "qty": "4.00000000",
            "commission": "8.00000000",
            "commissionAsset": "INR",
            "tradeId": buy["fills"][0]["tradeId"],
        }
    ]
    resting = api.get_order(seller, orderId=sell["orderId"])
    assert (resting["status"], resting["executedQty"], resting["isWorking"]) == (
        "PARTIALLY_FILLED", "4.00000000", True,
    )  # fmt: skip
    assert resting["cummulativeQuoteQty"] == "4000.00000000" and resting["updateTime"] >= resting["time"]
    assert api.balances(seller) == {
        "TATA": (DEMO_SHARES - 10, D(6)),
        "INR": (DEMO_INR + 4000 - fee(D(4000), MAKER_BPS), D(0)),
        "ZOMATO": (DEMO_SHARES, D(0)),
    }
    spent = D(4000) + fee(D(4000), TAKER_BPS)
    assert api.balances(buyer)["INR"] == (DEMO_INR - spent, D(0))
    assert api.balances(buyer)["TATA"] == (DEMO_SHARES + 4, D(0))

    bid = api.limit(buyer, "BUY", "2", "990.05")
    assert bid["status"] == "NEW"
    assert api.balances(buyer)["INR"] == (DEMO_INR - spent - buy_hold("990.05", 2), buy_hold("990.05", 2))
    canceled = api.call("DELETE", "/api/v3/order", buyer, symbol=SYMBOL, orderId=bid["orderId"])
    assert canceled["status"] == "CANCELED"
    assert api.balances(buyer)["INR"] == (DEMO_INR - spent, D(0))


def test_limit_ioc_and_fok(api: Api, make_user: MakeUser) -> None:
    maker, taker = make_user(), make_user()
    ask = api.limit(maker, "SELL", "3", "1000")
    fok = api.limit(taker, "BUY", "5", "1000", timeInForce="FOK")
    assert (fok["status"], fok["executedQty"], fok["fills"], fok["timeInForce"]) == (
        "EXPIRED", "0.00000000", [], "FOK",
    )  # fmt: skip
    assert api.get_order(maker, orderId=ask["orderId"])["executedQty"] == "0.00000000"
    ioc = api.limit(taker, "BUY", "5", "1000", timeInForce="IOC")
    assert (ioc["status"], ioc["executedQty"], ioc["timeInForce"]) == ("EXPIRED", "3.00000000", "IOC")
    assert api.get_order(maker, orderId=ask["orderId"])["status"] == "FILLED"
    empty = api.limit(taker, "BUY", "1", "1000", timeInForce="IOC")
    assert (empty["status"], empty["executedQty"]) == ("EXPIRED", "0.00000000")
    api.limit(maker, "SELL", "2", "1000")
    fok_ok = api.limit(taker, "BUY", "2", "1000", timeInForce="FOK")
    assert (fok_ok["status"], fok_ok["executedQty"]) == ("FILLED", "2.00000000")
    assert api.open_orders(taker) == [] and api.depth()["asks"] == []
    spent = D(5000) + fee(D(3000), TAKER_BPS) + fee(D(2000), TAKER_BPS)
    assert api.balances(taker)["INR"] == (DEMO_INR - spent, D(0)), "IOC/FOK release what they held"


def test_limit_maker_rests_or_is_refused(api: Api, make_user: MakeUser) -> None:
    maker, other = make_user(), make_user()
    placed = api.order(maker, side="SELL", type="LIMIT_MAKER", quantity="2", price="1000")
    assert set(placed) == ACK_FIELDS, "LIMIT_MAKER answers ACK by default"
    shown = api.get_order(maker, orderId=placed["orderId"])
    assert (shown["type"], shown["status"], shown["timeInForce"]) == ("LIMIT_MAKER", "NEW", "GTC")
    before = (api.balances(other), api.state())
    refused = api.signed(
        "POST", "/api/v3/order", other,
        {"symbol": SYMBOL, "side": "BUY", "type": "LIMIT_MAKER", "quantity": "1", "price": "1000"},
    )  # fmt: skip
    assert binance_error(refused, -2010)["msg"] == "Order would immediately match and take."
    assert api.balances(other) == before[0] and api.open_orders(other) == []
    assert api.get_order(maker, orderId=placed["orderId"])["executedQty"] == "0.00000000"
    assert api.state()["offset"] > before[1]["offset"], "the engine refused it: the command is in the log"
    below = api.order(
        other, side="BUY", type="LIMIT_MAKER", quantity="1", price="999.95", newOrderRespType="RESULT"
    )
    assert below["status"] == "NEW" and below["type"] == "LIMIT_MAKER"


def test_market_orders_by_quantity(api: Api, make_user: MakeUser) -> None:
    maker, taker = make_user(), make_user()
    api.limit(maker, "SELL", "2", "1000")
    api.limit(maker, "SELL", "2", "1000.5")
    buy = api.order(taker, side="BUY", type="MARKET", quantity="3")
    assert set(buy) == FULL_FIELDS
    assert (buy["status"], buy["type"], buy["price"], buy["origQty"], buy["executedQty"]) == (
        "FILLED", "MARKET", "0.00000000", "3.00000000", "3.00000000",
    )  # fmt: skip
    assert buy["cummulativeQuoteQty"] == "3000.50000000"
    assert [(f["price"], f["qty"], f["commission"]) for f in buy["fills"]] == [
        ("1000.00000000", "2.00000000", "4.00000000"),
        ("1000.50000000", "1.00000000", "2.00000000"),
    ]
    api.limit(maker, "BUY", "2", "999")
    sell = api.order(taker, side="SELL", type="MARKET", quantity="2")
    assert (sell["status"], sell["executedQty"], sell["cummulativeQuoteQty"]) == (
        "FILLED", "2.00000000", "1998.00000000",
    )  # fmt: skip
    assert sell["fills"][0]["commission"] == "3.99000000"
    inr = DEMO_INR - D("3000.50") - D("6.00") + D(1998) - D("3.99")
    assert api.balances(taker) == {
        "TATA": (DEMO_SHARES + 1, D(0)),
        "INR": (inr, D(0)),
        "ZOMATO": (DEMO_SHARES, D(0)),
    }
    nothing = api.order(taker, side="SELL", type="MARKET", quantity="1")
    assert (nothing["status"], nothing["executedQty"]) == ("EXPIRED", "0.00000000")


def test_market_buy_by_quote_order_qty(api: Api, make_user: MakeUser) -> None:
    maker, taker = make_user(), make_user()
    api.limit(maker, "SELL", "5", "1000")
    buy = api.order(taker, side="BUY", type="MARKET", quoteOrderQty="2500")
    assert (buy["status"], buy["executedQty"], buy["cummulativeQuoteQty"], buy["origQuoteOrderQty"]) == (
        "FILLED", "2.00000000", "2000.00000000", "2500.00000000",
    )  # fmt: skip
    assert buy["fills"][0]["commission"] == "4.00000000"
    assert api.balances(taker)["INR"] == (DEMO_INR - 2004, D(0)), "the unspent budget is released"
    exact = api.order(taker, side="BUY", type="MARKET", quoteOrderQty="1002", newOrderRespType="RESULT")
    assert (exact["executedQty"], exact["cummulativeQuoteQty"]) == ("1.00000000", "1000.00000000")


def test_client_order_ids(api: Api, make_user: MakeUser) -> None:
    account = make_user()
    placed = api.limit(account, "SELL", "1", "1200", newClientOrderId="my-order_1.x")
    assert placed["clientOrderId"] == "my-order_1.x"
    by_client = api.get_order(account, origClientOrderId="my-order_1.x")
    assert by_client["orderId"] == placed["orderId"] and by_client["clientOrderId"] == "my-order_1.x"
    duplicate = api.signed(
        "POST", "/api/v3/order", account,
        {"symbol": SYMBOL, "side": "SELL", "type": "LIMIT", "timeInForce": "GTC", "quantity": "1",
         "price": "1201", "newClientOrderId": "my-order_1.x"},
    )  # fmt: skip
    assert binance_error(duplicate, -2010)["msg"] == "Duplicate order sent."
    canceled = api.call(
        "DELETE",
        "/api/v3/order",
        account,
        symbol=SYMBOL,
        origClientOrderId="my-order_1.x",
        newClientOrderId="cxl-1",
    )
    assert set(canceled) == CANCEL_FIELDS
    assert (canceled["orderId"], canceled["origClientOrderId"], canceled["clientOrderId"]) == (
        placed["orderId"], "my-order_1.x", "cxl-1",
    )  # fmt: skip
    assert canceled["status"] == "CANCELED"
    generated = api.limit(account, "SELL", "1", "1200")
    assert re.fullmatch(r"[.A-Za-z0-9_-]{1,36}", generated["clientOrderId"])
    assert generated["clientOrderId"] != "my-order_1.x"


def test_client_order_id_may_be_reused_once_the_order_is_done(api: Api, make_user: MakeUser) -> None:
    """Binance: newClientOrderId is 'a unique id among open orders'."""
    account = make_user()
    first = api.limit(account, "SELL", "1", "1200", newClientOrderId="again")
    api.call("DELETE", "/api/v3/order", account, symbol=SYMBOL, orderId=first["orderId"])
    second = api.limit(account, "SELL", "1", "1200", newClientOrderId="again")
    assert second["orderId"] != first["orderId"] and second["status"] == "NEW"
    assert api.get_order(account, origClientOrderId="again")["orderId"] == second["orderId"]


def test_self_trade_prevention_modes(api: Api, make_user: MakeUser) -> None:
    me = make_user()
    maker = api.limit(me, "SELL", "2", "1000")
    taker = api.limit(me, "BUY", "1", "1000", selfTradePreventionMode="EXPIRE_TAKER")
    assert (taker["status"], taker["executedQty"], taker["selfTradePreventionMode"]) == (
        "EXPIRED_IN_MATCH", "0.00000000", "EXPIRE_TAKER",
    )  # fmt: skip
    assert api.get_order(me, orderId=maker["orderId"])["status"] == "NEW"
    self_trade = api.limit(me, "BUY", "1", "1000", selfTradePreventionMode="NONE")
    assert (self_trade["status"], self_trade["executedQty"]) == ("FILLED", "1.00000000")
    assert api.get_order(me, orderId=maker["orderId"])["status"] == "PARTIALLY_FILLED"
    default = api.limit(me, "BUY", "1", "1000")
    assert default["selfTradePreventionMode"] == "EXPIRE_MAKER" and default["status"] == "NEW"
    assert api.get_order(me, orderId=maker["orderId"])["status"] == "EXPIRED_IN_MATCH"
    api.cancel_all(me)
    maker2 = api.limit(me, "SELL", "1", "1000")
    both = api.limit(me, "BUY", "1", "1000", selfTradePreventionMode="EXPIRE_BOTH")
    assert both["status"] == "EXPIRED_IN_MATCH"
    assert api.get_order(me, orderId=maker2["orderId"])["status"] == "EXPIRED_IN_MATCH"
    assert api.open_orders(me) == []
    assert all(locked == 0 for _, locked in api.balances(me).values())


def test_new_order_resp_types(api: Api, make_user: MakeUser) -> None:
    maker, taker = make_user(), make_user()
    ack = api.limit(maker, "SELL", "1", "1000", newOrderRespType="ACK")
    assert set(ack) == ACK_FIELDS and ack["symbol"] == SYMBOL and type(ack["transactTime"]) is int
    result = api.limit(maker, "SELL", "1", "1000", newOrderRespType="RESULT")
    assert set(result) == RESULT_FIELDS and result["workingTime"] == result["transactTime"]
    assert_decimal_strings(
        result, "price", "origQty", "executedQty", "origQuoteOrderQty", "cummulativeQuoteQty"
    )
    full = api.order(taker, side="BUY", type="MARKET", quantity="2", newOrderRespType="FULL")
    assert set(full) == FULL_FIELDS and len(full["fills"]) == 2
    assert all(set(f) == FILL_FIELDS for f in full["fills"])
    assert [f["tradeId"] for f in full["fills"]][1] == full["fills"][0]["tradeId"] + 1
    market_default = api.order(taker, side="BUY", type="MARKET", quantity="1")
    assert set(market_default) == FULL_FIELDS, "MARKET and LIMIT answer FULL by default"


def test_the_answer_to_a_new_order_and_get_order_agree(api: Api, make_user: MakeUser) -> None:
    """Every field the POST answer shares with GET /api/v3/order agrees (MARKET's timeInForce included)."""
    maker, taker = make_user(), make_user()
    api.limit(maker, "SELL", "10", "1000")
    api.limit(maker, "BUY", "1", "995")  # above the taker's own bids, for its market sell
    answers = [
        api.limit(taker, "BUY", "1", "990"),
        api.limit(taker, "BUY", "1", "1000", timeInForce="IOC"),
        api.limit(taker, "BUY", "20", "1000", timeInForce="FOK"),
        api.limit(taker, "BUY", "1", "1000", timeInForce="FOK"),
        api.order(
            taker, side="BUY", type="LIMIT_MAKER", quantity="1", price="985", newOrderRespType="RESULT"
        ),
        api.order(taker, side="BUY", type="MARKET", quantity="1"),
        api.order(taker, side="BUY", type="MARKET", quoteOrderQty="1500"),
        api.order(taker, side="SELL", type="MARKET", quantity="1"),
    ]
    shared = RESULT_FIELDS - {"transactTime", "workingTime"}
    for answer in answers:
        shown = api.get_order(taker, orderId=answer["orderId"])
        assert {k: shown[k] for k in shared} == {k: answer[k] for k in shared}, answer["type"]
        assert shown["time"] == answer["transactTime"]
    assert [a["timeInForce"] for a in answers] == ["GTC", "IOC", "FOK", "FOK", "GTC", "GTC", "GTC", "GTC"]


def test_order_test_changes_nothing(api: Api, make_user: MakeUser) -> None:
    account = make_user()
    before = api.state()
    order = {
        "symbol": SYMBOL,
        "side": "BUY",
        "type": "LIMIT",
        "timeInForce": "GTC",
        "quantity": "1",
        "price": "1000",
    }
    assert api.call("POST", "/api/v3/order/test", account, **order) == {}
    rates = api.call("POST", "/api/v3/order/test", account, **order, computeCommissionRates="true")
    assert rates["standardCommission"] == {
        "maker": "0.00100000",
        "taker": "0.00200000",
        "buyer": "0.00000000",
        "seller": "0.00000000",
    }
    assert {"taxCommission", "discount"} <= set(rates)
    market = {"symbol": SYMBOL, "side": "BUY", "type": "MARKET", "quoteOrderQty": "100"}
    assert api.call("POST", "/api/v3/order/test", account, **market) == {}
    assert api.state() == before and api.open_orders(account) == []
    small = api.signed("POST", "/api/v3/order/test", account, {**order, "price": "5"})
    assert binance_error(small, -1013)["msg"] == "Filter failure: NOTIONAL"
    binance_error(api.signed("POST", "/api/v3/order/test", account, {**order, "symbol": "NOPE"}), -1121)
    assert api.state() == before


def test_get_order_by_id_and_client_id(api: Api, make_user: MakeUser) -> None:
    owner, stranger = make_user(), make_user()
    placed = api.limit(owner, "BUY", "2", "900", newClientOrderId="find-me")
    by_id = api.get_order(owner, orderId=placed["orderId"])
    assert set(by_id) == ORDER_FIELDS
    assert by_id == api.get_order(owner, origClientOrderId="find-me")
    assert by_id == api.get_order(owner, orderId=placed["orderId"], origClientOrderId="find-me")
    assert (by_id["price"], by_id["origQty"], by_id["status"], by_id["isWorking"]) == (
        "900.00000000", "2.00000000", "NEW", True,
    )  # fmt: skip
    assert (by_id["stopPrice"], by_id["icebergQty"], by_id["time"]) == (
        "0.00000000",
        "0.00000000",
        placed["transactTime"],
    )
    hidden = api.signed("GET", "/api/v3/order", stranger, {"symbol": SYMBOL, "orderId": placed["orderId"]})
    assert binance_error(hidden, -2013)["msg"] == "Order does not exist."
    binance_error(api.signed("GET", "/api/v3/order", owner, {"symbol": SYMBOL, "orderId": 10**12}), -2013)
    binance_error(
        api.signed("GET", "/api/v3/order", owner, {"symbol": SYMBOL, "origClientOrderId": "nope"}), -2013
    )
    binance_error(api.signed("GET", "/api/v3/order", owner, {"symbol": SYMBOL}), -1102)
    wrong_market = api.signed(
        "GET", "/api/v3/order", owner, {"symbol": OTHER_SYMBOL, "orderId": placed["orderId"]}
    )
    binance_error(wrong_market, -2013)


def test_cancel_order_cancel_all_and_open_orders(api: Api, make_user: MakeUser) -> None:
    owner, stranger = make_user(), make_user()
    ids = [api.limit(owner, "SELL", "1", price)["orderId"] for price in ("1300", "1300.05", "1300.1")]
    zomato = api.limit(owner, "BUY", "10", "200.01", symbol=OTHER_SYMBOL)
    mine = api.open_orders(owner)
    assert [o["orderId"] for o in mine] == ids and all(set(o) == ORDER_FIELDS for o in mine)
    assert {o["orderId"] for o in api.open_orders(owner, None)} == {*ids, zomato["orderId"]}

    refused = api.signed("DELETE", "/api/v3/order", stranger, {"symbol": SYMBOL, "orderId": ids[0]})
    assert binance_error(refused, -2011)["msg"] == "Unknown order sent."
    assert api.get_order(owner, orderId=ids[0])["status"] == "NEW"

    canceled = api.call("DELETE", "/api/v3/order", owner, symbol=SYMBOL, orderId=ids[0])
    assert set(canceled) == CANCEL_FIELDS
    assert (canceled["orderId"], canceled["status"], canceled["origQty"], canceled["price"]) == (
        ids[0], "CANCELED", "1.00000000", "1300.00000000",
    )  # fmt: skip
    assert api.get_order(owner, orderId=ids[0])["isWorking"] is False
    binance_error(api.signed("DELETE", "/api/v3/order", owner, {"symbol": SYMBOL, "orderId": ids[0]}), -2011)

    rest = api.cancel_all(owner)
    assert sorted(o["orderId"] for o in rest) == ids[1:] and all(o["status"] == "CANCELED" for o in rest)
    assert all(set(o) == CANCEL_FIELDS for o in rest)
    assert api.open_orders(owner) == [] and api.cancel_all(owner) == []
    left = api.open_orders(owner, None)
    assert [o["orderId"] for o in left] == [zomato["orderId"]] and left[0]["symbol"] == OTHER_SYMBOL
    balances = api.balances(owner)
    assert balances["TATA"] == (DEMO_SHARES, D(0))
    assert balances["INR"][1] == buy_hold("200.01", 10)


def test_all_orders_and_my_trades(api: Api, make_user: MakeUser) -> None:
    maker, taker = make_user(), make_user()
    resting = api.limit(maker, "SELL", "5", "1400")
    filled = api.limit(maker, "SELL", "2", "1399.95")
    canceled = api.limit(maker, "SELL", "1", "1450")
    api.call("DELETE", "/api/v3/order", maker, symbol=SYMBOL, orderId=canceled["orderId"])
    bought = api.order(taker, side="BUY", type="MARKET", quantity="3")
    orders = api.call("GET", "/api/v3/allOrders", maker, symbol=SYMBOL)
    assert all(set(o) == ORDER_FIELDS for o in orders)
    assert [(o["orderId"], o["status"], o["executedQty"]) for o in orders] == [
        (resting["orderId"], "PARTIALLY_FILLED", "1.00000000"),
        (filled["orderId"], "FILLED", "2.00000000"),
        (canceled["orderId"], "CANCELED", "0.00000000"),
    ]
    assert api.call("GET", "/api/v3/allOrders", maker, symbol=SYMBOL, limit=1) == orders[-1:]
    assert api.call("GET", "/api/v3/allOrders", maker, symbol=SYMBOL, orderId=filled["orderId"]) == orders[1:]
    assert api.call("GET", "/api/v3/allOrders", maker, symbol=OTHER_SYMBOL) == []

    maker_trades = api.call("GET", "/api/v3/myTrades", maker, symbol=SYMBOL)
    assert all(set(t) == MY_TRADE_FIELDS for t in maker_trades)
    assert [(t["orderId"], t["price"], t["qty"], t["quoteQty"], t["commission"]) for t in maker_trades] == [
        (filled["orderId"], "1399.95000000", "2.00000000", "2799.90000000", "2.79000000"),
        (resting["orderId"], "1400.00000000", "1.00000000", "1400.00000000", "1.40000000"),
    ]
    assert all(t["isBuyer"] is False and t["isMaker"] is True for t in maker_trades)
    assert all(t["commissionAsset"] == "INR" and t["orderListId"] == -1 for t in maker_trades)
    assert [t["id"] for t in maker_trades] == [f["tradeId"] for f in bought["fills"]]
    taker_trades = api.call("GET", "/api/v3/myTrades", taker, symbol=SYMBOL)
    assert [t["id"] for t in taker_trades] == [t["id"] for t in maker_trades]
    assert all(t["isBuyer"] is True and t["isMaker"] is False for t in taker_trades)
    assert [t["commission"] for t in taker_trades] == ["5.59000000", "2.80000000"]
    only = api.call("GET", "/api/v3/myTrades", maker, symbol=SYMBOL, orderId=resting["orderId"])
    assert only == maker_trades[1:]
    # an older order's trades, even when newer trades fill the limit (was [] : filtered after the limit)
    older = api.call("GET", "/api/v3/myTrades", maker, symbol=SYMBOL, orderId=filled["orderId"], limit=1)
    assert older == maker_trades[:1]
    assert api.call("GET", "/api/v3/myTrades", maker, symbol=SYMBOL, orderId=canceled["orderId"]) == []
    assert (
        api.call("GET", "/api/v3/myTrades", maker, symbol=SYMBOL, fromId=maker_trades[1]["id"])
        == maker_trades[1:]
    )
    assert api.call("GET", "/api/v3/myTrades", maker, symbol=SYMBOL, limit=1) == maker_trades[1:]


def test_my_trades_lists_both_maker_and_taker_trades(api: Api, make_user: MakeUser) -> None:
    """A user who made one trade and took another sees both (a loop variable once shadowed orderId)."""
    me, other = make_user(), make_user()
    made = api.limit(me, "SELL", "1", "1000")
    api.order(other, side="BUY", type="MARKET", quantity="1")
    api.limit(other, "SELL", "1", "1001")
    taken = api.order(me, side="BUY", type="MARKET", quantity="1")
    trades = api.call("GET", "/api/v3/myTrades", me, symbol=SYMBOL, limit=2)
    assert [(t["orderId"], t["isMaker"], t["isBuyer"], t["price"]) for t in trades] == [
        (made["orderId"], True, False, "1000.00000000"),
        (taken["orderId"], False, True, "1001.00000000"),
    ]
    for order in (made, taken):
        by_order = api.call("GET", "/api/v3/myTrades", me, symbol=SYMBOL, orderId=order["orderId"])
        assert [t["orderId"] for t in by_order] == [order["orderId"]]


def test_account(api: Api, make_user: MakeUser) -> None:
    funded, empty = make_user(), make_user(funded=False)
    body = api.call("GET", "/api/v3/account", funded)
    assert set(body) == ACCOUNT_FIELDS
    assert (body["makerCommission"], body["takerCommission"], body["accountType"]) == (10, 20, "SPOT")
    assert body["commissionRates"] == {
        "maker": "0.00100000",
        "taker": "0.00200000",
        "buyer": "0.00000000",
        "seller": "0.00000000",
    }
    assert body["canTrade"] is True and body["permissions"] == ["SPOT"] and body["uid"] == funded.user_id
    assert body["balances"] == [
        {"asset": "TATA", "free": "10000.00000000", "locked": "0.00000000"},
        {"asset": "INR", "free": "1000000.00000000", "locked": "0.00000000"},
        {"asset": "ZOMATO", "free": "10000.00000000", "locked": "0.00000000"},
    ]
    nothing = api.call("GET", "/api/v3/account", empty)
    assert all(b["free"] == b["locked"] == "0.00000000" for b in nothing["balances"])
    assert api.call("GET", "/api/v3/account", empty, omitZeroBalances="true")["balances"] == []


# --------------------------------------------------------------------------------------------
# Investo's own endpoints
# --------------------------------------------------------------------------------------------


def _register(api: Api, name: str, key: Any, signer: Any = None, **extra: str) -> Any:
    params = {"name": name, "publicKey": public_key_to_pem(key.public_key()), **extra}
    params["timestamp"] = str(int(time.time() * 1000))
    body = sign_params(params, signer or key)
    return api.http.post(
        "/api/v1/investo/users", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )


def test_register_users(api: Api) -> None:
    key, _ = generate_key_pair()
    name = unique_name("reg")
    created = ok(_register(api, name, key))
    assert set(created) == {"userId", "name", "apiKey"} and created["name"] == name
    assert type(created["userId"]) is int and re.fullmatch(r"[A-Za-z0-9_-]{32}", created["apiKey"])
    account = Account(name, key, created["apiKey"], created["userId"])
    assert api.call("GET", "/api/v3/account", account)["uid"] == created["userId"]

    other, _ = generate_key_pair()
    taken = binance_error(_register(api, name, other), -1130)
    assert "taken" in taken["msg"]
    intruder, _ = generate_key_pair()
    binance_error(_register(api, unique_name("reg"), other, signer=intruder), -1022)
    binance_error(_register(api, "bad name!", other), -1100)
    hmac_like = api.http.post(
        "/api/v1/investo/users",
        content=sign_params(
            {"name": unique_name("reg"), "publicKey": "a" * 64, "timestamp": int(time.time() * 1000)}, other
        ),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert "HMAC" in binance_error(hmac_like, -2014)["msg"]
    private_offered = api.http.post(
        "/api/v1/investo/users",
        content=sign_params(
            {"name": unique_name("reg"), "publicKey": account.pem, "timestamp": int(time.time() * 1000)}, key
        ),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    binance_error(private_offered, -2014)
    new_user_id = ok(_register(api, unique_name("reg"), other))["userId"]
    assert new_user_id > created["userId"]


def test_demo_funds_daily_limit(server: Server, api: Api, make_user: MakeUser) -> None:
    account = make_user(funded=False)
    part = api.call("POST", "/api/v1/investo/demo-funds", account, asset="INR", amount="100.5")
    assert part == {"deposits": [{"asset": "INR", "amount": "100.50000000"}]}
    assert api.balances(account)["INR"] == (D("100.5"), D(0))
    rest = api.call("POST", "/api/v1/investo/demo-funds", account)
    assert set(rest) == {"deposits"}
    assert sorted(rest["deposits"], key=lambda d: d["asset"]) == [
        {"asset": "INR", "amount": "999899.50000000"},
        {"asset": "TATA", "amount": "10000.00000000"},
        {"asset": "ZOMATO", "amount": "10000.00000000"},
    ]
    full = api.balances(account)
    assert full["INR"] == (DEMO_INR, D(0))
    state = api.state()
    assert api.call("POST", "/api/v1/investo/demo-funds", account) == {"deposits": []}
    over = api.signed("POST", "/api/v1/investo/demo-funds", account, {"asset": "INR"})
    assert "demo limit" in binance_error(over, -1130)["msg"]
    binance_error(
        api.signed("POST", "/api/v1/investo/demo-funds", account, {"asset": "TATA", "amount": "1"}), -1130
    )
    binance_error(api.signed("POST", "/api/v1/investo/demo-funds", account, {"asset": "BTC"}), -1130)
    assert api.balances(account) == full and api.state() == state, "refused claims change nothing"
    fresh = make_user(funded=False)
    binance_error(
        api.signed("POST", "/api/v1/investo/demo-funds", fresh, {"asset": "INR", "amount": "1.001"}), -1111
    )
    binance_error(
        api.signed("POST", "/api/v1/investo/demo-funds", fresh, {"asset": "INR", "amount": "-1"}), -1100
    )
    binance_error(
        api.signed("POST", "/api/v1/investo/demo-funds", fresh, {"asset": "INR", "amount": "1000000.01"}),
        -1130,
    )


def test_keys_list_add_revoke(api: Api, make_user: MakeUser) -> None:
    account = make_user(funded=False)
    keys = api.call("GET", "/api/v1/investo/keys", account)
    assert len(keys) == 1 and set(keys[0]) == {"apiKey", "label", "createTime", "revokeTime"}
    assert (keys[0]["apiKey"], keys[0]["label"], keys[0]["revokeTime"]) == (account.api_key, "default", None)

    second_key, _ = generate_key_pair()
    pem = public_key_to_pem(second_key.public_key())
    added = api.call("POST", "/api/v1/investo/keys", account, publicKey=pem, label="bot")
    second = Account(account.name, second_key, added["apiKey"], account.user_id)
    assert api.call("GET", "/api/v3/account", second)["uid"] == account.user_id
    listed = api.call("GET", "/api/v1/investo/keys", second)
    assert [(k["apiKey"], k["label"]) for k in listed] == [
        (account.api_key, "default"),
        (second.api_key, "bot"),
    ]

    revoked = api.call("DELETE", "/api/v1/investo/keys", second, apiKey=account.api_key)
    assert revoked == {"apiKey": account.api_key, "revoked": True}
    gone = api.signed("GET", "/api/v3/account", account)
    binance_error(gone, -2015, status=401)
    listed = api.call("GET", "/api/v1/investo/keys", second)
    assert type(listed[0]["revokeTime"]) is int and listed[1]["revokeTime"] is None
    binance_error(api.signed("DELETE", "/api/v1/investo/keys", second, {"apiKey": account.api_key}), -1130)
    binance_error(api.signed("DELETE", "/api/v1/investo/keys", second, {"apiKey": "nope"}), -1130)
    binance_error(api.signed("POST", "/api/v1/investo/keys", second, {"publicKey": "b" * 64}), -2014)
    stranger = make_user(funded=False)
    binance_error(api.signed("DELETE", "/api/v1/investo/keys", stranger, {"apiKey": second.api_key}), -1130)
    assert api.call("GET", "/api/v3/account", second)["uid"] == account.user_id


def test_state_endpoint(server: Server, api: Api, make_user: MakeUser) -> None:
    account = make_user()
    before = api.state()
    distributed = server.deployment == "distributed"
    assert set(before) == {"offset", "stateHash", *(["shards"] if distributed else [])}
    assert type(before["offset"]) is int and re.fullmatch(r"[0-9a-f]{64}", before["stateHash"])
    api.limit(account, "BUY", "1", "500")
    after = api.state()
    # embedded: one command in the log; distributed: the order on its accounts shard, then its matching shard
    assert after["offset"] == before["offset"] + (2 if distributed else 1)
    assert after["stateHash"] != before["stateHash"]
    if distributed:  # the sum of the shards' offsets, and each shard's own hash
        assert sum(s["offset"] for s in after["shards"]) == after["offset"]
        pairs = zip(before["shards"], after["shards"], strict=True)
        changed = [(s["role"], s["shard"]) for s, t in pairs if s != t]
        assert changed == [("accounts", account.user_id % 2), ("matching", 0)]  # TATAINR: shard 0
    assert ok(api.get("/health"))["offset"] == after["offset"]


def test_order_parameters_in_the_query_string_of_a_post(api: Api, make_user: MakeUser) -> None:
    """POST with every parameter in the query string (as some clients do) is signed and read the same."""
    account = make_user()
    query = sign(account, {"symbol": SYMBOL, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                           "quantity": "1", "price": "700"})  # fmt: skip
    response = api.http.post(f"/api/v3/order?{query}", headers={"X-MBX-APIKEY": account.api_key})
    assert ok(response)["status"] == "NEW"
