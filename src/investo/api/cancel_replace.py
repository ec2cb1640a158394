"""``POST /api/v3/order/cancelReplace`` (signed): cancel one order and place another, as Binance does.

Parameters: the new order's, exactly as ``POST /api/v3/order`` takes them (``symbol``,
``side``, ``type``, ``timeInForce``, ``quantity``, ``quoteOrderQty``, ``price``,
``newClientOrderId``, ``selfTradePreventionMode``, ``newOrderRespType``), plus
``cancelReplaceMode`` (``STOP_ON_FAILURE`` or ``ALLOW_FAILURE``, mandatory), ``cancelOrderId``
and/or ``cancelOrigClientOrderId`` (the order to cancel; with both, the order found by id
must carry that client id) and ``cancelNewClientOrderId`` (the cancel's own client id).

Order of events (Binance's):

1. Everything is read and checked first (signature, the key's order limit, every parameter
   of both halves, the new order's filters). A refusal here is a plain ``{"code", "msg"}``
   and nothing has changed.
2. The cancel, through the same code path as ``DELETE /api/v3/order``.
3. The new order, through the same code path as ``POST /api/v3/order``; not attempted when
   the cancel failed in ``STOP_ON_FAILURE`` mode.

Answers: both succeeded: 200 ``{"cancelResult": "SUCCESS", "newOrderResult": "SUCCESS",
"cancelResponse": <as DELETE /api/v3/order>, "newOrderResponse": <as POST /api/v3/order>}``.
One failed: 409 ``{"code": -2021, "msg": "Order cancel-replace partially failed.", "data":
{…the same four fields…}}``; the cancel failed and the new order failed or was not attempted:
400 with -2022 "Order cancel-replace failed.". A failed half's response is its own
``{"code", "msg"}``; a half not attempted is ``null``.

Not atomic: the cancel and the new order are two commands of the engine, so another
command may be applied between them (on Binance the matching engine does both in one step).
``cancelRestrictions`` and ``orderRateLimitExceededMode=CANCEL_ONLY`` are refused: the first
would need the order's status checked in the same step as its cancel.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from investo.api import errors, trading
from investo.api.nodes import ApiNode
from investo.api.signed import param_docs, verify

PATH = "/api/v3/order/cancelReplace"
MODES = ("STOP_ON_FAILURE", "ALLOW_FAILURE")
PARAMS = (
    "symbol!", "side!", "type!", "cancelReplaceMode!", "timeInForce", "quantity", "quoteOrderQty",
    "price", "cancelNewClientOrderId", "cancelOrigClientOrderId", "cancelOrderId", "newClientOrderId",
    "newOrderRespType", "selfTradePreventionMode", "orderRateLimitExceededMode",
)  # fmt: skip


def router(node: ApiNode) -> APIRouter:
    api = APIRouter(tags=["trading (signed)"])

    @api.post(PATH, openapi_extra=param_docs(*PARAMS, signed=True))
    async def cancel_replace(request: Request) -> Any:
        """Cancel an open order and place a new one in the same market (Binance's semantics)."""
        call = await verify(node, request)
        p = call.params
        if p.has("orderRateLimitExceededMode") and p.text("orderRateLimitExceededMode") != "DO_NOTHING":
            if p.text("orderRateLimitExceededMode") != "CANCEL_ONLY":
                raise errors.invalid_param("orderRateLimitExceededMode", "")
            raise errors.unsupported("orderRateLimitExceededMode=CANCEL_ONLY is not supported by Investo.")
        trading.count_order(node, call)
        spec = p.symbol(node.markets)
        mode = p.text("cancelReplaceMode")
        if mode not in MODES:
            raise errors.invalid_param("cancelReplaceMode", "")
        if p.has("cancelRestrictions"):
            if p.text("cancelRestrictions") not in ("ONLY_NEW", "ONLY_PARTIALLY_FILLED"):
                raise errors.ApiError(-1145, "Invalid cancelRestrictions")
            raise errors.unsupported(
                "cancelRestrictions is not supported by Investo: it cannot check an order's status "
                "and cancel it in one step."
            )
        target = trading.read_cancel_target(
            p, "cancelOrderId", "cancelOrigClientOrderId", "cancelNewClientOrderId"
        )
        order = trading.read_new_order(spec, call.user_id, p)
        trading.check_filters(order)

        data: dict[str, Any] = {
            "cancelResult": "SUCCESS",
            "newOrderResult": "NOT_ATTEMPTED",
            "cancelResponse": None,
            "newOrderResponse": None,
        }
        try:
            data["cancelResponse"] = await trading.cancel(node, call.user_id, spec, target)
        except errors.ApiError as error:
            if error.status >= 500:  # the outcome is unknown: say so, as a plain cancel would
                raise
            data["cancelResult"], data["cancelResponse"] = "FAILURE", error.body()
            if mode == "STOP_ON_FAILURE":
                raise errors.cancel_replace_failed(data) from None
        try:
            data["newOrderResponse"] = await trading.place(node, order)
            data["newOrderResult"] = "SUCCESS"
        except errors.ApiError as error:
            if error.status >= 500:
                raise
            data["newOrderResult"], data["newOrderResponse"] = "FAILURE", error.body()
        failed = [data["cancelResult"], data["newOrderResult"]].count("FAILURE")
        if failed == 2:
            raise errors.cancel_replace_failed(data)
        if failed == 1:
            raise errors.cancel_replace_partially_failed(data)
        return data

    return api
