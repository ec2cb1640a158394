"""Random sessions through the in-process exchange keep every invariant after every command."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from investo.core.exchange import Exchange
from investo.core.markets import Market
from investo.core.messages import (
    CancelAll,
    CancelOrder,
    Command,
    Deposit,
    Deposited,
    OrderType,
    PlaceOrder,
    Side,
    StpMode,
    TimeInForce,
    Withdraw,
    Withdrawn,
)

MARKETS = [
    Market("TATA_INR", "TATA", "INR", notional_unit=10, lot_units=100, maker_fee_bps=10, taker_fee_bps=20),
    Market("ZOMATO_INR", "ZOMATO", "INR", notional_unit=1, lot_units=1, taker_fee_bps=25, min_notional=50),
]
SYMBOLS = [m.symbol for m in MARKETS]
ASSETS = ["INR", "TATA", "ZOMATO"]
FEE_ACCOUNT = 0
FUNDS = st.sampled_from([300, 3_000, 30_000, 100_000])  # opening deposit per user and asset


@st.composite
def place_orders(draw: st.DrawFn, users: list[int], ts: int) -> PlaceOrder:
    user = draw(st.sampled_from(users))
    market = draw(st.sampled_from(SYMBOLS))
    side = draw(st.sampled_from(Side))
    type_ = draw(st.sampled_from(OrderType))
    tif = draw(st.sampled_from(TimeInForce))
    stp = draw(st.sampled_from(StpMode))
    client_order_id = draw(st.sampled_from(["", "", "a", "b"]))
    price, qty, quote_qty = draw(st.integers(95, 105)), draw(st.integers(1, 8)), 0
    if type_ == OrderType.MARKET:
        price = 0
        if side == Side.BUY and draw(st.booleans()):
            qty, quote_qty = 0, draw(st.integers(1, 3_000))
    if draw(st.integers(0, 30)) == 0:  # now and then an order that validation refuses
        price, qty = draw(st.sampled_from([(0, qty), (price, 0), (-1, -1)]))
    return PlaceOrder(ts, user, market, side, type_, tif, price, qty, quote_qty, client_order_id, stp)


@st.composite
def sessions(draw: st.DrawFn) -> list[Command]:
    users = list(range(1, draw(st.integers(3, 5)) + 1))
    commands: list[Command] = [Deposit(0, u, a, draw(FUNDS)) for u in users for a in ASSETS]
    for ts in range(1, draw(st.integers(1, 60)) + 1):
        kind = draw(
            st.sampled_from(["place"] * 6 + ["cancel", "cancel", "cancel_all", "deposit", "withdraw"])
        )
        user = draw(st.sampled_from(users))
        market = draw(st.sampled_from(SYMBOLS))
        if kind == "place":
            commands.append(draw(place_orders(users, ts)))
        elif kind == "cancel":
            if draw(st.booleans()):
                commands.append(CancelOrder(ts, user, market, order_id=draw(st.integers(1, 40))))
            else:
                commands.append(CancelOrder(ts, user, market, client_order_id=draw(st.sampled_from("ab"))))
        elif kind == "cancel_all":
            commands.append(CancelAll(ts, user, market))
        else:
            asset = draw(st.sampled_from(ASSETS))
            amount = draw(st.integers(-10, 15_000))
            make = Deposit if kind == "deposit" else Withdraw
            commands.append(make(ts, user, asset, amount))
    return commands


def check_books(ex: Exchange) -> None:
    for symbol in SYMBOLS:
        bid, ask = ex.matching(symbol).best_bid(), ex.matching(symbol).best_ask()
        assert bid is None or ask is None or bid < ask, (symbol, bid, ask)


def holdings(ex: Exchange, users: list[int], asset: str) -> int:
    return sum(sum(ex.accounts.balance(u, asset)) for u in [FEE_ACCOUNT, *users])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sessions())
def test_random_sessions_keep_every_invariant(commands: list[Command]) -> None:
    ex = Exchange(MARKETS, fee_account=FEE_ACCOUNT)
    users = sorted({c.user for c in commands})
    supply: dict[str, int] = dict.fromkeys(ASSETS, 0)
    for command in commands:
        events: list[Any] = ex.apply(command)
        ex.check_invariants()
        check_books(ex)
        for event in events:  # an external tally of value in and out, from the events alone
            if isinstance(event, Deposited):
                supply[event.asset] += event.amount
            elif isinstance(event, Withdrawn):
                supply[event.asset] -= event.amount
        for asset in ASSETS:
            assert holdings(ex, users, asset) == supply[asset]
        for user in users:  # nothing waits between commands but resting limit orders
            for order_id in ex.accounts.open_order_ids(user):
                order = ex.accounts.open_order(order_id)
                assert order is not None and order.type != OrderType.MARKET
    copy = Exchange.restore(MARKETS, ex.snapshot())
    assert copy.state_hash() == ex.state_hash()
    copy.check_invariants()
