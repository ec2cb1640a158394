"""The JSON shapes of Binance's spot API, built from Investo's integer values.

An :class:`OrderView` is one order as the API shows it, whether it comes from
the events a command just caused or from the SQL history; the ``*_json``
functions turn it into Binance's field names and decimal strings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from investo.api import units
from investo.core.messages import (
    Event,
    ExpireReason,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRested,
    OrderType,
    Side,
    StpMode,
    TimeInForce,
    TradeExecuted,
)
from investo.markets import MarketSpec

ZERO8 = "0.00000000"
ORDER_TYPES = {"LIMIT": OrderType.LIMIT, "LIMIT_MAKER": OrderType.LIMIT_MAKER, "MARKET": OrderType.MARKET}
SIDES = {"BUY": Side.BUY, "SELL": Side.SELL}
TIFS = {"GTC": TimeInForce.GTC, "IOC": TimeInForce.IOC, "FOK": TimeInForce.FOK}
STP_MODES = {m.name: m for m in StpMode}


@dataclass
class Fill:
    price: int
    qty: int
    commission: int
    trade_id: int


@dataclass
class OrderView:
    spec: MarketSpec
    order_id: int
    client_order_id: str
    side: str
    type: str
    time_in_force: str
    price: int  # ticks (0 for market orders)
    orig_qty: int  # lots (0 for a market buy by quote amount)
    orig_quote_qty: int  # quote units (market buy by quote amount), else 0
    executed_qty: int = 0
    cum_quote_qty: int = 0
    status: str = "NEW"
    stp_mode: str = "EXPIRE_MAKER"
    time_ms: int = 0
    update_time_ms: int = 0
    fills: list[Fill] = field(default_factory=list)

    @property
    def is_working(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")


def view_of_accepted(spec: MarketSpec, accepted: OrderAccepted, orig_quote_qty: int) -> OrderView:
    return OrderView(
        spec=spec,
        order_id=accepted.order_id,
        client_order_id=accepted.client_order_id,
        side=accepted.side.name,
        type=accepted.type.name,
        time_in_force="GTC" if accepted.type != OrderType.LIMIT else accepted.tif.name,
        price=accepted.price,
        orig_qty=accepted.qty,
        orig_quote_qty=orig_quote_qty,
        stp_mode=accepted.stp.name,
        time_ms=accepted.ts,
        update_time_ms=accepted.ts,
    )


def apply_events(view: OrderView, events: list[Event]) -> OrderView:
    """Bring ``view`` up to date with the events of the command that placed it."""
    unit = view.spec.core.notional_unit
    for event in events:
        if isinstance(event, TradeExecuted) and view.order_id in (event.taker_order_id, event.maker_order_id):
            is_taker = event.taker_order_id == view.order_id
            view.executed_qty += event.qty
            view.cum_quote_qty += event.price * event.qty * unit
            fee = event.taker_fee if is_taker else event.maker_fee
            view.fills.append(Fill(event.price, event.qty, fee, event.trade_id))
        elif getattr(event, "order_id", None) != view.order_id:
            continue
        elif isinstance(event, OrderFilled):
            view.status = "FILLED"
        elif isinstance(event, OrderPartiallyFilled | OrderRested):
            view.status = "PARTIALLY_FILLED" if view.executed_qty else "NEW"
        elif isinstance(event, OrderCanceled):
            view.status = "CANCELED"
        elif isinstance(event, OrderExpired):
            view.status = "EXPIRED_IN_MATCH" if event.reason == ExpireReason.SELF_TRADE else "EXPIRED"
    return view


def weighted_price(spec: MarketSpec, quote_volume: int, volume: int) -> str:
    """Quote traded per base traded, rounded down to 8 decimals ("0.00000000" when none)."""
    if not volume:
        return "0.00000000"
    price = Fraction(quote_volume, 10**spec.quote_decimals) / (volume * Fraction(spec.lot_size))
    return units.format_amount(math.floor(price * 10**8), 8)


def price_change(spec: MarketSpec, open_price: int, last_price: int) -> tuple[str, str]:
    """Binance's ``priceChange`` and ``priceChangePercent`` (3 decimals; display only)."""
    change = last_price - open_price
    percent = f"{change * 100 / open_price:.3f}" if open_price else "0.000"
    return ("-" if change < 0 else "") + spec.format_price(abs(change)), percent


def _quote(view: OrderView, amount: int) -> str:
    return units.format_amount(amount, view.spec.quote_decimals)


def _price(view: OrderView) -> str:
    return view.spec.format_price(view.price) if view.price else ZERO8


def ack_json(view: OrderView) -> dict[str, Any]:
    return {
        "symbol": view.spec.symbol,
        "orderId": view.order_id,
        "orderListId": -1,
        "clientOrderId": view.client_order_id,
        "transactTime": view.time_ms,
    }


def _common(view: OrderView) -> dict[str, Any]:
    return {
        "price": _price(view),
        "origQty": view.spec.format_qty(view.orig_qty),
        "executedQty": view.spec.format_qty(view.executed_qty),
        "origQuoteOrderQty": _quote(view, view.orig_quote_qty),
        "cummulativeQuoteQty": _quote(view, view.cum_quote_qty),
        "status": view.status,
        "timeInForce": view.time_in_force,
        "type": view.type,
        "side": view.side,
    }


def result_json(view: OrderView) -> dict[str, Any]:
    return {
        **ack_json(view),
        **_common(view),
        "workingTime": view.time_ms,
        "selfTradePreventionMode": view.stp_mode,
    }


def full_json(view: OrderView) -> dict[str, Any]:
    fills = [
        {
            "price": view.spec.format_price(f.price),
            "qty": view.spec.format_qty(f.qty),
            "commission": _quote(view, f.commission),
            "commissionAsset": view.spec.quote,
            "tradeId": f.trade_id,
        }
        for f in view.fills
    ]
    return {**result_json(view), "fills": fills}


def order_json(view: OrderView) -> dict[str, Any]:
    """An order as ``GET /api/v3/order`` and friends show it."""
    common = _common(view)
    return {
        "symbol": view.spec.symbol,
        "orderId": view.order_id,
        "orderListId": -1,
        "clientOrderId": view.client_order_id,
        **{k: common[k] for k in ("price", "origQty", "executedQty")},
        "cummulativeQuoteQty": common["cummulativeQuoteQty"],
        **{k: common[k] for k in ("status", "timeInForce", "type", "side")},
        "stopPrice": ZERO8,
        "icebergQty": ZERO8,
        "time": view.time_ms,
        "updateTime": view.update_time_ms,
        "isWorking": view.is_working,
        "workingTime": view.time_ms,
        "origQuoteOrderQty": common["origQuoteOrderQty"],
        "selfTradePreventionMode": view.stp_mode,
    }


def cancel_json(view: OrderView, cancel_client_id: str, ts: int) -> dict[str, Any]:
    """The answer to ``DELETE /api/v3/order``."""
    common = _common(view)
    del common["origQuoteOrderQty"]
    return {
        "symbol": view.spec.symbol,
        "origClientOrderId": view.client_order_id,
        "orderId": view.order_id,
        "orderListId": -1,
        "clientOrderId": cancel_client_id,
        "transactTime": ts,
        **common,
        "origQuoteOrderQty": _quote(view, view.orig_quote_qty),
        "selfTradePreventionMode": view.stp_mode,
    }
