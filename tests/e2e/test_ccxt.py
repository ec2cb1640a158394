"""The real-client test: ccxt's own ``binance`` class, unchanged, trading on a real `investo up`.

ccxt signs with the user's Ed25519 key (its PKCS#8 PEM as ``secret``), exactly as on Binance.
Every URL of ccxt's binance is pointed at the Investo server: the spot API at ``/api/v3``, the
wallet API at ``/sapi/v1`` (system status and trading fees) and every other Binance API (fapi,
dapi, ...) at ``/not-spot/<name>``, which Investo answers with a 404. Each test checks that ccxt
only called spot and sapi endpoints and got no 404, so anything ccxt needs that Investo lacks
shows up here.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from harness import IN_CI, SYMBOL, Account, Api, Server, new_user

try:
    import ccxt
except ImportError:  # pragma: no cover - ccxt is a dev dependency
    if IN_CI:
        raise
    pytest.skip("ccxt is not installed", allow_module_level=True)

PAIR = "TATA/INR"
Calls = list[tuple[str, str, int, str]]  # method, path, status, body of an error


def ccxt_binance(base_url: str, account: Account, calls: Calls) -> Any:
    """ccxt's binance with every URL on the Investo server and a record of each request."""
    exchange = ccxt.binance(
        {
            "apiKey": account.api_key,
            "secret": account.pem,
            "enableRateLimit": False,
            "options": {
                "fetchMarkets": {"types": ["spot"]},  # ccxt 4.5: options.fetchMarkets.types
                "fetchCurrencies": False,  # sapi/capital/config/getall otherwise
                "fetchMargins": False,  # sapi/margin/allPairs otherwise
                "adjustForTimeDifference": False,
            },
        }
    )
    for name in list(exchange.urls["api"]):
        exchange.urls["api"][name] = f"{base_url}/not-spot/{name}"
    exchange.urls["api"]["public"] = exchange.urls["api"]["private"] = base_url + "/api/v3"
    exchange.urls["api"]["sapi"] = base_url + "/sapi/v1"

    def remember(response: Any, *args: Any, **kwargs: Any) -> None:
        url = response.request.url.split("?")[0].removeprefix(base_url)
        calls.append(
            (response.request.method, url, response.status_code, "" if response.ok else response.text)
        )

    exchange.session.hooks["response"].append(remember)
    return exchange


@pytest.fixture(scope="module")
def market_maker(server: Server) -> Account:
    return new_user(server.base_url)


@pytest.fixture
def calls() -> Iterator[Calls]:
    """The requests ccxt made in one test; none may go outside the spot and sapi APIs or get a 404."""
    made: Calls = []
    yield made
    outside = [c for c in made if not c[1].startswith(("/api/v3/", "/sapi/v1/")) or c[2] == 404]
    assert not outside, f"ccxt needed endpoints Investo lacks: {outside}"


@pytest.fixture
def exchange(server: Server, calls: Calls) -> Any:
    return ccxt_binance(server.base_url, new_user(server.base_url), calls)


@pytest.fixture(autouse=True)
def _clean_book(api: Api, market_maker: Account) -> Iterator[None]:
    yield
    api.cancel_all(market_maker)


def test_load_markets(exchange: Any, calls: Calls) -> None:
    markets = exchange.load_markets()
    assert set(markets) == {"TATA/INR", "ZOMATO/INR"}
    tata = markets[PAIR]
    assert (tata["id"], tata["base"], tata["quote"], tata["type"], tata["spot"], tata["active"]) == (
        SYMBOL, "TATA", "INR", "spot", True, True,
    )  # fmt: skip
    assert tata["precision"] == {**tata["precision"], "price": 0.05, "amount": 1.0}
    assert tata["limits"]["amount"] == {"min": 1.0, "max": 1_000_000.0}
    assert tata["limits"]["price"] == {"min": 0.05, "max": 100_000.0}
    assert tata["limits"]["cost"]["min"] == 10.0
    assert exchange.price_to_precision(PAIR, 1000.07) == "1000.05"
    assert [c[:3] for c in calls] == [("GET", "/api/v3/exchangeInfo", 200)]
    assert abs(exchange.fetch_time() - exchange.milliseconds()) < 5_000


def test_market_data(exchange: Any, api: Api, market_maker: Account, calls: Calls) -> None:
    exchange.load_markets()
    buyer = new_user(api.base_url)
    api.limit(market_maker, "SELL", "3", "1000")
    api.limit(market_maker, "SELL", "2", "1000.5")
    api.limit(market_maker, "BUY", "4", "995")
    api.order(buyer, side="BUY", type="MARKET", quantity="2")  # two trades at 1000

    book = exchange.fetch_order_book(PAIR, limit=5)
    assert book["asks"] == [[1000.0, 1.0], [1000.5, 2.0]] and book["bids"] == [[995.0, 4.0]]
    assert book["symbol"] == PAIR and book["nonce"] == api.depth()["lastUpdateId"]

    trades = exchange.fetch_trades(PAIR)
    assert trades[-1]["price"] == 1000.0 and trades[-1]["side"] == "buy" and trades[-1]["symbol"] == PAIR
    since = exchange.fetch_trades(PAIR, since=trades[-1]["timestamp"])
    assert since and all(t["timestamp"] >= trades[-1]["timestamp"] for t in since)

    candles = exchange.fetch_ohlcv(PAIR, "1m", limit=5)
    assert candles and candles[-1][4] == 1000.0 and all(len(c) == 6 for c in candles)
    assert candles[-1][5] >= 2.0

    ticker = exchange.fetch_ticker(PAIR)
    assert (ticker["last"], ticker["bid"], ticker["ask"]) == (1000.0, 995.0, 1000.0)
    assert ticker["high"] >= 1000.0 and ticker["baseVolume"] >= 2.0 and ticker["symbol"] == PAIR
    tickers = exchange.fetch_tickers([PAIR])
    assert tickers[PAIR]["last"] == 1000.0
    assert exchange.fetch_bids_asks([PAIR])[PAIR]["ask"] == 1000.0


def test_trading(exchange: Any, api: Api, market_maker: Account, calls: Calls) -> None:
    exchange.load_markets()
    balance = exchange.fetch_balance()
    assert balance["INR"] == {"free": 1_000_000.0, "used": 0.0, "total": 1_000_000.0}
    assert balance["TATA"]["free"] == 10_000.0

    bid = exchange.create_order(PAIR, "limit", "buy", 2, 980)
    assert (bid["status"], bid["price"], bid["amount"], bid["filled"], bid["side"]) == (
        "open",
        980.0,
        2.0,
        0.0,
        "buy",
    )
    assert bid["clientOrderId"] and bid["symbol"] == PAIR
    held = float(Decimal(1960) + Decimal("3.92"))  # notional + the highest fee (taker 0.2 %)
    assert exchange.fetch_balance()["INR"]["used"] == held

    open_orders = exchange.fetch_open_orders(PAIR)
    assert [o["id"] for o in open_orders] == [bid["id"]]
    fetched = exchange.fetch_order(bid["id"], PAIR)
    assert (fetched["status"], fetched["price"], fetched["amount"], fetched["type"]) == (
        "open",
        980.0,
        2.0,
        "limit",
    )

    canceled = exchange.cancel_order(bid["id"], PAIR)
    assert canceled["status"] == "canceled" and canceled["id"] == bid["id"]
    with pytest.raises(ccxt.OrderNotFound):
        exchange.cancel_order(bid["id"], PAIR)
    assert exchange.fetch_order(bid["id"], PAIR)["status"] == "canceled"
    assert exchange.fetch_open_orders(PAIR) == []
    assert exchange.fetch_balance()["INR"]["used"] == 0.0

    api.limit(market_maker, "SELL", "3", "1001")
    api.limit(market_maker, "BUY", "3", "999")
    bought = exchange.create_order(PAIR, "market", "buy", 2)
    assert (bought["status"], bought["filled"], bought["cost"], bought["average"]) == (
        "closed",
        2.0,
        2002.0,
        1001.0,
    )
    assert bought["fee"] == {"cost": 4.0, "currency": "INR"} or bought["fees"][0]["cost"] == 4.0
    sold = exchange.create_order(PAIR, "market", "sell", 1)
    assert (sold["status"], sold["filled"], sold["cost"]) == ("closed", 1.0, 999.0)
    by_cost = exchange.create_market_buy_order_with_cost(PAIR, 1500)
    assert (by_cost["status"], by_cost["filled"], by_cost["cost"]) == ("closed", 1.0, 1001.0)

    assert [t["amount"] for t in exchange.fetch_order_trades(bought["id"], PAIR, limit=1)] == [2.0]
    mine = exchange.fetch_my_trades(PAIR)
    assert [(t["side"], t["price"], t["amount"]) for t in mine] == [
        ("buy", 1001.0, 2.0),
        ("sell", 999.0, 1.0),
        ("buy", 1001.0, 1.0),
    ]
    assert all(t["takerOrMaker"] == "taker" and t["fee"]["currency"] == "INR" for t in mine)
    every = exchange.fetch_orders(PAIR)
    assert [o["status"] for o in every] == ["canceled", "closed", "closed", "closed"]
    balance = exchange.fetch_balance()
    assert balance["TATA"]["total"] == 10_002.0
    inr = Decimal(1_000_000) - Decimal(2002) - Decimal("4.00") + Decimal(999) - Decimal("1.99")
    inr -= Decimal(1001) + Decimal("2.00")
    assert balance["INR"]["total"] == float(inr)

    with pytest.raises(ccxt.InsufficientFunds):
        exchange.create_order(PAIR, "limit", "buy", 100_000, 990)
    with pytest.raises(ccxt.BadRequest, match="Filter failure: NOTIONAL"):  # ccxt's class for -1013
        exchange.create_order(PAIR, "limit", "buy", 1, 5)
    assert exchange.cancel_all_orders(PAIR) == []


def test_limit_order_fills_against_the_book(
    exchange: Any, api: Api, market_maker: Account, calls: Calls
) -> None:
    exchange.load_markets()
    api.limit(market_maker, "SELL", "2", "1010")
    taken = exchange.create_order(PAIR, "limit", "buy", 3, 1010)
    assert (taken["status"], taken["filled"], taken["remaining"]) == ("open", 2.0, 1.0)
    assert exchange.fetch_order(taken["id"], PAIR)["filled"] == 2.0
    ioc = exchange.create_order(PAIR, "limit", "sell", 5, 1010, {"timeInForce": "IOC"})
    assert ioc["status"] in ("expired", "canceled") and ioc["filled"] == 0.0, (
        "its own bid is not traded (STP)"
    )
    assert exchange.fetch_order(taken["id"], PAIR)["status"] in ("expired", "canceled")


def test_status_and_trading_fees(exchange: Any, calls: Calls) -> None:
    exchange.load_markets()
    status = exchange.fetch_status()
    assert status["status"] == "ok" and status["info"] == {"status": 0, "msg": "normal"}
    fees = exchange.fetch_trading_fees()
    assert set(fees) == {"TATA/INR", "ZOMATO/INR"}
    for pair, fee in fees.items():
        assert (fee["symbol"], fee["maker"], fee["taker"]) == (pair, 0.001, 0.002)  # 10 and 20 bps
    one = exchange.fetch_trading_fee(PAIR)
    assert (one["symbol"], one["maker"], one["taker"]) == (PAIR, 0.001, 0.002)
    assert one["info"] == {"symbol": SYMBOL, "makerCommission": "0.001", "takerCommission": "0.002"}
    assert [c[:3] for c in calls[1:]] == [
        ("GET", "/sapi/v1/system/status", 200),
        ("GET", "/sapi/v1/asset/tradeFee", 200),
        ("GET", "/sapi/v1/asset/tradeFee", 200),
    ]


def test_edit_order(exchange: Any, api: Api, market_maker: Account, calls: Calls) -> None:
    """``edit_order`` on a spot market is Binance's cancelReplace (STOP_ON_FAILURE, by cancelOrderId)."""
    exchange.load_markets()
    bid = exchange.create_order(PAIR, "limit", "buy", 2, 980)
    edited = exchange.edit_order(bid["id"], PAIR, "limit", "buy", 3, 985)
    assert edited["id"] != bid["id"] and edited["clientOrderId"] != bid["clientOrderId"]
    assert (edited["status"], edited["price"], edited["amount"], edited["side"], edited["type"]) == (
        "open", 985.0, 3.0, "buy", "limit",
    )  # fmt: skip
    assert calls[-1][:3] == ("POST", "/api/v3/order/cancelReplace", 200)
    assert exchange.fetch_order(bid["id"], PAIR)["status"] == "canceled"
    assert [(o["id"], o["price"], o["amount"]) for o in exchange.fetch_open_orders(PAIR)] == [
        (edited["id"], 985.0, 3.0)
    ]
    notional = Decimal(985) * 3
    assert exchange.fetch_balance()["INR"]["used"] == float(notional + notional * 20 / 10_000)

    # the order that was replaced is gone: the cancel fails, nothing is placed (-2022)
    with pytest.raises(ccxt.ExchangeError, match="-2022"):
        exchange.edit_order(bid["id"], PAIR, "limit", "buy", 1, 990)
    assert [o["id"] for o in exchange.fetch_open_orders(PAIR)] == [edited["id"]]

    # the new order fails after the cancel succeeded (-2021, HTTP 409): the old order is canceled
    with pytest.raises(ccxt.ExchangeError, match="-2021"):
        exchange.edit_order(edited["id"], PAIR, "limit", "buy", 100_000, 990)
    assert exchange.fetch_order(edited["id"], PAIR)["status"] == "canceled"
    assert exchange.fetch_open_orders(PAIR) == []
    assert exchange.fetch_balance()["INR"]["used"] == 0.0
    assert [c[2] for c in calls if c[1] == "/api/v3/order/cancelReplace"] == [200, 400, 409]

    # a resting sell edited into a market sell that trades against the book
    api.limit(market_maker, "BUY", "2", "990")
    ask = exchange.create_order(PAIR, "limit", "sell", 1, 1_050)
    sold = exchange.edit_order(ask["id"], PAIR, "market", "sell", 1)
    assert (sold["status"], sold["filled"], sold["cost"], sold["type"]) == ("closed", 1.0, 990.0, "market")
    assert exchange.fetch_order(ask["id"], PAIR)["status"] == "canceled"
