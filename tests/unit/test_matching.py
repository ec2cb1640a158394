"""Unit tests of the matching engine, one rule or order type at a time.

Most tests run the engine and the naive reference engine (``tests/reference.py``)
side by side through ``Both``: every record goes to both and their events must be
equal, and the test then states the expected events or book explicitly. A few
tests of bugs once found use the engine alone and state the expected outcome.

Conventions: buys come from user 1 and sells from user 2 unless a test says
otherwise, STP is NONE unless a test is about STP, ``ts`` is ``TS``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from investo.core.markets import Market
from investo.core.matching import MatchingEngine
from investo.core.messages import (
    CancelAll,
    CancelOrder,
    CancelReason,
    CancelRejected,
    ExpireReason,
    MatchingRecord,
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
    TimeInForce,
    TradeExecuted,
)
from reference import ReferenceEngine, cost

TS = 1_700_000_000_000
SYM = "X"
MKT = Market(SYM, "B", "Q", notional_unit=1, lot_units=1)
FEE_MKT = Market(SYM, "B", "Q", notional_unit=7, lot_units=1, maker_fee_bps=10, taker_fee_bps=25)
BUY, SELL = Side.BUY, Side.SELL
LIMIT, LIMIT_MAKER, MARKET = OrderType.LIMIT, OrderType.LIMIT_MAKER, OrderType.MARKET
GTC, IOC, FOK = TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK
USER, CANCEL_ALL = CancelReason.USER, CancelReason.CANCEL_ALL


# ------------------------------------------------------------------------------ records


def order(
    order_id: int, user: int, side: Side, price: int, qty: int, *, type: OrderType = LIMIT,
    tif: TimeInForce = GTC, quote_limit: int = 0, coid: str = "", stp: StpMode = StpMode.NONE,
) -> OrderAccepted:  # fmt: skip
    return OrderAccepted(TS, SYM, order_id, user, side, type, tif, price, qty, quote_limit, coid, stp)


def buy(order_id: int, price: int, qty: int, user: int = 1, **kw) -> OrderAccepted:
    return order(order_id, user, BUY, price, qty, **kw)


def sell(order_id: int, price: int, qty: int, user: int = 2, **kw) -> OrderAccepted:
    return order(order_id, user, SELL, price, qty, **kw)


def market_buy(order_id: int, qty: int, quote_limit: int = 1 << 60, user: int = 1, **kw) -> OrderAccepted:
    return order(order_id, user, BUY, 0, qty, type=MARKET, tif=IOC, quote_limit=quote_limit, **kw)


def market_buy_quote(order_id: int, budget: int, user: int = 1, **kw) -> OrderAccepted:
    """A market buy by quote amount: qty 0, ``budget`` quote units including the taker fee."""
    return market_buy(order_id, 0, budget, user, **kw)


def market_sell(order_id: int, qty: int, user: int = 2, **kw) -> OrderAccepted:
    return order(order_id, user, SELL, 0, qty, type=MARKET, tif=IOC, **kw)


def cancel(user: int, order_id: int = 0, coid: str = "") -> CancelOrder:
    return CancelOrder(TS, user, SYM, order_id=order_id, client_order_id=coid)


def cancel_all(user: int) -> CancelAll:
    return CancelAll(TS, user, SYM)


# ------------------------------------------------------------------------------ events


def rested(seq: int, oid: int, user: int, side: Side, price: int, qty: int) -> OrderRested:
    return OrderRested(seq, TS, SYM, oid, user, side, price, qty)


def trade(
    seq: int, trade_id: int, price: int, qty: int, taker_side: Side, maker: int, maker_user: int,
    taker: int, taker_user: int, maker_fee: int = 0, taker_fee: int = 0,
) -> TradeExecuted:  # fmt: skip
    return TradeExecuted(
        seq, TS, SYM, trade_id, price, qty, taker_side, maker, maker_user, taker, taker_user,
        maker_fee, taker_fee,
    )  # fmt: skip


def filled(seq: int, oid: int, user: int) -> OrderFilled:
    return OrderFilled(seq, TS, SYM, oid, user)


def partial(seq: int, oid: int, user: int, remaining: int) -> OrderPartiallyFilled:
    return OrderPartiallyFilled(seq, TS, SYM, oid, user, remaining)


def expired(
    seq: int, oid: int, user: int, side: Side, price: int, remaining: int, reason: ExpireReason,
    was_resting: bool = False,
) -> OrderExpired:  # fmt: skip
    return OrderExpired(seq, TS, SYM, oid, user, side, price, remaining, reason, was_resting)


def canceled(
    seq: int, oid: int, user: int, side: Side, price: int, remaining: int, reason: CancelReason = USER
) -> OrderCanceled:
    return OrderCanceled(seq, TS, SYM, oid, user, side, price, remaining, reason)


def rejected(seq: int, oid: int, user: int, code: RejectCode, coid: str = "") -> OrderRejected:
    return OrderRejected(seq, TS, SYM, oid, user, coid, code)


def cancel_rejected(
    seq: int, user: int, code: RejectCode, order_id: int = 0, coid: str = ""
) -> CancelRejected:
    return CancelRejected(seq, TS, SYM, user, order_id, coid, code)


def trades(events: list) -> list[tuple[int, int, int, int]]:
    """(price, qty, maker order id, taker order id) of each trade."""
    return [
        (e.price, e.qty, e.maker_order_id, e.taker_order_id) for e in events if isinstance(e, TradeExecuted)
    ]


def kinds(events: list) -> list[str]:
    return [type(e).__name__ for e in events]


# ------------------------------------------------------------------------------ harness


class Both:
    """The engine and the reference engine, fed the same records; their events must match."""

    def __init__(self, market: Market = MKT) -> None:
        self.market = market
        self.engine = MatchingEngine(market)
        self.ref = ReferenceEngine(market)

    def __call__(self, *records) -> list:
        """Apply ``records`` in order; return the events of the last one."""
        events: list = []
        for rec in records:
            events = self.engine.apply(rec)
            want = self.ref.apply(rec)
            assert events == want, f"engine and reference differ on {rec}"
        return events

    def depth(self):
        assert self.engine.depth() == self.ref.depth()
        return self.engine.depth()

    def spent(self, events: list) -> int:
        """Quote the taker paid in ``events``: notional plus taker fee of each trade."""
        return sum(
            e.price * e.qty * self.market.notional_unit + e.taker_fee
            for e in events
            if isinstance(e, TradeExecuted)
        )


@pytest.fixture
def ex() -> Both:
    return Both()


@pytest.fixture
def fee_ex() -> Both:
    return Both(FEE_MKT)


def assert_only_seq_advanced(engine: MatchingEngine, before: bytes, events: int = 1) -> None:
    """The engine's state is the snapshot ``before`` but for ``events`` more sequence numbers."""
    expected = MatchingEngine.restore(engine.market, before)
    expected.seq += events
    assert engine.state_hash() == expected.state_hash()


# ------------------------------------------------------------------------------ limit orders


def test_limit_order_rests_on_an_empty_book(ex: Both) -> None:
    assert ex(buy(1, 100, 5)) == [rested(1, 1, 1, BUY, 100, 5)]
    assert ex(sell(2, 101, 3)) == [rested(2, 2, 2, SELL, 101, 3)]
    assert (ex.engine.best_bid(), ex.engine.best_ask()) == (100, 101)
    assert ex.depth() == ([(100, 5)], [(101, 3)])


def test_partial_fills_across_several_levels_in_event_order(ex: Both) -> None:
    ex(sell(1, 100, 2), sell(2, 101, 3), sell(3, 102, 5))
    assert ex(buy(4, 102, 7)) == [
        trade(4, 1, 100, 2, BUY, 1, 2, 4, 1), filled(5, 1, 2), partial(6, 4, 1, 5),
        trade(7, 2, 101, 3, BUY, 2, 2, 4, 1), filled(8, 2, 2), partial(9, 4, 1, 2),
        trade(10, 3, 102, 2, BUY, 3, 2, 4, 1), partial(11, 3, 2, 3), filled(12, 4, 1),
    ]  # fmt: skip
    assert ex.depth() == ([], [(102, 3)])
    assert ex.engine.last_trade_id == 3


def test_remainder_of_a_crossing_limit_rests_at_its_limit(ex: Both) -> None:
    ex(sell(1, 100, 2), sell(2, 101, 3), sell(3, 103, 5))
    events = ex(buy(4, 102, 10))
    assert trades(events) == [(100, 2, 1, 4), (101, 3, 2, 4)]
    assert events[-1] == rested(10, 4, 1, BUY, 102, 5)
    assert ex.depth() == ([(102, 5)], [(103, 5)])


def test_sell_taker_walks_the_bids_from_the_highest(ex: Both) -> None:
    ex(buy(1, 100, 1), buy(2, 99, 1), buy(3, 101, 1))
    events = ex(sell(4, 99, 3))
    assert trades(events) == [(101, 1, 3, 4), (100, 1, 1, 4), (99, 1, 2, 4)]
    assert events[-1] == filled(12, 4, 2)
    assert ex.depth() == ([], [])


def test_time_priority_within_a_level(ex: Both) -> None:
    ex(sell(1, 100, 2, user=2), sell(2, 100, 2, user=3), sell(3, 100, 2, user=4))
    assert trades(ex(buy(4, 100, 3))) == [(100, 2, 1, 4), (100, 1, 2, 4)]
    assert [(o.order_id, o.qty) for o in ex.engine.open_orders()] == [(2, 1), (3, 2)]


def test_a_better_price_beats_an_earlier_order(ex: Both) -> None:
    ex(sell(1, 101, 1), sell(2, 100, 1))
    assert trades(ex(buy(3, 101, 1))) == [(100, 1, 2, 3)]


@pytest.mark.parametrize(
    ("maker", "taker"),
    [(sell(1, 100, 2), buy(2, 105, 2)), (buy(1, 100, 2), sell(2, 95, 2))],
    ids=["buy-taker", "sell-taker"],
)
def test_every_fill_is_at_the_makers_price(ex: Both, maker: OrderAccepted, taker: OrderAccepted) -> None:
    ex(maker)
    assert trades(ex(taker)) == [(100, 2, 1, 2)]


def test_fees_are_computed_on_the_notional_and_rounded_down(fee_ex: Both) -> None:
    fee_ex(sell(1, 101, 3))
    (trade_event,) = [e for e in fee_ex(buy(2, 101, 3)) if isinstance(e, TradeExecuted)]
    notional = 101 * 3 * 7  # 2121
    assert (trade_event.maker_fee, trade_event.taker_fee) == (
        notional * 10 // 10_000,
        notional * 25 // 10_000,
    )
    assert (trade_event.maker_fee, trade_event.taker_fee) == (2, 5)


# ------------------------------------------------------------------------------ IOC


def test_ioc_remainder_expires(ex: Both) -> None:
    ex(sell(1, 100, 2))
    assert ex(buy(2, 100, 5, tif=IOC)) == [
        trade(2, 1, 100, 2, BUY, 1, 2, 2, 1), filled(3, 1, 2), partial(4, 2, 1, 3),
        expired(5, 2, 1, BUY, 100, 3, ExpireReason.IOC_REMAINDER),
    ]  # fmt: skip
    assert ex.depth() == ([], [])
    assert ex.engine.open_order(2) is None


def test_ioc_that_does_not_cross_expires_whole_and_leaves_the_book(ex: Both) -> None:
    ex(sell(1, 101, 2))
    before = ex.engine.snapshot()
    assert ex(buy(2, 100, 5, tif=IOC)) == [expired(2, 2, 1, BUY, 100, 5, ExpireReason.IOC_REMAINDER)]
    assert_only_seq_advanced(ex.engine, before)


def test_ioc_that_fills_completely_does_not_expire(ex: Both) -> None:
    ex(sell(1, 100, 5))
    assert ex(buy(2, 100, 5, tif=IOC)) == [
        trade(2, 1, 100, 5, BUY, 1, 2, 2, 1),
        filled(3, 1, 2),
        filled(4, 2, 1),
    ]


# ------------------------------------------------------------------------------ FOK


def test_fok_that_cannot_fill_expires_without_trading(ex: Both) -> None:
    ex(sell(1, 100, 2), sell(2, 101, 3), sell(3, 103, 10))
    before = ex.engine.snapshot()
    assert ex(buy(4, 102, 6, tif=FOK)) == [expired(4, 4, 1, BUY, 102, 6, ExpireReason.FOK_UNFILLABLE)]
    assert_only_seq_advanced(ex.engine, before)


def test_fok_that_exactly_fills(ex: Both) -> None:
    ex(sell(1, 100, 2), sell(2, 101, 3), sell(3, 103, 10))
    events = ex(buy(4, 101, 5, tif=FOK))
    assert trades(events) == [(100, 2, 1, 4), (101, 3, 2, 4)]
    assert events[-1] == filled(9, 4, 1)
    assert ex.depth() == ([], [(103, 10)])


def test_fok_sell_fills_or_not_by_the_lots_within_its_limit(ex: Both) -> None:
    ex(buy(1, 100, 2), buy(2, 99, 3), buy(3, 97, 10))
    assert ex(sell(4, 99, 6, tif=FOK)) == [expired(4, 4, 2, SELL, 99, 6, ExpireReason.FOK_UNFILLABLE)]
    assert trades(ex(sell(5, 99, 5, tif=FOK))) == [(100, 2, 1, 5), (99, 3, 2, 5)]
    assert ex.depth() == ([(97, 10)], [])


def test_fok_on_a_book_it_does_not_cross_expires(ex: Both) -> None:
    ex(sell(1, 101, 10))
    assert ex(buy(2, 100, 1, tif=FOK)) == [expired(2, 2, 1, BUY, 100, 1, ExpireReason.FOK_UNFILLABLE)]
    assert ex(buy(3, 100, 1, tif=FOK)) == [expired(3, 3, 1, BUY, 100, 1, ExpireReason.FOK_UNFILLABLE)]
    assert ex.depth() == ([], [(101, 10)])


def test_fok_without_stp_counts_its_own_orders_and_self_trades(ex: Both) -> None:
    ex(sell(1, 100, 2, user=1), sell(2, 100, 2, user=2))
    events = ex(buy(3, 100, 4, tif=FOK, user=1))
    assert [(e.maker_user, e.taker_user, e.qty) for e in events if isinstance(e, TradeExecuted)] == [
        (1, 1, 2),
        (2, 1, 2),
    ]


# ------------------------------------------------------------------------------ FOK + STP


def test_fok_with_stp_and_no_own_orders_fills(ex: Both) -> None:
    # once: any crossing FOK with STP other than NONE raised AttributeError (_fillable_at)
    ex(sell(1, 100, 5))
    assert trades(ex(buy(2, 100, 3, tif=FOK, stp=StpMode.EXPIRE_MAKER))) == [(100, 3, 1, 2)]


@pytest.mark.parametrize("stp", [StpMode.EXPIRE_TAKER, StpMode.EXPIRE_BOTH], ids=lambda m: m.name)
def test_fok_blocked_by_its_own_order_expires_without_trading(ex: Both, stp: StpMode) -> None:
    ex(sell(1, 100, 2, user=1), sell(2, 101, 5, user=2))
    before = ex.engine.snapshot()
    assert ex(buy(3, 101, 3, user=1, tif=FOK, stp=stp)) == [
        expired(3, 3, 1, BUY, 101, 3, ExpireReason.FOK_UNFILLABLE)
    ]
    assert_only_seq_advanced(ex.engine, before)  # not even its own order expired


def test_fok_with_expire_maker_fills_from_others_and_expires_its_own_order(ex: Both) -> None:
    ex(sell(1, 100, 2, user=1), sell(2, 101, 5, user=2))
    assert ex(buy(3, 101, 3, user=1, tif=FOK, stp=StpMode.EXPIRE_MAKER)) == [
        expired(3, 1, 1, SELL, 100, 2, ExpireReason.SELF_TRADE, was_resting=True),
        trade(4, 1, 101, 3, BUY, 2, 2, 3, 1), partial(5, 2, 2, 2), filled(6, 3, 1),
    ]  # fmt: skip


def test_fok_with_expire_maker_that_cannot_fill_leaves_its_own_order_alone(ex: Both) -> None:
    ex(sell(1, 100, 2, user=1), sell(2, 101, 5, user=2))
    before = ex.engine.snapshot()
    assert ex(buy(3, 101, 6, user=1, tif=FOK, stp=StpMode.EXPIRE_MAKER)) == [
        expired(3, 3, 1, BUY, 101, 6, ExpireReason.FOK_UNFILLABLE)
    ]
    assert_only_seq_advanced(ex.engine, before)


@pytest.mark.parametrize("stp", [StpMode.EXPIRE_TAKER, StpMode.EXPIRE_BOTH], ids=lambda m: m.name)
def test_fok_with_stp_fills_before_reaching_its_own_order_at_a_later_level(ex: Both, stp: StpMode) -> None:
    ex(sell(1, 100, 3, user=2), sell(2, 101, 2, user=1))
    assert trades(ex(buy(3, 101, 3, user=1, tif=FOK, stp=stp))) == [(100, 3, 1, 3)]
    assert ex.depth() == ([], [(101, 2)])


@pytest.mark.parametrize("stp", [StpMode.EXPIRE_TAKER, StpMode.EXPIRE_BOTH], ids=lambda m: m.name)
def test_fok_with_stp_fills_when_its_own_order_waits_behind_enough_lots(stp: StpMode) -> None:
    # The same order as IOC fills all 3 lots from order 1 and never meets order 2,
    # so the FOK can fill completely and must.
    engine = MatchingEngine(MKT)
    engine.apply(sell(1, 100, 3, user=2))
    engine.apply(sell(2, 100, 2, user=1))  # its own order, behind order 1
    events = engine.apply(buy(3, 100, 3, user=1, tif=FOK, stp=stp))
    assert trades(events) == [(100, 3, 1, 3)]
    assert events[-1] == filled(5, 3, 1)
    assert engine.depth() == ([], [(100, 2)])


# ------------------------------------------------------------------------------ post-only


@pytest.mark.parametrize("price", [100, 105])
def test_post_only_that_would_take_is_rejected_and_changes_nothing(ex: Both, price: int) -> None:
    ex(sell(1, 100, 2), buy(2, 98, 1))
    before = ex.engine.snapshot()
    assert ex(buy(3, price, 1, type=LIMIT_MAKER, coid="p")) == [
        rejected(3, 3, 1, RejectCode.WOULD_TAKE, coid="p")
    ]
    assert_only_seq_advanced(ex.engine, before)
    assert ex.engine.order_id_for(1, "p") is None


def test_post_only_sell_that_would_take_is_rejected(ex: Both) -> None:
    ex(buy(1, 100, 2))
    assert ex(sell(2, 100, 1, type=LIMIT_MAKER)) == [rejected(2, 2, 2, RejectCode.WOULD_TAKE)]


def test_post_only_that_does_not_cross_rests(ex: Both) -> None:
    ex(sell(1, 100, 2))
    assert ex(buy(2, 99, 4, type=LIMIT_MAKER)) == [rested(2, 2, 1, BUY, 99, 4)]
    assert ex.depth() == ([(99, 4)], [(100, 2)])


def test_post_only_crossing_only_its_own_order_is_rejected_too(ex: Both) -> None:
    ex(sell(1, 100, 2, user=1))
    assert ex(buy(2, 100, 1, user=1, type=LIMIT_MAKER, stp=StpMode.EXPIRE_MAKER)) == [
        rejected(2, 2, 1, RejectCode.WOULD_TAKE)
    ]
    assert ex.depth() == ([], [(100, 2)])


# ------------------------------------------------------------------------------ market orders


@pytest.mark.parametrize(
    ("rec", "remaining"),
    [(market_buy(1, 5), 5), (market_sell(1, 5), 5), (market_buy_quote(1, 10_000), 0)],
    ids=["buy-by-qty", "sell-by-qty", "buy-by-quote"],
)
def test_market_order_on_an_empty_book_expires_no_liquidity(
    ex: Both, rec: OrderAccepted, remaining: int
) -> None:
    assert ex(rec) == [expired(1, 1, rec.user, rec.side, 0, remaining, ExpireReason.NO_LIQUIDITY)]
    assert ex.depth() == ([], [])


def test_market_order_facing_only_the_other_side_expires_no_liquidity(ex: Both) -> None:
    ex(buy(1, 100, 5))
    assert ex(market_buy(2, 3, user=3)) == [expired(2, 2, 3, BUY, 0, 3, ExpireReason.NO_LIQUIDITY)]


def test_market_sell_sweeps_the_book_and_the_rest_expires_no_liquidity(ex: Both) -> None:
    ex(buy(1, 100, 2), buy(2, 99, 2))
    events = ex(market_sell(3, 5))
    assert trades(events) == [(100, 2, 1, 3), (99, 2, 2, 3)]
    assert events[-1] == expired(9, 3, 2, SELL, 0, 1, ExpireReason.NO_LIQUIDITY)
    assert ex.depth() == ([], [])


def test_market_buy_by_qty_with_enough_budget_fills(ex: Both) -> None:
    ex(sell(1, 10, 5), sell(2, 20, 5))
    events = ex(market_buy(3, 8, quote_limit=110))
    assert trades(events) == [(10, 5, 1, 3), (20, 3, 2, 3)]
    assert events[-1] == filled(8, 3, 1)


def test_market_buy_by_qty_is_capped_by_its_quote_limit(ex: Both) -> None:
    ex(sell(1, 10, 5), sell(2, 20, 5))
    assert ex(market_buy(3, 8, quote_limit=100)) == [
        trade(3, 1, 10, 5, BUY, 1, 2, 3, 1), filled(4, 1, 2), partial(5, 3, 1, 3),
        trade(6, 2, 20, 2, BUY, 2, 2, 3, 1), partial(7, 2, 2, 3), partial(8, 3, 1, 1),
        expired(9, 3, 1, BUY, 0, 1, ExpireReason.BUDGET_EXHAUSTED),
    ]  # fmt: skip


def test_market_buy_by_qty_never_overspends(fee_ex: Both) -> None:
    """Every budget up to the cost of the whole book (fees included)."""
    book = [sell(1, 100, 3), sell(2, 101, 2, user=3), sell(3, 103, 4)]
    whole = sum(cost(FEE_MKT, r.price, r.qty, FEE_MKT.taker_fee_bps) for r in book)
    exact = [cost(FEE_MKT, 100, k, FEE_MKT.taker_fee_bps) for k in (1, 2, 3)]  # spent to 0 at a level end
    for budget in [*range(1, whole + 200, 97), *exact]:
        ex = Both(FEE_MKT)
        ex(*book)
        events = ex(market_buy(4, 8, quote_limit=budget))
        paid = ex.spent(events)
        assert paid <= budget
        if isinstance(events[-1], OrderExpired):
            assert events[-1].reason in (ExpireReason.BUDGET_EXHAUSTED, ExpireReason.NO_LIQUIDITY)
            if events[-1].reason == ExpireReason.BUDGET_EXHAUSTED:
                assert budget - paid < cost(FEE_MKT, ex.engine.best_ask(), 1, FEE_MKT.taker_fee_bps)


def test_market_buy_by_qty_stops_when_budget_is_spent_exactly(ex: Both) -> None:
    # once: a budget spent down to exactly 0 read as "no cap" and bought on
    ex(sell(1, 10, 1), sell(2, 20, 1))
    events = ex(market_buy(3, 2, quote_limit=10))
    assert trades(events) == [(10, 1, 1, 3)]
    assert events[-1] == expired(6, 3, 1, BUY, 0, 1, ExpireReason.BUDGET_EXHAUSTED)
    assert ex.depth() == ([], [(20, 1)])


@pytest.mark.parametrize(
    "rec",
    [market_buy_quote(2, 0), market_buy(2, 0, 0), market_sell(2, 0)],
    ids=["quote-0", "buy-0-0", "sell-0"],
)
def test_market_order_with_neither_lots_nor_budget_is_rejected(ex: Both, rec: OrderAccepted) -> None:
    # once: a zero budget read as "no cap", swept the book and leaked 2**62 - 1 as ``remaining``
    ex(sell(1, 10, 1, user=3), buy(3, 9, 1, user=3))
    assert ex(rec) == [rejected(3, 2, rec.user, RejectCode.INVALID_ORDER)]
    assert ex.depth() == ([(9, 1)], [(10, 1)])


@pytest.mark.parametrize("tif", [GTC, IOC], ids=lambda t: t.name)
def test_limit_order_with_no_lots_is_rejected(tif: TimeInForce) -> None:
    engine = MatchingEngine(MKT)
    engine.apply(sell(1, 100, 5))
    events = engine.apply(buy(2, 100, 0, tif=tif))
    assert kinds(events) == ["OrderRejected"]
    assert engine.depth() == ([], [(100, 5)])


def test_market_buy_by_quote_is_filled_when_the_rest_cannot_buy_a_lot(ex: Both) -> None:
    ex(sell(1, 10, 2), sell(2, 12, 5))
    assert ex(market_buy_quote(3, 50)) == [
        trade(3, 1, 10, 2, BUY, 1, 2, 3, 1), filled(4, 1, 2), partial(5, 3, 1, 3),
        trade(6, 2, 12, 2, BUY, 2, 2, 3, 1), partial(7, 2, 2, 3), filled(8, 3, 1),
    ]  # fmt: skip
    assert ex.depth() == ([], [(12, 3)])


def test_market_buy_by_quote_stops_budget_exhausted_at_a_dearer_level(ex: Both) -> None:
    ex(sell(1, 10, 2), sell(2, 30, 5))
    events = ex(market_buy_quote(3, 45))
    assert trades(events) == [(10, 2, 1, 3)]
    assert isinstance(events[-1], OrderExpired) and events[-1].reason == ExpireReason.BUDGET_EXHAUSTED
    assert ex.depth() == ([], [(30, 5)])


def test_market_buy_by_quote_too_small_for_one_lot_takes_nothing(ex: Both) -> None:
    ex(sell(1, 10, 2))
    assert ex(market_buy_quote(2, 9)) == [expired(2, 2, 1, BUY, 0, 0, ExpireReason.BUDGET_EXHAUSTED)]


def test_market_buy_by_quote_larger_than_the_book_sweeps_it(ex: Both) -> None:
    ex(sell(1, 10, 2), sell(2, 11, 1))
    events = ex(market_buy_quote(3, 1_000))
    assert trades(events) == [(10, 2, 1, 3), (11, 1, 2, 3)]
    assert isinstance(events[-1], OrderExpired) and events[-1].reason == ExpireReason.NO_LIQUIDITY
    assert ex.depth() == ([], [])


def test_market_buy_by_quote_never_overspends_and_stops_at_the_last_affordable_lot() -> None:
    book = [sell(1, 100, 3), sell(2, 101, 3, user=3), sell(3, 110, 50)]
    whole = sum(cost(FEE_MKT, r.price, r.qty, FEE_MKT.taker_fee_bps) for r in book)
    for budget in range(1, whole + 1_000, 331):
        ex = Both(FEE_MKT)
        ex(*book)
        events = ex(market_buy_quote(4, budget))
        paid = ex.spent(events)
        assert paid <= budget
        best_ask = ex.engine.best_ask()
        if best_ask is not None:  # else the budget outlasted the book
            assert budget - paid < cost(FEE_MKT, best_ask, 1, FEE_MKT.taker_fee_bps), budget


# ------------------------------------------------------------------------------ self-trade prevention


def test_stp_expire_taker_expires_the_taker_at_its_own_order(ex: Both) -> None:
    ex(sell(1, 100, 2, user=1), sell(2, 100, 2, user=2))
    before = ex.engine.snapshot()
    assert ex(buy(3, 100, 3, user=1, stp=StpMode.EXPIRE_TAKER)) == [
        expired(3, 3, 1, BUY, 100, 3, ExpireReason.SELF_TRADE)
    ]
    assert_only_seq_advanced(ex.engine, before)


def test_stp_expire_taker_after_filling_against_others(ex: Both) -> None:
    ex(sell(1, 99, 1, user=2), sell(2, 100, 2, user=1), sell(3, 100, 2, user=2))
    events = ex(buy(4, 100, 3, user=1, stp=StpMode.EXPIRE_TAKER))
    assert trades(events) == [(99, 1, 1, 4)]
    assert events[-1] == expired(7, 4, 1, BUY, 100, 2, ExpireReason.SELF_TRADE)
    assert ex.depth() == ([], [(100, 4)])


def test_stp_expire_maker_expires_own_resting_order_and_goes_on(ex: Both) -> None:
    ex(sell(1, 100, 2, user=1, coid="mine"), sell(2, 100, 2, user=2))
    assert ex(buy(3, 100, 3, user=1, stp=StpMode.EXPIRE_MAKER)) == [
        expired(3, 1, 1, SELL, 100, 2, ExpireReason.SELF_TRADE, was_resting=True),
        trade(4, 1, 100, 2, BUY, 2, 2, 3, 1), filled(5, 2, 2), partial(6, 3, 1, 1),
        rested(7, 3, 1, BUY, 100, 1),
    ]  # fmt: skip
    assert ex.depth() == ([(100, 1)], [])
    assert ex.engine.order_id_for(1, "mine") is None


def test_stp_expire_both_expires_maker_and_taker(ex: Both) -> None:
    ex(sell(1, 100, 2, user=1), sell(2, 100, 2, user=2))
    assert ex(buy(3, 100, 3, user=1, stp=StpMode.EXPIRE_BOTH)) == [
        expired(3, 1, 1, SELL, 100, 2, ExpireReason.SELF_TRADE, was_resting=True),
        expired(4, 3, 1, BUY, 100, 3, ExpireReason.SELF_TRADE),
    ]
    assert ex.depth() == ([], [(100, 2)])


def test_stp_none_lets_a_user_trade_with_itself(ex: Both) -> None:
    ex(sell(1, 100, 2, user=1))
    assert ex(buy(2, 100, 2, user=1, stp=StpMode.NONE)) == [
        trade(2, 1, 100, 2, BUY, 1, 1, 2, 1),
        filled(3, 1, 1),
        filled(4, 2, 1),
    ]


@pytest.mark.parametrize("stp", list(StpMode), ids=lambda m: m.name)
def test_stp_does_not_apply_between_different_users(ex: Both, stp: StpMode) -> None:
    ex(sell(1, 100, 2, user=2))
    assert trades(ex(buy(2, 100, 2, user=1, stp=stp))) == [(100, 2, 1, 2)]


def test_stp_expire_maker_can_empty_the_book_for_a_market_order(ex: Both) -> None:
    ex(sell(1, 100, 2, user=1))
    assert ex(market_buy(2, 2, user=1, stp=StpMode.EXPIRE_MAKER)) == [
        expired(2, 1, 1, SELL, 100, 2, ExpireReason.SELF_TRADE, was_resting=True),
        expired(3, 2, 1, BUY, 0, 2, ExpireReason.NO_LIQUIDITY),
    ]


def test_stp_expire_maker_across_levels_then_rests(ex: Both) -> None:
    ex(buy(1, 101, 1, user=2), buy(2, 100, 1, user=2), buy(3, 99, 1, user=3))
    events = ex(sell(4, 99, 3, user=2, stp=StpMode.EXPIRE_MAKER))
    expected = ["OrderExpired", "OrderExpired", "TradeExecuted", "OrderFilled", "OrderPartiallyFilled"]
    assert kinds(events) == [*expected, "OrderRested"]
    assert events[-1] == rested(9, 4, 2, SELL, 99, 2)


# ------------------------------------------------------------------------------ cancels


def test_cancel_by_order_id(ex: Both) -> None:
    ex(sell(1, 100, 5))
    assert ex(cancel(2, order_id=1)) == [canceled(2, 1, 2, SELL, 100, 5)]
    assert ex.depth() == ([], [])
    assert ex.engine.open_order(1) is None


def test_cancel_by_client_order_id(ex: Both) -> None:
    ex(buy(1, 100, 5, coid="abc"))
    assert ex.engine.order_id_for(1, "abc") == 1
    assert ex(cancel(1, coid="abc")) == [canceled(2, 1, 1, BUY, 100, 5)]
    assert ex.engine.order_id_for(1, "abc") is None
    assert ex.depth() == ([], [])


def test_cancel_of_someone_elses_order_is_rejected(ex: Both) -> None:
    ex(sell(1, 100, 5, user=2))
    before = ex.engine.snapshot()
    assert ex(cancel(3, order_id=1)) == [cancel_rejected(2, 3, RejectCode.NOT_OWNER, order_id=1)]
    assert_only_seq_advanced(ex.engine, before)


def test_cancel_by_client_order_id_only_finds_the_users_own_orders(ex: Both) -> None:
    ex(sell(1, 100, 5, user=2, coid="abc"))
    assert ex(cancel(3, coid="abc")) == [cancel_rejected(2, 3, RejectCode.UNKNOWN_ORDER, coid="abc")]
    assert ex.depth() == ([], [(100, 5)])


def test_cancel_of_a_filled_order_is_rejected(ex: Both) -> None:
    ex(sell(1, 100, 5), buy(2, 100, 5))
    assert ex(cancel(2, order_id=1)) == [cancel_rejected(5, 2, RejectCode.UNKNOWN_ORDER, order_id=1)]


def test_double_cancel_is_rejected_the_second_time(ex: Both) -> None:
    ex(sell(1, 100, 5))
    ex(cancel(2, order_id=1))
    assert ex(cancel(2, order_id=1)) == [cancel_rejected(3, 2, RejectCode.UNKNOWN_ORDER, order_id=1)]


@pytest.mark.parametrize(
    "rec",
    [cancel(2, order_id=99), cancel(2), cancel(2, coid="nope")],
    ids=["unknown-id", "no-id", "unknown-coid"],
)
def test_cancel_of_an_unknown_order_is_rejected(ex: Both, rec: CancelOrder) -> None:
    ex(sell(1, 100, 5))
    assert ex(rec) == [cancel_rejected(2, 2, RejectCode.UNKNOWN_ORDER, rec.order_id, rec.client_order_id)]
    assert ex.depth() == ([], [(100, 5)])


def test_cancel_of_a_partially_filled_order_returns_what_is_left(ex: Both) -> None:
    ex(sell(1, 100, 5), buy(2, 100, 2))
    assert ex(cancel(2, order_id=1)) == [canceled(5, 1, 2, SELL, 100, 3)]


def test_cancel_racing_a_fill_that_finished_the_order_is_rejected(ex: Both) -> None:
    ex(sell(1, 100, 5, coid="c1"), buy(2, 100, 2))
    # the cancel was sent while 3 lots were left, but a fill reaches the log first
    ex(buy(3, 100, 3))
    assert ex(cancel(2, order_id=1)) == [cancel_rejected(8, 2, RejectCode.UNKNOWN_ORDER, order_id=1)]
    assert ex(cancel(2, coid="c1")) == [cancel_rejected(9, 2, RejectCode.UNKNOWN_ORDER, coid="c1")]


def test_cancel_all_cancels_the_users_orders_in_ascending_id(ex: Both) -> None:
    ex(
        sell(1, 105, 1, user=1), buy(2, 90, 1, user=2), buy(3, 95, 2, user=1), sell(4, 103, 1, user=2),
        sell(5, 101, 4, user=1), buy(6, 101, 1, user=3),
    )  # fmt: skip
    assert ex(cancel_all(1)) == [
        canceled(9, 1, 1, SELL, 105, 1, CANCEL_ALL),
        canceled(10, 3, 1, BUY, 95, 2, CANCEL_ALL),
        canceled(11, 5, 1, SELL, 101, 3, CANCEL_ALL),
    ]
    assert ex.depth() == ([(90, 1)], [(103, 1)])
    assert {o.user for o in ex.engine.open_orders()} == {2}


def test_cancel_all_with_no_open_orders_is_rejected(ex: Both) -> None:
    ex(sell(1, 100, 5, user=2))
    assert ex(cancel_all(1)) == [cancel_rejected(2, 1, RejectCode.UNKNOWN_ORDER)]
    assert ex.depth() == ([], [(100, 5)])


# ------------------------------------------------------------------------------ client order ids


def test_duplicate_client_order_id_is_rejected_while_the_first_is_open(ex: Both) -> None:
    ex(sell(1, 101, 1, user=2, coid="a"), buy(2, 100, 1, user=3))
    before = ex.engine.snapshot()
    # would trade with order 2 if it were accepted
    assert ex(sell(3, 100, 1, user=2, coid="a")) == [
        rejected(3, 3, 2, RejectCode.DUPLICATE_CLIENT_ORDER_ID, coid="a")
    ]
    assert_only_seq_advanced(ex.engine, before)
    assert ex.engine.order_id_for(2, "a") == 1


def test_the_same_client_order_id_for_another_user_is_fine(ex: Both) -> None:
    ex(sell(1, 101, 1, user=2, coid="a"))
    assert ex(sell(2, 102, 1, user=3, coid="a")) == [rested(2, 2, 3, SELL, 102, 1)]
    assert (ex.engine.order_id_for(2, "a"), ex.engine.order_id_for(3, "a")) == (1, 2)


@pytest.mark.parametrize(
    "finish",
    [
        [buy(2, 101, 1, user=3)],
        [cancel(2, order_id=1)],
        [cancel(2, coid="a")],
        [cancel_all(2)],
        [buy(2, 101, 1, user=2, stp=StpMode.EXPIRE_MAKER)],
    ],
    ids=["filled", "canceled", "canceled-by-coid", "cancel-all", "expired-by-stp"],
)
def test_client_order_id_is_free_again_once_the_order_finished(ex: Both, finish: list) -> None:
    ex(sell(1, 101, 1, user=2, coid="a"), *finish)
    assert ex.engine.order_id_for(2, "a") is None
    events = ex(sell(9, 105, 1, user=2, coid="a"))
    assert isinstance(events[-1], OrderRested)
    assert ex.engine.order_id_for(2, "a") == 9


def test_client_order_id_of_an_order_that_never_rested_does_not_block(ex: Both) -> None:
    ex(sell(1, 100, 1))
    ex(buy(2, 100, 5, tif=IOC, coid="a"))  # trades, then expires
    ex(buy(3, 100, 2, coid="a"))  # the book is empty now: it rests
    assert ex.engine.order_id_for(1, "a") == 3


def test_an_order_id_that_is_already_open_is_rejected(ex: Both) -> None:
    ex(sell(1, 100, 1))
    assert ex(buy(1, 99, 1)) == [rejected(2, 1, 1, RejectCode.INVALID_ORDER)]
    assert ex.depth() == ([], [(100, 1)])


def test_an_order_for_another_market_is_rejected(ex: Both) -> None:
    rec = OrderAccepted(TS, "Y", 1, 1, BUY, LIMIT, GTC, 100, 1, 100, "", StpMode.NONE)
    assert ex(rec) == [OrderRejected(1, TS, "Y", 1, 1, "", RejectCode.UNKNOWN_MARKET)]
    assert ex.depth() == ([], [])


# ------------------------------------------------------------------------------ extremes


def test_minimum_price_and_quantity(ex: Both) -> None:
    ex(sell(1, 1, 1))
    assert ex(buy(2, 1, 1)) == [trade(2, 1, 1, 1, BUY, 1, 2, 2, 1), filled(3, 1, 2), filled(4, 2, 1)]


def test_huge_prices_and_quantities_stay_exact() -> None:
    market = Market(SYM, "B", "Q", notional_unit=10**6, lot_units=1, maker_fee_bps=10, taker_fee_bps=25)
    ex = Both(market)
    price, qty = 10**12, 10**9
    ex(sell(1, price, qty), sell(2, price - 1, qty))
    events = ex(buy(3, price, 2 * qty - 1))
    last_trade = [e for e in events if isinstance(e, TradeExecuted)][-1]
    notional = price * (qty - 1) * 10**6
    assert (last_trade.price, last_trade.qty) == (price, qty - 1)
    assert (last_trade.maker_fee, last_trade.taker_fee) == (notional // 1_000, notional * 25 // 10_000)
    assert ex.depth() == ([], [(price, 1)])
    budget = cost(market, price, 1, 25)
    events = ex(market_buy_quote(4, budget - 1))  # one unit short of the last lot
    assert trades(events) == []
    assert trades(ex(market_buy_quote(5, budget))) == [(price, 1, 1, 5)]


def test_market_buy_by_quote_with_a_huge_budget_on_a_deep_book(ex: Both) -> None:
    ex(*[sell(i, 100 + i, 10**9, user=2) for i in range(1, 21)])
    events = ex(market_buy_quote(50, 1 << 60))
    assert len(trades(events)) == 20
    assert isinstance(events[-1], OrderExpired) and events[-1].reason == ExpireReason.NO_LIQUIDITY


# ------------------------------------------------------------------------------ seq


def test_seq_numbers_every_event_once_in_order(ex: Both) -> None:
    records = [
        sell(1, 100, 2), sell(2, 101, 2, coid="x"), buy(3, 99, 1), sell(4, 101, 1, coid="x"),
        buy(5, 101, 3), cancel(1, order_id=3), cancel(1, order_id=3), cancel_all(2),
        buy(6, 98, 1, type=LIMIT_MAKER), sell(7, 98, 1, type=LIMIT_MAKER), market_buy(8, 1),
        sell(9, 97, 5, tif=FOK), sell(10, 98, 2, tif=IOC),
    ]  # fmt: skip
    seqs: list[int] = []
    trade_ids: list[int] = []
    for rec in records:
        events = ex(rec)
        seqs += [e.seq for e in events]
        trade_ids += [e.trade_id for e in events if isinstance(e, TradeExecuted)]
        assert ex.engine.seq == seqs[-1] if seqs else ex.engine.seq == 0
    assert seqs == list(range(1, len(seqs) + 1))
    assert trade_ids == list(range(1, len(trade_ids) + 1)) and trade_ids
    assert ex.engine.last_trade_id == trade_ids[-1]


# ------------------------------------------------------------------------------ lazy cancels and compaction


def test_a_cancelled_order_at_the_front_of_a_level_is_skipped(ex: Both) -> None:
    ex(sell(1, 100, 1, user=2), sell(2, 100, 1, user=3), sell(3, 100, 1, user=4), sell(4, 100, 1, user=5))
    ex(cancel(2, order_id=1), cancel(4, order_id=3))
    assert ex.depth() == ([], [(100, 2)])
    assert trades(ex(buy(5, 100, 2))) == [(100, 1, 2, 5), (100, 1, 4, 5)]
    assert ex.depth() == ([], [])


def test_a_level_emptied_by_cancels_is_gone_and_can_come_back(ex: Both) -> None:
    ex(sell(1, 100, 1), sell(2, 100, 1), sell(3, 102, 1))
    ex(cancel(2, order_id=1), cancel(2, order_id=2))
    assert ex.engine.best_ask() == 102
    assert ex(sell(4, 101, 1)) == [rested(6, 4, 2, SELL, 101, 1)]
    ex(sell(5, 100, 1))  # re-opens the level of the cancelled orders
    assert ex.engine.best_ask() == 100
    assert trades(ex(buy(6, 102, 3))) == [(100, 1, 5, 6), (101, 1, 4, 6), (102, 1, 3, 6)]


def test_many_cancels_then_matching_is_still_correct(ex: Both) -> None:
    """1,500 resting orders, 1,400 cancelled: more than 1024 dead ids, so the book compacts."""
    ex(*[sell(i, 100 + i % 10, 1 + i % 3, user=10 + i % 7) for i in range(1, 1501)])
    survivors = set(range(1, 1501, 15))  # 100 orders, at the front, middle and back of levels
    doomed = [i for i in range(1, 1501) if i not in survivors]
    for i in doomed[::2] + doomed[1::2]:  # not in arrival order
        ex(cancel(10 + i % 7, order_id=i))
    assert len(ex.engine.open_orders()) == 100
    # a few more lazy cancels after the compaction, then sweep the book
    ex(cancel(10 + 1 % 7, order_id=1), cancel(10 + 16 % 7, order_id=16))
    events = ex(market_buy(2000, 10_000, user=1))
    swept = [maker for _, _, maker, _ in trades(events)]
    expected = sorted(survivors - {1, 16}, key=lambda i: (100 + i % 10, i))
    assert swept == expected
    assert ex.depth() == ([], [])


def test_cancel_all_of_many_orders_interleaved_with_others(ex: Both) -> None:
    ex(*[sell(i, 100 + i % 3, 1, user=1 if i % 4 else 2) for i in range(1, 1601)])
    events = ex(cancel_all(1))
    assert len(events) == 1200 and [e.order_id for e in events] == sorted(e.order_id for e in events)
    swept = [maker for _, _, maker, _ in trades(ex(market_buy(5000, 1000, user=3)))]
    assert swept == sorted(range(4, 1601, 4), key=lambda i: (100 + i % 3, i))


# ------------------------------------------------------------------------------ snapshots


def build_state(ex: Both) -> None:
    ex(
        sell(1, 101, 5, coid="s1"), sell(2, 101, 3, user=3), sell(3, 103, 2), buy(4, 99, 4, coid="b1"),
        buy(5, 98, 2, user=3), buy(6, 101, 2), cancel(3, order_id=5), sell(7, 104, 1, user=1),
    )  # fmt: skip


def test_snapshot_restore_round_trip_gives_the_same_state_and_events(ex: Both) -> None:
    build_state(ex)
    restored = MatchingEngine.restore(MKT, ex.engine.snapshot())
    assert restored.state_hash() == ex.engine.state_hash()
    assert restored.snapshot() == ex.engine.snapshot()
    assert (restored.seq, restored.last_trade_id) == (ex.engine.seq, ex.engine.last_trade_id)
    assert restored.depth() == ex.engine.depth() and restored.open_orders() == ex.engine.open_orders()
    assert restored.order_id_for(2, "s1") == 1
    later = [
        buy(10, 101, 2, user=4), sell(11, 99, 1, user=5, coid="b1"), buy(12, 99, 1, coid="b1"),
        cancel(2, coid="s1"), cancel(1, coid="b1"), sell(13, 99, 10, user=6), market_buy_quote(14, 2_000),
        cancel_all(1), buy(15, 104, 1, user=1, stp=StpMode.EXPIRE_TAKER),
    ]  # fmt: skip
    for rec in later:
        assert restored.apply(rec) == ex(rec)
        assert restored.state_hash() == ex.engine.state_hash()


def test_restore_refuses_a_snapshot_of_another_market(ex: Both) -> None:
    build_state(ex)
    other = Market("Y", "B", "Q", notional_unit=1, lot_units=1)
    with pytest.raises(ValueError):
        MatchingEngine.restore(other, ex.engine.snapshot())


def test_state_hash_follows_the_state() -> None:
    a, b = Both(), Both()
    build_state(a)
    build_state(b)
    assert a.engine.state_hash() == b.engine.state_hash()
    b(sell(20, 110, 1))
    assert a.engine.state_hash() != b.engine.state_hash()


# ------------------------------------------------------------------------------ views


def test_views_of_an_empty_book() -> None:
    engine = MatchingEngine(MKT)
    assert (engine.best_bid(), engine.best_ask()) == (None, None)
    assert engine.depth() == ([], []) and engine.depth(3) == ([], [])
    assert engine.open_orders() == [] and engine.open_order(1) is None
    assert engine.order_id_for(1, "a") is None


def test_depth_best_prices_and_open_orders(ex: Both) -> None:
    ex(
        buy(1, 98, 1), buy(2, 99, 2, coid="b"), buy(3, 99, 3, user=3), sell(4, 102, 1, user=3),
        sell(5, 101, 4), sell(6, 102, 2), buy(7, 97, 1),
    )  # fmt: skip
    assert (ex.engine.best_bid(), ex.engine.best_ask()) == (99, 101)
    assert ex.depth() == ([(99, 5), (98, 1), (97, 1)], [(101, 4), (102, 3)])
    assert ex.engine.depth(1) == ([(99, 5)], [(101, 4)])
    assert ex.engine.depth(2) == ([(99, 5), (98, 1)], [(101, 4), (102, 3)])
    assert [o.order_id for o in ex.engine.open_orders()] == [2, 3, 1, 7, 5, 4, 6]
    ex(sell(8, 99, 3, user=4))  # takes 2 from order 2, 1 from order 3
    view = ex.engine.open_order(3)
    assert view is not None and (view.user, view.side, view.price, view.qty) == (3, BUY, 99, 2)
    assert ex.engine.open_order(2) is None and ex.engine.order_id_for(1, "b") is None
    first = ex.engine.open_orders()[0]
    assert (first.order_id, first.qty, first.client_order_id) == (3, 2, "")


# ------------------------------------------------------------------------------ batches


def test_apply_batch_numbers_the_events_of_its_records_in_order() -> None:
    one_by_one, batched = MatchingEngine(MKT), MatchingEngine(MKT)
    records: list[MatchingRecord] = [
        sell(1, 101, 5), buy(2, 101, 2, user=2), cancel(1, 1), cancel(1, 1), cancel_all(2),
    ]  # fmt: skip
    want = [event for rec in records for event in one_by_one.apply(rec)]
    got = batched.apply_batch(records)
    assert got == want and [e.seq for e in got] == list(range(1, len(got) + 1))
    assert batched.apply_batch([]) == []


def test_apply_batch_refuses_a_record_that_is_not_for_matching() -> None:
    engine = MatchingEngine(MKT)
    with pytest.raises(TypeError, match="not a matching record: str"):
        engine.apply_batch([sell(1, 101, 5), "nonsense"])  # type: ignore[list-item]
    assert engine.best_ask() == 101  # the records before it stay applied
