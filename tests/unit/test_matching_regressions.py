"""Bugs once found in investo.core.matching, each reduced to a minimal case that now passes."""

from __future__ import annotations

from investo.core.markets import Market
from investo.core.matching import MatchingEngine
from investo.core.messages import (
    OrderAccepted,
    OrderExpired,
    OrderType,
    Side,
    StpMode,
    TimeInForce,
    TradeExecuted,
)

MARKET = Market("X_Q", "X", "Q", notional_unit=1, lot_units=1)


def accepted(
    order_id: int,
    user: int,
    side: Side,
    price: int,
    qty: int,
    type: OrderType = OrderType.LIMIT,
    tif: TimeInForce = TimeInForce.GTC,
    quote_limit: int = 0,
    stp: StpMode = StpMode.EXPIRE_MAKER,
) -> OrderAccepted:
    return OrderAccepted(1, "X_Q", order_id, user, side, type, tif, price, qty, quote_limit, "", stp)


def test_fok_that_would_take_with_self_trade_prevention_on() -> None:
    # Fixed: any FOK limit that crossed the book with stp != NONE (the default is
    # EXPIRE_MAKER) reached MatchingEngine._fillable_at before it existed: AttributeError.
    engine = MatchingEngine(MARKET)
    engine.apply(accepted(1, 1, Side.SELL, 100, 1))
    events = engine.apply(accepted(2, 2, Side.BUY, 100, 1, tif=TimeInForce.FOK))
    assert isinstance(events[0], TradeExecuted)


def test_market_buy_by_qty_never_spends_more_than_quote_limit() -> None:
    # quote_limit 100 pays for exactly one lot at 100. In _take, ``budget -= notional + fee``
    # leaves 0, and every later ``if budget:`` check reads 0 as "no cap": the order goes on
    # to buy the second lot too, spending 200 of a 100 limit (the accounts engine's
    # reservation goes negative).
    engine = MatchingEngine(MARKET)
    engine.apply(accepted(1, 1, Side.SELL, 100, 1))
    engine.apply(accepted(2, 2, Side.SELL, 100, 1))
    events = engine.apply(accepted(3, 3, Side.BUY, 0, 2, OrderType.MARKET, TimeInForce.IOC, quote_limit=100))
    spent = sum(e.price * e.qty + e.taker_fee for e in events if isinstance(e, TradeExecuted))
    assert spent <= 100
    expired = [e for e in events if isinstance(e, OrderExpired)]
    assert len(expired) == 1 and expired[0].remaining == 1
