"""``POST /api/v3/order/cancelReplace`` and the two ``/sapi/v1`` endpoints, over raw HTTP.

Binance's semantics: every parameter of both halves is checked before anything happens (a
refusal is a plain ``{"code", "msg"}`` and changes nothing: the engine's log offset, the open
orders and the balances stay as they were); then the cancel, then the new order unless the
cancel failed in ``STOP_ON_FAILURE`` mode. A half that failed makes the answer 409 -2021
("partially failed") or, with the cancel failed too, 400 -2022, each with ``data`` holding
both halves' results. The ccxt side (``edit_order``) is in test_ccxt.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import SYMBOL, Account, Api, Server, binance_error, new_user, ok, sign

from investo.api.app import create_app
from investo.markets import load_markets
from investo.node import Node, NodeConfig

MakeUser = Callable[..., Account]
PATH = "/api/v3/order/cancelReplace"
CANCEL_FIELDS = {
    "symbol", "origClientOrderId", "orderId", "orderListId", "clientOrderId", "transactTime", "price",
    "origQty", "executedQty", "cummulativeQuoteQty", "status", "timeInForce", "type", "side",
    "origQuoteOrderQty", "selfTradePreventionMode",
}  # fmt: skip
ACK_FIELDS = {"symbol", "orderId", "orderListId", "clientOrderId", "transactTime"}
RESULT_FIELDS = ACK_FIELDS | {
    "price", "origQty", "executedQty", "origQuoteOrderQty", "cummulativeQuoteQty", "status",
    "timeInForce", "type", "side", "workingTime", "selfTradePreventionMode",
}  # fmt: skip
UNKNOWN_ORDER = {"code": -2011, "msg": "Unknown order sent."}


def f8(value: int | str) -> str:
    """Binance's decimal string: fixed point, 8 decimals."""
    return f"{Decimal(value):.8f}"


def replace(api: Api, account: Account, **params: Any) -> httpx.Response:
    """A cancelReplace of a LIMIT BUY 2 @ 990 GTC, STOP_ON_FAILURE; ``name=None`` leaves a parameter out."""
    full = {
        "symbol": SYMBOL, "cancelReplaceMode": "STOP_ON_FAILURE", "side": "BUY", "type": "LIMIT",
        "timeInForce": "GTC", "quantity": "2", "price": "990", **params,
    }  # fmt: skip
    return api.signed("POST", PATH, account, {k: v for k, v in full.items() if v is not None})


def failed(response: httpx.Response, code: int, status: int) -> dict[str, Any]:
    """A cancelReplace failure: ``{"code", "msg", "data": {four fields}}``; the data."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "msg", "data"} and body["code"] == code, body
    message = {-2021: "Order cancel-replace partially failed.", -2022: "Order cancel-replace failed."}
    assert body["msg"] == message[code]
    data: dict[str, Any] = body["data"]
    assert set(data) == {"cancelResult", "newOrderResult", "cancelResponse", "newOrderResponse"}
    return data


def state_of(api: Api, account: Account) -> tuple[Any, ...]:
    """Everything a refused request must leave alone."""
    return api.state(), api.open_orders(account), api.balances(account)


def test_replace_an_order(api: Api, make_user: MakeUser) -> None:
    trader = make_user()
    old = api.limit(trader, "BUY", "1", "980", newClientOrderId="first")
    body = ok(replace(api, trader, cancelOrderId=old["orderId"], cancelNewClientOrderId="the-cancel"))
    assert set(body) == {"cancelResult", "newOrderResult", "cancelResponse", "newOrderResponse"}
    assert (body["cancelResult"], body["newOrderResult"]) == ("SUCCESS", "SUCCESS")
    canceled, new = body["cancelResponse"], body["newOrderResponse"]
    assert set(canceled) == CANCEL_FIELDS
    assert (canceled["orderId"], canceled["origClientOrderId"], canceled["clientOrderId"]) == (
        old["orderId"], "first", "the-cancel",
    )  # fmt: skip
    assert (canceled["status"], canceled["price"], canceled["origQty"]) == ("CANCELED", f8(980), f8(1))
    assert set(new) == RESULT_FIELDS | {"fills"}  # LIMIT: FULL by default, as POST /api/v3/order
    assert (new["status"], new["price"], new["origQty"], new["side"], new["fills"]) == (
        "NEW", f8(990), f8(2), "BUY", [],
    )  # fmt: skip
    assert api.get_order(trader, orderId=old["orderId"])["status"] == "CANCELED"
    assert [o["orderId"] for o in api.open_orders(trader)] == [new["orderId"]]

    # by client order id, reusing it for the new order (the old one is no longer open), ACK answer
    body = ok(
        replace(
            api, trader, cancelOrigClientOrderId=new["clientOrderId"], newClientOrderId=new["clientOrderId"],
            newOrderRespType="ACK", price="995", quantity="3",
        )
    )  # fmt: skip
    assert body["cancelResponse"]["orderId"] == new["orderId"]
    assert set(body["newOrderResponse"]) == ACK_FIELDS
    assert body["newOrderResponse"]["clientOrderId"] == new["clientOrderId"]
    newest = api.get_order(trader, orderId=body["newOrderResponse"]["orderId"])
    assert (newest["status"], newest["price"], newest["origQty"]) == ("NEW", f8(995), f8(3))

    # both ids: the order found by id must carry that client id
    both = ok(
        replace(
            api, trader, cancelOrderId=newest["orderId"], cancelOrigClientOrderId=newest["clientOrderId"],
            newOrderRespType="RESULT", side="SELL", price="1100",
        )
    )  # fmt: skip
    assert set(both["newOrderResponse"]) == RESULT_FIELDS
    assert [o["side"] for o in api.open_orders(trader)] == ["SELL"]


def test_replaced_into_a_trade(api: Api, make_user: MakeUser) -> None:
    trader, maker = make_user(), make_user()
    api.limit(maker, "SELL", "2", "1000")
    old = api.limit(trader, "BUY", "2", "950")
    body = ok(replace(api, trader, cancelOrderId=old["orderId"], type="MARKET", timeInForce=None, price=None))
    new = body["newOrderResponse"]
    assert (new["status"], new["executedQty"], new["cummulativeQuoteQty"]) == ("FILLED", f8(2), f8(2000))
    assert [(f["price"], f["qty"]) for f in new["fills"]] == [(f8(1000), f8(2))]
    assert api.open_orders(trader) == [] and api.open_orders(maker) == []


def test_cancel_fails_stop_on_failure(api: Api, make_user: MakeUser) -> None:
    trader = make_user()
    kept = api.limit(trader, "BUY", "1", "970")
    before = state_of(api, trader)
    data = failed(replace(api, trader, cancelOrderId=kept["orderId"] + 1_000), -2022, 400)
    assert data == {
        "cancelResult": "FAILURE",
        "newOrderResult": "NOT_ATTEMPTED",
        "cancelResponse": UNKNOWN_ORDER,
        "newOrderResponse": None,
    }
    mismatch = replace(api, trader, cancelOrderId=kept["orderId"], cancelOrigClientOrderId="not-its-id")
    assert failed(mismatch, -2022, 400)["cancelResponse"] == UNKNOWN_ORDER
    assert state_of(api, trader)[1:] == before[1:]  # the refused cancel is in the log, nothing else


def test_cancel_fails_allow_failure(api: Api, make_user: MakeUser) -> None:
    trader = make_user()
    response = replace(api, trader, cancelReplaceMode="ALLOW_FAILURE", cancelOrigClientOrderId="gone")
    data = failed(response, -2021, 409)
    assert (data["cancelResult"], data["newOrderResult"], data["cancelResponse"]) == (
        "FAILURE", "SUCCESS", UNKNOWN_ORDER,
    )  # fmt: skip
    assert data["newOrderResponse"]["status"] == "NEW"
    assert [o["orderId"] for o in api.open_orders(trader)] == [data["newOrderResponse"]["orderId"]]

    # both halves fail: 400 -2022 with both errors
    data = failed(
        replace(
            api, trader, cancelReplaceMode="ALLOW_FAILURE", cancelOrderId=123_456_789, quantity="100000",
        ),
        -2022, 400,
    )  # fmt: skip
    assert data == {
        "cancelResult": "FAILURE",
        "newOrderResult": "FAILURE",
        "cancelResponse": UNKNOWN_ORDER,
        "newOrderResponse": {"code": -2010, "msg": "Account has insufficient balance for requested action."},
    }
    assert len(api.open_orders(trader)) == 1


@pytest.mark.parametrize("mode", ["STOP_ON_FAILURE", "ALLOW_FAILURE"])
def test_new_order_fails_after_the_cancel(api: Api, make_user: MakeUser, mode: str) -> None:
    trader, maker = make_user(), make_user()
    api.limit(maker, "SELL", "1", "1000")
    old = api.limit(trader, "BUY", "1", "990")
    response = replace(
        api, trader, cancelReplaceMode=mode, cancelOrderId=old["orderId"], type="LIMIT_MAKER",
        timeInForce=None, price="1000",
    )  # fmt: skip
    data = failed(response, -2021, 409)
    assert (data["cancelResult"], data["newOrderResult"]) == ("SUCCESS", "FAILURE")
    assert data["cancelResponse"]["orderId"] == old["orderId"]
    assert data["cancelResponse"]["status"] == "CANCELED"
    assert data["newOrderResponse"] == {"code": -2010, "msg": "Order would immediately match and take."}
    assert api.open_orders(trader) == []


BAD_PARAMS: list[tuple[dict[str, Any], int]] = [
    ({"cancelReplaceMode": None}, -1102),
    ({"cancelReplaceMode": "SOMETIMES"}, -1130),
    ({"cancelOrderId": None}, -1102),  # neither cancelOrderId nor cancelOrigClientOrderId
    ({"cancelOrderId": "x1"}, -1100),
    ({"cancelOrigClientOrderId": "bad id!"}, -1100),
    ({"cancelNewClientOrderId": "bad id!"}, -1100),
    ({"side": "HOLD"}, -1117),
    ({"type": "STOP_LOSS"}, -1116),
    ({"timeInForce": "GTD"}, -1115),
    ({"quantity": None}, -1102),
    ({"price": "990.03"}, -1013),  # tick 0.05
    ({"price": "4"}, -1013),  # notional 8, under 10
    ({"quantity": "1.5"}, -1013),  # lot 1
    ({"newOrderRespType": "ALL"}, -1130),
    ({"newClientOrderId": "bad id!"}, -1100),
    ({"selfTradePreventionMode": "SOMETIMES"}, -1130),
    ({"symbol": "NOPEINR"}, -1121),
    ({"cancelRestrictions": "ONLY_NEW"}, -1000),  # refused: Investo cannot apply it atomically
    ({"cancelRestrictions": "NEVER"}, -1145),
    ({"orderRateLimitExceededMode": "CANCEL_ONLY"}, -1000),
    ({"orderRateLimitExceededMode": "MAYBE"}, -1130),
]


@pytest.mark.parametrize(("change", "code"), BAD_PARAMS)
def test_bad_parameters_change_nothing(
    api: Api, make_user: MakeUser, change: dict[str, Any], code: int
) -> None:
    trader = make_user()
    kept = api.limit(trader, "BUY", "1", "970")
    before = state_of(api, trader)
    binance_error(replace(api, trader, **{"cancelOrderId": kept["orderId"], **change}), code)
    assert state_of(api, trader) == before


def test_bad_signature_and_key_change_nothing(api: Api, make_user: MakeUser) -> None:
    trader, other = make_user(), make_user()
    kept = api.limit(trader, "BUY", "1", "970")
    before = state_of(api, trader)
    params = {
        "symbol": SYMBOL, "cancelReplaceMode": "STOP_ON_FAILURE", "cancelOrderId": kept["orderId"],
        "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "1", "price": "990",
    }  # fmt: skip
    signed = sign(trader, params)
    tampered = signed.replace("price=990", "price=995")
    binance_error(api.send("POST", PATH, tampered, trader), -1022)
    binance_error(api.send("POST", PATH, sign(other, params), trader), -1022)  # signed by another key
    binance_error(api.send("POST", PATH, signed, None), -2014, 401)  # no API key
    # another user cannot cancel it: the cancel fails, nothing is placed
    assert failed(api.signed("POST", PATH, other, params), -2022, 400)["cancelResponse"] == UNKNOWN_ORDER
    assert state_of(api, trader)[1:] == before[1:]


def test_counts_against_the_keys_order_limit(make_server: Callable[..., Server]) -> None:
    """Like a new order; over the limit: 429 -1003 before anything happens (the order stays)."""
    limited = make_server("--order-limit", "2")
    client = Api(limited.base_url)
    try:
        trader = new_user(limited.base_url)
        while time.time() * 1000 % 10_000 > 7_000:  # stay inside one 10 s window of the limit
            time.sleep(0.05)
        kept = client.limit(trader, "BUY", "1", "970")  # order 1 of 2
        ok(replace(client, trader, cancelOrderId=kept["orderId"]))  # order 2 of 2
        last = client.open_orders(trader)
        before = state_of(client, trader)
        binance_error(replace(client, trader, cancelOrderId=last[0]["orderId"]), -1003, 429)
        assert state_of(client, trader) == before
    finally:
        client.close()


def test_delete_order_with_both_ids_checks_they_agree(api: Api, make_user: MakeUser) -> None:
    trader = make_user()
    kept = api.limit(trader, "BUY", "1", "970", newClientOrderId="mine")
    before = state_of(api, trader)
    both = {"symbol": SYMBOL, "orderId": kept["orderId"], "origClientOrderId": "not-mine"}
    binance_error(api.signed("DELETE", "/api/v3/order", trader, both), -2011)
    assert state_of(api, trader) == before
    both["origClientOrderId"] = "mine"
    assert ok(api.signed("DELETE", "/api/v3/order", trader, both))["status"] == "CANCELED"


def test_exchange_info_allows_cancel_replace(api: Api) -> None:
    info = api.public("/api/v3/exchangeInfo")
    assert all(s["cancelReplaceAllowed"] is True for s in info["symbols"])


# --------------------------------------------------------------------------------------------
# /sapi/v1
# --------------------------------------------------------------------------------------------


def test_system_status(api: Api) -> None:
    assert api.public("/sapi/v1/system/status") == {"status": 0, "msg": "normal"}


async def test_system_status_while_the_node_is_not_ready(tmp_path: Path) -> None:
    """In-process: `investo up` serves only once its node is ready, so "maintenance" is seen
    only around a start or a stop; here the app runs over a node that was never started."""
    app = create_app(Node(NodeConfig(tmp_path / "data", load_markets())))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://investo") as http:
        response = await http.get("/sapi/v1/system/status")
    assert (response.status_code, response.json()) == (200, {"status": 1, "msg": "system_maintenance"})


def test_trade_fee(api: Api, make_user: MakeUser) -> None:
    trader = make_user(funded=False)
    every = api.call("GET", "/sapi/v1/asset/tradeFee", trader)
    assert every == [
        {"symbol": "TATAINR", "makerCommission": "0.001", "takerCommission": "0.002"},
        {"symbol": "ZOMATOINR", "makerCommission": "0.001", "takerCommission": "0.002"},
    ]
    one = api.call("GET", "/sapi/v1/asset/tradeFee", trader, symbol="ZOMATOINR")
    assert one == [every[1]]
    binance_error(api.signed("GET", "/sapi/v1/asset/tradeFee", trader, {"symbol": "NOPE"}), -1121)
    binance_error(api.get("/sapi/v1/asset/tradeFee", {"timestamp": 1}), -2014, 401)  # unsigned
