"""Generated order flows for the matching engine's property and differential tests.

``flows()`` draws a small market and a list of matching records over a narrow
price band with a few users, so that orders cross, self-trades happen, client
order ids collide and cancels name live, finished, foreign and unknown orders.
Order ids are 1, 2, 3, ... in the order the places appear.
"""

from __future__ import annotations

from hypothesis import strategies as st

from investo.core.markets import Market, buy_reservation
from investo.core.messages import (
    CancelAll,
    CancelOrder,
    OrderAccepted,
    OrderType,
    Side,
    StpMode,
    TimeInForce,
)
from reference import cost

SYMBOL = "X"
USERS = (1, 2, 3)
UNKNOWN_ID = 10**9

markets = st.builds(
    Market,
    symbol=st.just(SYMBOL),
    base=st.just("B"),
    quote=st.just("Q"),
    notional_unit=st.sampled_from((1, 3, 100)),
    lot_units=st.just(1),
    maker_fee_bps=st.sampled_from((0, 10, 25)),
    taker_fee_bps=st.sampled_from((0, 7, 20, 5000, 9999)),
)

_KINDS = (
    ("gtc",) * 6
    + ("ioc", "ioc", "fok", "fok", "post_only", "post_only")
    + (
        ("market_qty",) * 3 + ("market_quote",) * 2 + ("market_empty",)  # the last has no lots and no budget
    )
)


@st.composite
def _place(draw: st.DrawFn, market: Market) -> dict:
    kind = draw(st.sampled_from(_KINDS))
    side = Side.BUY if kind == "market_quote" else draw(st.sampled_from(Side))
    qty = draw(st.integers(1, 8) | st.integers(1, 40))
    fields = {
        "user": draw(st.sampled_from(USERS)),
        "side": side,
        "type": OrderType.LIMIT,
        "tif": TimeInForce.GTC,
        "price": draw(st.integers(96, 104)),
        "qty": qty,
        "quote_limit": 0,
        "client_order_id": draw(st.sampled_from(("", "", "a", "b"))),
        "stp": draw(st.sampled_from(StpMode)),
    }
    if kind == "ioc":
        fields["tif"] = TimeInForce.IOC
    elif kind == "fok":
        fields["tif"] = TimeInForce.FOK
    elif kind == "post_only":
        fields["type"] = OrderType.LIMIT_MAKER
    elif kind.startswith("market"):
        fields["type"] = OrderType.MARKET
        fields["tif"] = draw(st.sampled_from((TimeInForce.GTC, TimeInForce.IOC)))
        fields["price"] = 0
    if kind == "market_quote":
        fields["qty"] = 0
    if fields["type"] == OrderType.MARKET and side == Side.BUY:
        lot_cost = 100 * market.notional_unit
        exact = st.builds(  # what k lots cost at one price: budgets that run out exactly
            lambda k, price: cost(market, price, k, market.taker_fee_bps),
            st.integers(1, 12),
            st.integers(96, 104),
        )
        fields["quote_limit"] = draw(st.just(1 << 60) | st.integers(1, 30 * lot_cost) | exact)
    elif side == Side.BUY:
        fields["quote_limit"] = buy_reservation(market, fields["price"], qty)
    if kind == "market_empty":
        fields["qty"] = fields["quote_limit"] = 0
    return fields


@st.composite
def flows(draw: st.DrawFn, max_ops: int = 60) -> tuple[Market, list]:
    """A market and the records of one generated flow."""
    market = draw(markets)
    places: list[dict] = []  # by order id - 1
    records: list = []
    for ts in range(1, draw(st.integers(1, max_ops)) + 1):
        op = draw(st.sampled_from(("place",) * 5 + ("cancel",) * 2 + ("cancel_all",)))
        if op == "place" or (op == "cancel" and not places):
            fields = draw(_place(market))
            places.append(fields)
            records.append(OrderAccepted(ts=ts, market=SYMBOL, order_id=len(places), **fields))
        elif op == "cancel":
            how = draw(st.sampled_from(("id", "id", "client_id", "foreign", "unknown")))
            order_id = draw(st.integers(max(1, len(places) - 4), len(places)) | st.integers(1, len(places)))
            target = places[order_id - 1]
            user = target["user"]
            if how == "foreign":
                user = draw(st.sampled_from([u for u in USERS if u != user]))
            if how == "unknown":
                order_id = UNKNOWN_ID
            if how == "client_id":
                records.append(CancelOrder(ts, user, SYMBOL, client_order_id=target["client_order_id"]))
            else:
                records.append(CancelOrder(ts, user, SYMBOL, order_id=order_id))
        else:
            records.append(CancelAll(ts, draw(st.sampled_from(USERS)), SYMBOL))
    return market, records
