"""The history writer's rows (no database): what one trade and one deposit write.

A trade is its own record of what it moved: one ``trades`` row and no ledger row (the
readers of holdings add the trade's legs, :func:`investo.store.queries.trade_moves`);
the ledger holds deposits and withdrawals only.
"""

from __future__ import annotations

from investo.core.messages import (
    Deposit,
    Deposited,
    OrderAccepted,
    OrderPartiallyFilled,
    OrderType,
    Side,
    StpMode,
    TimeInForce,
    TradeExecuted,
    Withdrawn,
)
from investo.host import Applied
from investo.markets import load_markets
from investo.store.writer import _Rows

SYMBOL = "TATAINR"
T0 = 1_700_000_040_000
MARKETS = {symbol: spec.core for symbol, spec in load_markets(None).items()}


def rows_of(*applied: Applied) -> _Rows:
    rows = _Rows(MARKETS, {})
    for item in applied:
        rows.add(item)
    return rows


def limit(order_id: int, user: int, side: Side, lots: int) -> OrderAccepted:
    return OrderAccepted(
        T0, SYMBOL, order_id, user, side, OrderType.LIMIT, TimeInForce.GTC, 19_000, lots, 0, "", StpMode.NONE
    )


def test_a_trade_writes_its_row_and_no_ledger_rows() -> None:
    command = Deposit(T0, 1, "INR", 1)  # the rows come from the events only
    bid = limit(7, 1, Side.BUY, 5)
    ask = limit(8, 2, Side.SELL, 3)
    trade = TradeExecuted(3, T0 + 1, SYMBOL, 1, 19_000, 3, Side.SELL, 7, 1, 8, 2, 57, 114)
    rows = rows_of(
        Applied(1, command, [bid]),
        Applied(2, command, [ask, trade, OrderPartiallyFilled(4, T0 + 1, SYMBOL, 7, 1, 3)]),
    )
    tables = rows.tables()
    notional = 19_000 * 3 * MARKETS[SYMBOL].notional_unit
    assert tables.trades == [
        (SYMBOL, 1, 19_000, 3, notional, T0 + 1, "SELL", 7, 8, 1, 2, 57, 114, 2),
    ]
    assert tables.ledger == []
    assert [(row[0], row[5]) for row in tables.order_updates] == [
        (1, "OrderAccepted"),
        (2, "OrderAccepted"),
        (2, "OrderPartiallyFilled"),
    ]


def test_deposits_and_withdrawals_are_the_ledger() -> None:
    command = Deposit(T0, 1, "INR", 1)
    rows = rows_of(
        Applied(5, command, [Deposited(1, T0, 1, "INR", 1_000)]),
        Applied(6, command, [Withdrawn(2, T0 + 1, 1, "INR", 300)]),
    )
    assert rows.tables().ledger == [
        (5, 0, 1, "INR", 1_000, "deposit", None, None, T0),
        (6, 0, 1, "INR", -300, "withdraw", None, None, T0 + 1),
    ]
