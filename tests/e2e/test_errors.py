"""Error paths of a real `investo up`: every refusal is a Binance error (4xx, ``{"code": int, "msg": str}``).

A request refused before it reaches the engine must leave the engine untouched: the
``stateHash`` and log offset of ``GET /api/v1/investo/state`` are compared before and after.
A refusal by the engine itself (insufficient balance, LIMIT_MAKER that would take) is
journaled like any command, so it advances the offset; there balances and open orders are
compared instead. The end of the module fires random parameters (hypothesis) at the API.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from harness import (
    SYMBOL,
    SYMBOLS,
    Account,
    Api,
    Server,
    binance_error,
    fresh_timestamp,
    new_user,
    ok,
    sign,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from investo.security.signing import API_KEY_HEADER, generate_key_pair, sign_payload

MakeUser = Callable[..., Account]
LIMIT = {
    "symbol": SYMBOL,
    "side": "BUY",
    "type": "LIMIT",
    "timeInForce": "GTC",
    "quantity": "1",
    "price": "1000",
}
MARKET = {"symbol": SYMBOL, "side": "BUY", "type": "MARKET", "quantity": "1"}


@pytest.fixture(scope="module")
def trader(server: Server, api: Api) -> Iterator[Account]:
    """A funded user with one resting order (so 'unchanged' has something to compare)."""
    account = new_user(server.base_url)
    api.limit(account, "SELL", "5", "2000")
    yield account
    api.cancel_all(account)


def refused_untouched(
    api: Api, send: Callable[[], httpx.Response], code: int, status: int | None = None
) -> dict:
    """``send()`` is refused with ``code`` before reaching the engine: state hash and offset unchanged."""
    before = api.state()
    body = binance_error(send(), code, status)
    assert api.state() == before, f"a request refused with {body} changed the engine"
    return body


def order(api: Api, account: Account, **params: Any) -> httpx.Response:
    return api.signed("POST", "/api/v3/order", account, params)


def raw_signed(account: Account, text: str) -> str:
    """``text`` exactly as given (duplicates and all), with a valid signature appended."""
    return f"{text}&signature={quote(sign_payload(text, account.private_key), safe='')}"


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["symbol", "side", "type", "timeInForce", "quantity", "price"])
def test_missing_order_parameter(api: Api, trader: Account, name: str) -> None:
    params = {k: v for k, v in LIMIT.items() if k != name}
    body = refused_untouched(api, lambda: order(api, trader, **params), -1102)
    assert name in body["msg"]
    empty = {**LIMIT, name: ""}
    refused_untouched(api, lambda: order(api, trader, **empty), -1102)


def test_missing_parameters_elsewhere(api: Api, trader: Account) -> None:
    market_without_amount = {k: v for k, v in MARKET.items() if k != "quantity"}
    refused_untouched(api, lambda: order(api, trader, **market_without_amount), -1102)
    refused_untouched(api, lambda: order(api, trader, **MARKET, quoteOrderQty="100"), -1102)
    binance_error(api.get("/api/v3/depth"), -1102)
    binance_error(api.get("/api/v3/klines", {"symbol": SYMBOL}), -1102)
    binance_error(api.get("/api/v3/avgPrice"), -1102)
    binance_error(api.signed("GET", "/api/v3/order", trader, {"symbol": SYMBOL}), -1102)
    binance_error(api.signed("DELETE", "/api/v3/order", trader, {"symbol": SYMBOL}), -1102)
    binance_error(api.signed("DELETE", "/api/v3/openOrders", trader, {}), -1102)
    binance_error(api.signed("GET", "/api/v3/allOrders", trader, {}), -1102)
    binance_error(api.signed("DELETE", "/api/v1/investo/keys", trader, {}), -1102)


@pytest.mark.parametrize(
    "bad",
    ["1e3", "-1", "1.", ".5", "abc", " 1", "1 ", "0x10", "1,5", "NaN", "Infinity", "1\n", "١", "1" * 21],
)
def test_malformed_numbers(api: Api, trader: Account, bad: str) -> None:
    for name in ("quantity", "price"):
        refused_untouched(api, lambda name=name: order(api, trader, **{**LIMIT, name: bad}), -1100)
    market = {"symbol": SYMBOL, "side": "BUY", "type": "MARKET", "quoteOrderQty": bad}
    refused_untouched(api, lambda: order(api, trader, **market), -1100)


@pytest.mark.parametrize("bad", ["abc", "-5", "1.5", "5\n", "99999999999999999999"])
def test_malformed_integers(api: Api, trader: Account, bad: str) -> None:
    binance_error(api.get("/api/v3/depth", {"symbol": SYMBOL, "limit": bad}), -1100)
    binance_error(api.get("/api/v3/trades", {"symbol": SYMBOL, "limit": bad}), -1100)
    binance_error(api.get("/api/v3/klines", {"symbol": SYMBOL, "interval": "1m", "startTime": bad}), -1100)
    binance_error(api.get("/api/v3/aggTrades", {"symbol": SYMBOL, "fromId": bad}), -1100)
    binance_error(api.signed("GET", "/api/v3/order", trader, {"symbol": SYMBOL, "orderId": bad}), -1100)
    binance_error(api.signed("GET", "/api/v3/myTrades", trader, {"symbol": SYMBOL, "fromId": bad}), -1100)


def test_limits_out_of_range(api: Api) -> None:
    for limit in ("0", "5001"):
        binance_error(api.get("/api/v3/depth", {"symbol": SYMBOL, "limit": limit}), -1100)
    binance_error(api.get("/api/v3/trades", {"symbol": SYMBOL, "limit": "1001"}), -1100)


def test_huge_numbers_are_refused_never_500(api: Api, trader: Account) -> None:
    huge = "99999999999999999999"
    lot = refused_untouched(api, lambda: order(api, trader, **{**LIMIT, "quantity": huge}), -1013)
    assert lot["msg"] == "Filter failure: LOT_SIZE"
    price = refused_untouched(api, lambda: order(api, trader, **{**LIMIT, "price": huge}), -1013)
    assert price["msg"] == "Filter failure: PRICE_FILTER"
    both = {**LIMIT, "price": huge + ".99999999999999999999", "quantity": huge + ".99999999999999999999"}
    refused_untouched(api, lambda: order(api, trader, **both), -1100)
    by_quote = {"symbol": SYMBOL, "side": "BUY", "type": "MARKET", "quoteOrderQty": huge}
    assert (
        refused_untouched(api, lambda: order(api, trader, **by_quote), -1013)["msg"]
        == "Filter failure: NOTIONAL"
    )
    market_qty = {**MARKET, "quantity": huge}
    refused_untouched(api, lambda: order(api, trader, **market_qty), -1013)
    refused_untouched(api, lambda: order(api, trader, **{**LIMIT, "quantity": "9" * 41}), -1100)
    long_price = {**LIMIT, "price": "1" * 20 + "." + "5" * 20}
    refused_untouched(api, lambda: order(api, trader, **long_price), -1100)
    big_int = str(2**63)
    binance_error(api.signed("GET", "/api/v3/order", trader, {"symbol": SYMBOL, "orderId": big_int}), -1100)
    binance_error(api.signed("GET", "/api/v3/order", trader, {"symbol": SYMBOL, "orderId": 2**63 - 1}), -2013)
    binance_error(
        api.signed("DELETE", "/api/v3/order", trader, {"symbol": SYMBOL, "orderId": 2**63 - 1}), -2011
    )
    binance_error(api.signed("GET", "/api/v3/account", trader, {}, timestamp=huge), -1102)
    binance_error(api.signed("GET", "/api/v3/account", trader, {}, recvWindow=huge), -1100)
    max_int = str(2**63 - 1)
    for path, params in [
        ("/api/v3/klines", {"interval": "1m", "startTime": max_int}),
        ("/api/v3/klines", {"interval": "1d", "startTime": "0", "endTime": max_int, "limit": "1000"}),
        ("/api/v3/aggTrades", {"fromId": max_int}),
        ("/api/v3/aggTrades", {"startTime": max_int, "endTime": "0"}),
    ]:
        assert isinstance(ok(api.get(path, {"symbol": SYMBOL, **params})), list)
    for path, params in [
        ("/api/v3/myTrades", {"fromId": max_int, "startTime": max_int}),
        ("/api/v3/allOrders", {"orderId": max_int, "startTime": max_int, "endTime": max_int}),
    ]:
        assert ok(api.signed("GET", path, trader, {"symbol": SYMBOL, **params})) == []
    demo = {"asset": "INR", "amount": huge + ".99"}
    refused_untouched(api, lambda: api.signed("POST", "/api/v1/investo/demo-funds", trader, demo), -1130)


def test_filters_tick_lot_notional(api: Api, trader: Account) -> None:
    cases = [
        ({"price": "1000.01"}, "Filter failure: PRICE_FILTER"),  # tick is 0.05
        ({"price": "1000.051"}, "Filter failure: PRICE_FILTER"),
        ({"price": "0"}, "Filter failure: PRICE_FILTER"),
        ({"price": "100000.05"}, "Filter failure: PRICE_FILTER"),  # above maxPrice
        ({"quantity": "1.5"}, "Filter failure: LOT_SIZE"),  # lot is 1
        ({"quantity": "0"}, "Filter failure: LOT_SIZE"),
        ({"quantity": "1000001"}, "Filter failure: LOT_SIZE"),  # above maxQty
        ({"price": "5"}, "Filter failure: NOTIONAL"),  # 1 × 5 < minNotional 10
    ]
    for change, msg in cases:
        body = refused_untouched(api, lambda change=change: order(api, trader, **{**LIMIT, **change}), -1013)
        assert body["msg"] == msg, (change, body)
    zomato = {**LIMIT, "symbol": "ZOMATOINR", "price": "250.015"}  # tick 0.01
    refused_untouched(api, lambda: order(api, trader, **zomato), -1013)
    ok_zomato = {**LIMIT, "symbol": "ZOMATOINR", "price": "250.01"}
    assert ok(api.signed("POST", "/api/v3/order/test", trader, ok_zomato)) == {}


def test_unknown_symbol(api: Api, trader: Account) -> None:
    for symbol in ("NOPEINR", "tata", "TATAINR ", "ТАТАINR"):
        refused_untouched(api, lambda symbol=symbol: order(api, trader, **{**LIMIT, "symbol": symbol}), -1121)
    for path, extra in [
        ("/api/v3/depth", {}),
        ("/api/v3/trades", {}),
        ("/api/v3/aggTrades", {}),
        ("/api/v3/klines", {"interval": "1m"}),
        ("/api/v3/ticker/24hr", {}),
        ("/api/v3/ticker/price", {}),
        ("/api/v3/ticker/bookTicker", {}),
        ("/api/v3/avgPrice", {}),
        ("/api/v3/exchangeInfo", {}),
    ]:
        assert binance_error(api.get(path, {"symbol": "NOPEINR", **extra}), -1121)["msg"] == "Invalid symbol."
    for method, path in [
        ("GET", "/api/v3/order"),
        ("DELETE", "/api/v3/openOrders"),
        ("GET", "/api/v3/openOrders"),
        ("GET", "/api/v3/allOrders"),
        ("GET", "/api/v3/myTrades"),
    ]:
        binance_error(api.signed(method, path, trader, {"symbol": "NOPEINR", "orderId": 1}), -1121)
    binance_error(api.get("/api/v3/ticker/price", {"symbols": "[]"}), -1100)
    binance_error(api.get("/api/v3/ticker/price", {"symbols": "TATAINR"}), -1100)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"side": "HOLD"}, -1117),
        ({"side": "buy"}, -1117),
        ({"type": "STOP_LOSS"}, -1116),
        ({"type": "limit"}, -1116),
        ({"timeInForce": "GTX"}, -1115),
        ({"timeInForce": "gtc"}, -1115),
        ({"selfTradePreventionMode": "SOMETIMES"}, -1130),
        ({"newOrderRespType": "EVERYTHING"}, -1130),
        ({"newClientOrderId": "has space"}, -1100),
        ({"newClientOrderId": "x" * 37}, -1100),
        ({"newClientOrderId": "abc\n"}, -1100),  # a trailing newline once slipped through ('$' vs fullmatch)
        ({"newClientOrderId": "naïve"}, -1100),
    ],
)
def test_bad_enums_and_ids(api: Api, trader: Account, change: dict[str, str], code: int) -> None:
    refused_untouched(api, lambda: order(api, trader, **{**LIMIT, **change}), code)


def test_parameters_sent_when_not_required(api: Api, trader: Account) -> None:
    cases = [
        ({**MARKET, "price": "1000"}, "price"),
        ({**MARKET, "timeInForce": "GTC"}, "timeInForce"),
        ({**LIMIT, "quoteOrderQty": "100"}, "quoteOrderQty"),
        ({**LIMIT, "type": "LIMIT_MAKER"}, "timeInForce"),  # LIMIT_MAKER takes no timeInForce
    ]
    for params, name in cases:
        body = refused_untouched(api, lambda params=params: order(api, trader, **params), -1106)
        assert name in body["msg"]
    sell_by_quote = {"symbol": SYMBOL, "side": "SELL", "type": "MARKET", "quoteOrderQty": "100"}
    refused_untouched(api, lambda: order(api, trader, **sell_by_quote), -1130)


def test_duplicate_and_too_many_parameters(api: Api, trader: Account) -> None:
    binance_error(api.http.get(f"/api/v3/depth?symbol={SYMBOL}&symbol={SYMBOL}"), -1101)
    binance_error(api.http.get("/api/v3/depth?" + "&".join(f"p{i}=1" for i in range(70))), -1101)
    dup = f"symbol={SYMBOL}&symbol={SYMBOL}&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=1000"
    dup += f"&timestamp={fresh_timestamp()}"
    refused_untouched(api, lambda: api.send("POST", "/api/v3/order", raw_signed(trader, dup), trader), -1101)
    # the same name in the query string and in the body
    body = sign(trader, LIMIT)
    both = lambda: api.http.post(  # noqa: E731
        f"/api/v3/order?symbol={SYMBOL}",
        content=body,
        headers={API_KEY_HEADER: trader.api_key, "Content-Type": "application/x-www-form-urlencoded"},
    )
    refused_untouched(api, both, -1101)
    many = "&".join(f"p{i}=1" for i in range(70)) + f"&timestamp={fresh_timestamp()}"
    refused_untouched(api, lambda: api.send("POST", "/api/v3/order", raw_signed(trader, many), trader), -1101)


def test_oversized_and_non_ascii_bodies(api: Api, trader: Account) -> None:
    headers = {API_KEY_HEADER: trader.api_key, "Content-Type": "application/x-www-form-urlencoded"}
    big = b"junk=" + b"x" * 20_000
    body = refused_untouched(
        api, lambda: api.http.post("/api/v3/order", content=big, headers=headers), -1000, 413
    )
    assert "too large" in body["msg"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count what it reads
        for _ in range(40):
            yield b"x" * 1000

    chunked = lambda: api.http.post("/api/v3/order", content=chunks(), headers=headers)  # noqa: E731
    refused_untouched(api, chunked, -1000, 413)
    register = api.http.post("/api/v1/investo/users", content=big, headers=headers)
    binance_error(register, -1000, 413)
    text = sign(trader, LIMIT) + "&note=café"
    refused_untouched(
        api, lambda: api.http.post("/api/v3/order", content=text.encode("utf-8"), headers=headers), -1100
    )
    latin1 = api.http.post("/api/v3/order", content=b"symbol=TATAINR\xff", headers=headers)
    binance_error(latin1, -1100)
    long_value = api.get("/api/v3/depth", {"symbol": "X" * 60_000})
    binance_error(long_value, -1100)


def test_percent_encoding_errors(api: Api, trader: Account) -> None:
    for junk in ("x=%ZZ", "x=%FF", "x=%", "bad-name=1", "=1", "noequals"):
        text = f"{junk}&timestamp={fresh_timestamp()}"
        refused_untouched(
            api, lambda text=text: api.send("GET", "/api/v3/account", raw_signed(trader, text), trader), -1100
        )
    unicode_ok = api.signed("POST", "/api/v3/order/test", trader, {**LIMIT, "note": "naïve ☃"})
    assert ok(unicode_ok) == {}, "a UTF-8 value, percent-encoded and signed, is fine where it is ignored"


def test_not_found_and_method_not_allowed_are_json(api: Api) -> None:
    binance_error(api.get("/api/v3/nope"), -1000, 404)
    binance_error(api.get("/nope"), -1000, 404)
    binance_error(api.http.put("/api/v3/order"), -1000, 405)
    binance_error(api.http.post("/api/v3/depth"), -1000, 405)


# --------------------------------------------------------------------------------------------
# Engine refusals (journaled: the offset moves, nothing else)
# --------------------------------------------------------------------------------------------


def test_insufficient_balance(api: Api, make_user: MakeUser) -> None:
    poor, rich = make_user(funded=False), make_user()
    api.limit(rich, "BUY", "1", "900")  # something to keep
    for account, params in [
        (poor, LIMIT),
        (poor, {**LIMIT, "side": "SELL"}),
        (poor, {**MARKET, "quantity": "1"}),
        (poor, {"symbol": SYMBOL, "side": "BUY", "type": "MARKET", "quoteOrderQty": "100"}),
        (rich, {**LIMIT, "quantity": "1000", "price": "1000"}),  # 1,000,000 + fee > 1,000,000 − what's held
        (rich, {**LIMIT, "side": "SELL", "quantity": "10001", "price": "1000"}),
        (rich, {**LIMIT, "symbol": "ZOMATOINR", "side": "SELL", "quantity": "10001", "price": "250"}),
    ]:
        before = (api.balances(account), api.open_orders(account, None), api.state()["offset"])
        body = binance_error(order(api, account, **params), -2010)
        assert body["msg"] == "Account has insufficient balance for requested action."
        after = (api.balances(account), api.open_orders(account, None), api.state()["offset"])
        assert after[:2] == before[:2], f"{params} was refused but changed the account"
        assert after[2] == before[2] + 1, "the engine's refusal is journaled like any command"


def test_unknown_orders(api: Api, trader: Account) -> None:
    for params in ({"orderId": 123_456_789}, {"origClientOrderId": "never-sent"}, {"orderId": 0}):
        msg = binance_error(
            api.signed("DELETE", "/api/v3/order", trader, {"symbol": SYMBOL, **params}), -2011
        )["msg"]
        assert msg == "Unknown order sent."
    for params in ({"orderId": 123_456_789}, {"origClientOrderId": "never-sent"}):
        msg = binance_error(api.signed("GET", "/api/v3/order", trader, {"symbol": SYMBOL, **params}), -2013)[
            "msg"
        ]
        assert msg == "Order does not exist."
    assert len(api.open_orders(trader)) == 1


# --------------------------------------------------------------------------------------------
# Signatures and keys
# --------------------------------------------------------------------------------------------


def test_valid_signature(api: Api, trader: Account) -> None:
    assert ok(api.signed("GET", "/api/v3/account", trader))["uid"] == trader.user_id
    assert ok(api.signed("GET", "/api/v3/account", trader, {}, recvWindow=60_000))["uid"] == trader.user_id
    stale_but_inside = fresh_timestamp() - 6_000
    late = api.signed("GET", "/api/v3/account", trader, {}, timestamp=stale_but_inside, recvWindow=10_000)
    assert ok(late)["uid"] == trader.user_id


def test_signature_refusals(api: Api, trader: Account) -> None:
    other_key, _ = generate_key_pair()
    impostor = Account(trader.name, other_key, trader.api_key, trader.user_id)
    body = refused_untouched(api, lambda: order(api, impostor, **LIMIT), -1022)
    assert body["msg"] == "Signature for this request is not valid."

    text = sign(trader, LIMIT)
    tampered = text.replace("quantity=1", "quantity=2")
    assert tampered != text
    refused_untouched(api, lambda: api.send("POST", "/api/v3/order", tampered, trader), -1022)
    moved = sign(trader, LIMIT).replace("price=1000", "price=1000.00")
    refused_untouched(api, lambda: api.send("POST", "/api/v3/order", moved, trader), -1022)
    cut = sign(trader, LIMIT)
    dropped = cut.replace("&timeInForce=GTC", "")
    refused_untouched(api, lambda: api.send("POST", "/api/v3/order", dropped, trader), -1022)
    bad_b64 = f"timestamp={fresh_timestamp()}&signature=not-base64!"
    refused_untouched(api, lambda: api.send("GET", "/api/v3/account", bad_b64, trader), -1022)
    short = f"timestamp={fresh_timestamp()}&signature=" + quote("AAAA", safe="")
    refused_untouched(api, lambda: api.send("GET", "/api/v3/account", short, trader), -1022)
    hmac = f"timestamp={fresh_timestamp()}&signature={'ab' * 32}"
    assert (
        "HMAC"
        in refused_untouched(api, lambda: api.send("GET", "/api/v3/account", hmac, trader), -1022)["msg"]
    )
    unsigned = f"timestamp={fresh_timestamp()}"
    refused_untouched(api, lambda: api.send("GET", "/api/v3/account", unsigned, trader), -1102)
    no_ts = raw_signed(trader, "symbol=TATAINR")
    refused_untouched(api, lambda: api.send("GET", "/api/v3/openOrders", no_ts, trader), -1102)


def test_timestamps(api: Api, trader: Account) -> None:
    now = int(time.time() * 1000)
    expired = refused_untouched(
        api, lambda: api.signed("POST", "/api/v3/order", trader, LIMIT, timestamp=now - 6_000), -1021
    )
    assert expired["msg"] == "Timestamp for this request is outside of the recvWindow."
    narrow = lambda: api.signed("GET", "/api/v3/account", trader, {}, timestamp=now - 1_500, recvWindow=1_000)  # noqa: E731
    refused_untouched(api, narrow, -1021)
    future = refused_untouched(
        api, lambda: api.signed("POST", "/api/v3/order", trader, LIMIT, timestamp=now + 3_000), -1021
    )
    assert "ahead" in future["msg"]
    refused_untouched(api, lambda: api.signed("GET", "/api/v3/account", trader, {}, recvWindow=60_001), -1131)
    refused_untouched(api, lambda: api.signed("GET", "/api/v3/account", trader, {}, recvWindow=0), -1131)
    refused_untouched(api, lambda: api.signed("GET", "/api/v3/account", trader, {}, timestamp="soon"), -1102)


def test_replayed_request_is_refused(api: Api, trader: Account) -> None:
    text = sign(trader, {**LIMIT, "price": "1500", "newClientOrderId": "replay-me"})
    first = ok(api.send("POST", "/api/v3/order", text, trader))
    body = refused_untouched(api, lambda: api.send("POST", "/api/v3/order", text, trader), -1022)
    assert body["msg"] == "Signature for this request was already used."
    mine = [o for o in api.open_orders(trader) if o["clientOrderId"] == "replay-me"]
    assert [o["orderId"] for o in mine] == [first["orderId"]], "the replay placed nothing"
    read = sign(trader, {})
    ok(api.send("GET", "/api/v3/account", read, trader))
    refused_untouched(api, lambda: api.send("GET", "/api/v3/account", read, trader), -1022)
    api.call("DELETE", "/api/v3/order", trader, symbol=SYMBOL, orderId=first["orderId"])


def test_api_key_refusals(api: Api, trader: Account) -> None:
    text = sign(trader, LIMIT)
    no_key = lambda: api.http.post(  # noqa: E731
        "/api/v3/order", content=text, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    refused_untouched(api, no_key, -2014, 401)
    refused_untouched(
        api, lambda: api.send("POST", "/api/v3/order", sign(trader, LIMIT), trader, "bad key!"), -2014, 401
    )
    unknown = "A" * 32
    body = refused_untouched(
        api, lambda: api.send("POST", "/api/v3/order", sign(trader, LIMIT), trader, unknown), -2015, 401
    )
    assert body["msg"] == "Invalid API-key, IP, or permissions for action."
    other = new_user(api.base_url, funded=False)
    # a real key of another user, with this user's signature: the signature does not verify
    refused_untouched(
        api, lambda: api.send("POST", "/api/v3/order", sign(trader, LIMIT), trader, other.api_key), -1022
    )


# --------------------------------------------------------------------------------------------
# Rate limits (their own server: 30 requests per minute per IP, 3 orders per 10 s per key)
# --------------------------------------------------------------------------------------------


def test_rate_limits(make_server: Callable[..., Server], deployment: str) -> None:
    """In both deployments (the distributed `investo up` passes the limits on to its gateway)."""
    limited = make_server("--rate-limit", "30", "--order-limit", "3")
    assert limited.deployment == deployment
    client = Api(limited.base_url)
    try:
        account = new_user(limited.base_url)  # 2 requests
        info = ok(client.get("/api/v3/exchangeInfo"))
        assert {
            "rateLimitType": "REQUEST_WEIGHT",
            "interval": "MINUTE",
            "intervalNum": 1,
            "limit": 30,
        } in info["rateLimits"]
        # orders: a fixed 10 s window, so 7 tries put at least 4 in one window
        answers = [client.signed("POST", "/api/v3/order", account, LIMIT) for _ in range(7)]
        too_many = [r for r in answers if r.status_code == 429]
        assert too_many, [r.status_code for r in answers]
        assert all(r.status_code in (200, 429) for r in answers)
        binance_error(too_many[0], -1003, 429)
        assert 1 <= int(too_many[0].headers["Retry-After"]) <= 10
        # requests per IP: a fixed 1 min window; 70 requests put at least 35 in one window
        burst = [client.get("/api/v3/ping") for _ in range(70)]
        refused = [r for r in burst if r.status_code == 429]
        assert refused and all(r.status_code in (200, 429) for r in burst)
        body = binance_error(refused[-1], -1003, 429)
        assert "REQUEST_WEIGHT" in body["msg"]
        assert 1 <= int(refused[-1].headers["Retry-After"]) <= 60
        assert httpx.get(limited.base_url + "/health").status_code == 200, "health is not rate limited"
    finally:
        client.close()


def test_unsigned_requests_do_not_use_up_a_keys_order_limit(make_server: Callable[..., Server]) -> None:
    limited = make_server("--order-limit", "3")
    client = Api(limited.base_url)
    try:
        victim = new_user(limited.base_url)
        while time.time() * 1000 % 10_000 > 8_000:  # stay inside one 10 s window of the limit
            time.sleep(0.05)
        headers = {API_KEY_HEADER: victim.api_key, "Content-Type": "application/x-www-form-urlencoded"}
        for _ in range(5):  # no signature: refused, and must not count as the victim's orders
            forged = client.http.post(
                "/api/v3/order", content=f"symbol={SYMBOL}&timestamp=1", headers=headers
            )
            binance_error(forged)
        assert ok(client.signed("POST", "/api/v3/order", victim, LIMIT))["status"] == "NEW"
    finally:
        client.close()


# --------------------------------------------------------------------------------------------
# Random parameters (hypothesis): never a 5xx, always Binance's shape
# --------------------------------------------------------------------------------------------

GOOD_ORDER_VALUES: dict[str, st.SearchStrategy[str]] = {
    "symbol": st.sampled_from(["TATAINR", "ZOMATOINR", "tatainr"]),
    "side": st.sampled_from(["BUY", "SELL"]),
    "type": st.sampled_from(["LIMIT", "MARKET", "LIMIT_MAKER"]),
    "timeInForce": st.sampled_from(["GTC", "IOC", "FOK"]),
    "quantity": st.integers(0, 30).map(str) | st.sampled_from(["0.5", "1.0", "1000000", "1000001"]),
    "quoteOrderQty": st.sampled_from(["100", "1000.5", "0.01", "0.001", "2500"]),
    "price": st.integers(0, 24_000).map(lambda ticks: f"{ticks * 5 // 100}.{ticks * 5 % 100:02d}"),
    "newClientOrderId": st.from_regex(r"[.A-Za-z0-9_-]{1,40}", fullmatch=True),
    "selfTradePreventionMode": st.sampled_from(["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"]),
    "newOrderRespType": st.sampled_from(["ACK", "RESULT", "FULL"]),
    "recvWindow": st.integers(1, 60_000).map(str),
    "computeCommissionRates": st.sampled_from(["true", "false"]),
}
GOOD_PUBLIC_VALUES: dict[str, st.SearchStrategy[str]] = {
    "symbol": st.sampled_from(["TATAINR", "ZOMATOINR"]),
    "symbols": st.sampled_from(['["TATAINR"]', '["TATAINR","ZOMATOINR"]', '["ZOMATOINR" ]', "[]", "TATAINR"]),
    "limit": st.sampled_from(["1", "5", "100", "500", "1000", "5000"]),
    "interval": st.sampled_from(["1m", "3m", "5m", "15m", "30m", "1h", "4h", "1d", "1w"]),
    "startTime": st.integers(0, 2 * 10**12).map(str),
    "endTime": st.integers(0, 2 * 10**12).map(str),
    "fromId": st.integers(0, 100).map(str),
}
BAD_VALUES = st.one_of(
    st.just(""),
    st.text(max_size=40),  # any unicode, control characters included
    st.integers(min_value=-(10**30), max_value=10**45).map(str),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.floats().map(repr),
    st.sampled_from(
        ["9" * 20, "9" * 40, "9" * 41, "1" * 1100, "0." + "0" * 19 + "1", str(2**63), str(2**63 - 1)]
    ),
)
JUNK_NAMES = (st.from_regex(r"[A-Za-z0-9_]{1,12}", fullmatch=True) | st.text(min_size=1, max_size=8)).filter(
    lambda name: name != "signature"
)


@st.composite
def mostly_plausible(draw: st.DrawFn, good: dict[str, st.SearchStrategy[str]]) -> dict[str, str]:
    """Each real parameter: left out, a plausible value, or garbage; then a little junk."""
    params = {}
    for name, plausible in good.items():
        roll = draw(st.integers(0, 9))
        if roll < 2:
            continue
        params[name] = draw(plausible if roll < 9 else BAD_VALUES)
    params.update(draw(st.dictionaries(JUNK_NAMES, BAD_VALUES, max_size=2)))
    return params


@st.composite
def near_valid_orders(draw: st.DrawFn) -> dict[str, str]:
    """A well-formed order of some type, then up to three mutations (drop, garble, add a stranger)."""
    g = GOOD_ORDER_VALUES
    kind = draw(st.sampled_from(["LIMIT", "LIMIT_MAKER", "MARKET", "MARKET_QUOTE"]))
    params = {"symbol": draw(g["symbol"]), "side": draw(g["side"]), "type": kind.removesuffix("_QUOTE")}
    if kind == "MARKET_QUOTE":
        params |= {"side": "BUY", "quoteOrderQty": draw(g["quoteOrderQty"])}
    else:
        params["quantity"] = draw(g["quantity"])
    if kind.startswith("LIMIT"):
        params["price"] = draw(g["price"])
    if kind == "LIMIT":
        params["timeInForce"] = draw(g["timeInForce"])
    for name in ("newClientOrderId", "selfTradePreventionMode", "newOrderRespType", "recvWindow"):
        if draw(st.booleans()):
            params[name] = draw(g[name])
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["drop", "garble", "other", "junk"]))
        if action == "drop" and params:
            params.pop(draw(st.sampled_from(sorted(params))))
        elif action == "garble" and params:
            params[draw(st.sampled_from(sorted(params)))] = draw(BAD_VALUES)
        elif action == "other":
            name = draw(st.sampled_from(sorted(g)))
            params[name] = draw(g[name] | BAD_VALUES)
        else:
            params[draw(JUNK_NAMES)] = draw(BAD_VALUES)
    return params


def assert_binance_shaped(response: httpx.Response) -> None:
    assert response.status_code < 500, f"{response.request.url} → {response.status_code} {response.text}"
    if response.status_code == 200:
        assert response.headers["content-type"].startswith("application/json")
        assert isinstance(response.json(), dict | list)
    else:
        binance_error(response)


@pytest.fixture(scope="module")
def fuzzer(server: Server, api: Api) -> Iterator[Account]:
    account = new_user(server.base_url)
    yield account
    for symbol in SYMBOLS:
        api.signed("DELETE", "/api/v3/openOrders", account, {"symbol": symbol})


FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@FUZZ
@given(params=near_valid_orders())
def test_random_orders_never_break_the_server(api: Api, fuzzer: Account, params: dict[str, str]) -> None:
    response = api.signed("POST", "/api/v3/order", fuzzer, params)
    assert_binance_shaped(response)
    if response.status_code == 200:
        assert {"symbol", "orderId", "clientOrderId", "transactTime"} <= set(response.json())


PUBLIC_PATHS = [
    "/api/v3/depth", "/api/v3/trades", "/api/v3/aggTrades", "/api/v3/klines", "/api/v3/ticker/24hr",
    "/api/v3/ticker/price", "/api/v3/ticker/bookTicker", "/api/v3/avgPrice", "/api/v3/exchangeInfo",
    "/api/v3/ping", "/api/v3/time", "/api/v1/investo/state",
]  # fmt: skip


@FUZZ
@given(
    path=st.sampled_from(PUBLIC_PATHS),
    params=mostly_plausible(GOOD_PUBLIC_VALUES),
)
def test_random_public_queries_never_break_the_server(api: Api, path: str, params: dict[str, str]) -> None:
    assert_binance_shaped(api.get(path, params))
