"""Binance-style API errors: ``{"code": -1121, "msg": "Invalid symbol."}`` with its HTTP status.

Every refusal of the REST API is an :class:`ApiError`. Codes and messages follow
Binance's spot API where Binance has one (clients such as ccxt map them to their
own exceptions: -2011 "Unknown order sent." is ``OrderNotFound``, -2010
"Account has insufficient balance for requested action." is ``InsufficientFunds``).
"""

from __future__ import annotations

from typing import Any

from investo.core.messages import RejectCode


class ApiError(Exception):
    """A refusal: ``{"code", "msg"}`` (plus ``"data"`` where Binance sends one) and its HTTP status."""

    def __init__(self, code: int, msg: str, status: int = 400, data: dict[str, Any] | None = None) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status
        self.data = data
        self.headers: dict[str, str] = {}

    def body(self) -> dict[str, Any]:
        if self.data is None:
            return {"code": self.code, "msg": self.msg}
        return {"code": self.code, "msg": self.msg, "data": self.data}


def unknown_error() -> ApiError:
    return ApiError(-1000, "An unknown error occurred while processing the request.", 500)


def too_many_requests(what: str) -> ApiError:
    return ApiError(-1003, f"Too many requests; {what}.", 429)


def unsupported(msg: str) -> ApiError:
    return ApiError(-1000, msg)


def illegal_chars(name: str, legal: str) -> ApiError:
    return ApiError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '{legal}'.")


def too_many_params() -> ApiError:
    return ApiError(-1101, "Too many parameters sent for this endpoint.")


def duplicate_param(name: str) -> ApiError:
    return ApiError(-1101, f"Duplicate values for parameter '{name}'.")


def missing(name: str) -> ApiError:
    return ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def missing_one_of(a: str, b: str) -> ApiError:
    return ApiError(-1102, f"Param '{a}' or '{b}' must be sent, but both were empty/null!")


def not_required(name: str) -> ApiError:
    return ApiError(-1106, f"Parameter '{name}' sent when not required.")


def bad_precision() -> ApiError:
    return ApiError(-1111, "Parameter has too much precision.")


def invalid_tif() -> ApiError:
    return ApiError(-1115, "Invalid timeInForce.")


def invalid_order_type() -> ApiError:
    return ApiError(-1116, "Invalid orderType.")


def invalid_side() -> ApiError:
    return ApiError(-1117, "Invalid side.")


def invalid_symbol() -> ApiError:
    return ApiError(-1121, "Invalid symbol.")


def invalid_interval() -> ApiError:
    return ApiError(-1120, "Invalid interval.")


def invalid_param(name: str, why: str) -> ApiError:
    return ApiError(-1130, f"Data sent for parameter '{name}' is not valid. {why}".strip())


def filter_failure(name: str) -> ApiError:
    return ApiError(-1013, f"Filter failure: {name}")


def invalid_quantity() -> ApiError:
    return ApiError(-1013, "Invalid quantity.")


def new_order_rejected(msg: str) -> ApiError:
    return ApiError(-2010, msg)


def unknown_order() -> ApiError:
    return ApiError(-2011, "Unknown order sent.")


def no_such_order() -> ApiError:
    return ApiError(-2013, "Order does not exist.")


def cancel_replace_partially_failed(data: dict[str, Any]) -> ApiError:
    """One of the two halves of ``POST /api/v3/order/cancelReplace`` failed (HTTP 409)."""
    return ApiError(-2021, "Order cancel-replace partially failed.", 409, data)


def cancel_replace_failed(data: dict[str, Any]) -> ApiError:
    """The cancel failed and the new order failed or was not attempted (HTTP 400)."""
    return ApiError(-2022, "Order cancel-replace failed.", 400, data)


def status_unknown(client_order_id: str | None = None) -> ApiError:
    """Binance's -1007: the command may or may not have been executed (never retried by itself)."""
    msg = "Timeout waiting for response from backend server. Send status unknown; execution status unknown."
    if client_order_id:
        msg += f" Look the order up with GET /api/v3/order and origClientOrderId={client_order_id}."
    return ApiError(-1007, msg, 503)


def service_unavailable(msg: str) -> ApiError:
    return ApiError(-1001, msg, 503)


_REJECT_MESSAGES = {
    RejectCode.INSUFFICIENT_BALANCE: "Account has insufficient balance for requested action.",
    RejectCode.DUPLICATE_CLIENT_ORDER_ID: "Duplicate order sent.",
    RejectCode.WOULD_TAKE: "Order would immediately match and take.",
    RejectCode.MIN_NOTIONAL: "Filter failure: NOTIONAL",
    RejectCode.INVALID_PRICE: "Filter failure: PRICE_FILTER",
    RejectCode.INVALID_QUANTITY: "Filter failure: LOT_SIZE",
    RejectCode.UNKNOWN_MARKET: "Invalid symbol.",
}


def from_reject(code: RejectCode) -> ApiError:
    """The API error for an engine's rejection of a new order."""
    if code in (RejectCode.MIN_NOTIONAL, RejectCode.INVALID_PRICE, RejectCode.INVALID_QUANTITY):
        return ApiError(-1013, _REJECT_MESSAGES[code])
    if code == RejectCode.UNKNOWN_MARKET:
        return invalid_symbol()
    return new_order_rejected(_REJECT_MESSAGES.get(code, f"Order rejected ({code.name})."))
