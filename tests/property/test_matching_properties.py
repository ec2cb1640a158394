"""Invariants of the matching engine, checked after every command of generated flows.

Flows (``tests/matching_flows.py``) mix every order type and time in force, all
STP modes, three users (so self-trades happen), colliding client order ids,
cancels of live, finished, foreign and unknown orders, and cancel-alls. After
each command:

* the events are numbered ``seq`` = previous + 1, and ``engine.seq`` follows;
* every trade is at the maker's resting price, within the taker's limit, with
  the documented fees, followed by the maker's and then the taker's fill event;
* a placed order ends its record with exactly one of OrderFilled, OrderRested,
  OrderExpired (or is rejected); a cancel emits exactly one event;
* the book is never crossed; each level's depth is the sum of its open orders,
  and ``depth(n)`` is the best ``n`` levels of ``depth()``;
* the open orders (in priority order) are the reference engine's;
* every accepted order's lots are accounted for: filled + canceled + expired +
  still resting = its original quantity; market buys never overspend.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from investo.core.markets import affordable_qty
from investo.core.matching import MatchingEngine
from investo.core.messages import (
    CancelAll,
    CancelOrder,
    CancelReason,
    CancelRejected,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderRested,
    OrderType,
    RejectCode,
    Side,
    StpMode,
    TradeExecuted,
)
from matching_flows import flows, markets
from reference import ReferenceEngine, max_affordable

FILL_EVENTS = (OrderFilled, OrderPartiallyFilled)


class Ledger:
    """Where each accepted order's lots went, according to the events."""

    def __init__(self) -> None:
        self.orders: dict[int, OrderAccepted] = {}  # accepted (not rejected) orders
        self.rest_price: dict[int, int] = {}
        self.filled: defaultdict[int, int] = defaultdict(int)
        self.canceled: defaultdict[int, int] = defaultdict(int)
        self.expired: defaultdict[int, int] = defaultdict(int)
        self.spent: defaultdict[int, int] = defaultdict(int)  # quote paid by takers, fees included

    def observe(self, events: list) -> None:
        for event in events:
            if isinstance(event, OrderRested):
                self.rest_price[event.order_id] = event.price
            elif isinstance(event, TradeExecuted):
                self.filled[event.maker_order_id] += event.qty
                self.filled[event.taker_order_id] += event.qty
            elif isinstance(event, OrderCanceled):
                self.canceled[event.order_id] += event.remaining
            elif isinstance(event, OrderExpired):
                self.expired[event.order_id] += event.remaining


def check_trades(engine: MatchingEngine, rec: OrderAccepted, events: list, ledger: Ledger) -> None:
    market = engine.market
    for i, event in enumerate(events):
        if not isinstance(event, TradeExecuted):
            continue
        assert event.taker_order_id == rec.order_id and event.taker_user == rec.user
        assert event.taker_side == rec.side
        assert event.price == ledger.rest_price[event.maker_order_id], "fill not at the maker's price"
        if rec.type != OrderType.MARKET:
            assert event.price <= rec.price if rec.side == Side.BUY else event.price >= rec.price
        if event.maker_user == event.taker_user:
            assert rec.stp == StpMode.NONE, "self-trade despite STP"
        notional = event.price * event.qty * market.notional_unit
        assert event.maker_fee == notional * market.maker_fee_bps // 10_000
        assert event.taker_fee == notional * market.taker_fee_bps // 10_000
        ledger.spent[rec.order_id] += notional + event.taker_fee
        maker_event, taker_event = events[i + 1], events[i + 2]
        assert isinstance(maker_event, FILL_EVENTS) and maker_event.order_id == event.maker_order_id
        assert isinstance(taker_event, FILL_EVENTS) and taker_event.order_id == rec.order_id


def check_record_events(engine: MatchingEngine, rec, events: list, ledger: Ledger) -> None:
    if isinstance(rec, OrderAccepted):
        if isinstance(events[-1], OrderRejected):
            assert events == [events[-1]] and events[-1].order_id == rec.order_id
            return
        ledger.orders[rec.order_id] = rec
        last = events[-1]
        assert isinstance(last, OrderFilled | OrderRested | OrderExpired) and last.order_id == rec.order_id
        finals = [
            e
            for e in events
            if isinstance(e, OrderFilled | OrderRested | OrderExpired) and e.order_id == rec.order_id
        ]
        assert finals == [last], "a taker must finish its record with exactly one outcome"
        if isinstance(last, OrderExpired):
            assert not last.was_resting
        check_trades(engine, rec, events, ledger)
    elif isinstance(rec, CancelOrder):
        assert len(events) == 1 and isinstance(events[0], OrderCanceled | CancelRejected)
        if isinstance(events[0], OrderCanceled):
            assert events[0].user == rec.user and events[0].reason == CancelReason.USER
    else:
        assert isinstance(rec, CancelAll)
        if isinstance(events[0], CancelRejected):  # nothing of the user's was open
            assert len(events) == 1 and events[0].code == RejectCode.UNKNOWN_ORDER
            return
        assert all(isinstance(e, OrderCanceled) and e.user == rec.user for e in events)
        assert all(e.reason == CancelReason.CANCEL_ALL for e in events)
        ids = [e.order_id for e in events]
        assert ids == sorted(ids)
        assert not [o for o in engine.open_orders() if o.user == rec.user]


def check_book(engine: MatchingEngine, reference: ReferenceEngine) -> None:
    best_bid, best_ask = engine.best_bid(), engine.best_ask()
    assert best_bid is None or best_ask is None or best_bid < best_ask, "crossed book"
    bids, asks = engine.depth()
    for levels in (0, 1, 2):
        assert engine.depth(levels) == (bids[:levels], asks[:levels])
    opens = engine.open_orders()
    for side, levels in ((Side.BUY, bids), (Side.SELL, asks)):
        summed: defaultdict[int, int] = defaultdict(int)
        for order in opens:
            if order.side == side:
                summed[order.price] += order.qty
        assert dict(levels) == summed, "depth differs from the open orders"
        prices = [price for price, _ in levels]
        assert prices == sorted(set(prices), reverse=side == Side.BUY)
        assert all(qty > 0 for _, qty in levels)
    assert best_bid == (bids[0][0] if bids else None)
    assert best_ask == (asks[0][0] if asks else None)
    mine = [(o.order_id, o.user, o.side, o.price, o.qty, o.client_order_id) for o in opens]
    assert mine == reference.open_orders()


def check_accounting(engine: MatchingEngine, ledger: Ledger) -> None:
    for order_id, rec in ledger.orders.items():
        view = engine.open_order(order_id)
        resting = view.qty if view else 0
        if rec.qty:  # orders by quantity (a market buy by quote amount has none)
            accounted = ledger.filled[order_id] + ledger.canceled[order_id] + ledger.expired[order_id]
            assert accounted + resting == rec.qty, f"lots of order {order_id} not conserved"
        if rec.type == OrderType.MARKET and rec.side == Side.BUY:
            assert ledger.spent[order_id] <= rec.quote_limit, f"market buy {order_id} overspent"


@settings(max_examples=150, deadline=None)
@given(flow=flows(max_ops=60))
def test_invariants_hold_after_every_command(flow) -> None:
    market, records = flow
    engine, reference, ledger = MatchingEngine(market), ReferenceEngine(market), Ledger()
    for rec in records:
        seq_before = engine.seq
        events = engine.apply(rec)
        reference.apply(rec)
        assert [e.seq for e in events] == list(range(seq_before + 1, seq_before + 1 + len(events)))
        assert engine.seq == seq_before + len(events)
        ledger.observe(events)
        check_record_events(engine, rec, events, ledger)
        check_book(engine, reference)
        check_accounting(engine, ledger)


@settings(max_examples=100, deadline=None)
@given(flow=flows(max_ops=40), data=st.data())
def test_restore_from_a_snapshot_then_replay_gives_the_same_events(flow, data) -> None:
    market, records = flow
    split = data.draw(st.integers(0, len(records)))
    engine = MatchingEngine(market)
    for rec in records[:split]:
        engine.apply(rec)
    restored = MatchingEngine.restore(market, engine.snapshot())
    assert restored.state_hash() == engine.state_hash()
    for rec in records[split:]:
        assert restored.apply(rec) == engine.apply(rec)
        assert restored.state_hash() == engine.state_hash()


@settings(max_examples=500, deadline=None)
@given(
    market=markets,
    price=st.integers(1, 10**12),
    budget=st.integers(0, 10**24) | st.integers(0, 10**6),
    bps=st.integers(0, 9_999),
)
def test_affordable_qty_is_the_most_lots_a_budget_buys(market, price, budget, bps) -> None:
    assert affordable_qty(market, price, budget, bps) == max_affordable(market, price, budget, bps)
