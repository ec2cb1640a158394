"""The accounts engine on its own: balances, validation, reservations, settlement, snapshots.

Matching events are written by hand here, so each test states exactly what
settlement receives; tests/unit/test_exchange.py runs the real matching engine.
"""

from __future__ import annotations

import gc
from typing import Any

import msgspec
import pytest

from investo.core.accounts import AccountsEngine, AccountsRecord, ReservedOrder, validate_order
from investo.core.markets import Market, buy_reservation
from investo.core.messages import (
    CancelReason,
    CancelRejected,
    Deposit,
    Deposited,
    DepositRejected,
    ExpireReason,
    MatchingEvent,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderRested,
    OrderType,
    PlaceOrder,
    RejectCode,
    Side,
    StpMode,
    TimeInForce,
    TradeExecuted,
    Withdraw,
    Withdrawn,
    WithdrawRejected,
)

BUY, SELL = Side.BUY, Side.SELL
LIMIT, LIMIT_MAKER, MARKET = OrderType.LIMIT, OrderType.LIMIT_MAKER, OrderType.MARKET
GTC, IOC, FOK = TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK

# One tick × one lot is worth 10 INR units; one lot is 100 TATA units.
TATA = Market(
    "TATA_INR", "TATA", "INR", notional_unit=10, lot_units=100, maker_fee_bps=10, taker_fee_bps=20,
    max_price=1_000, max_qty=1_000, min_notional=500,
)  # fmt: skip
ZOMATO = Market("ZOMATO_INR", "ZOMATO", "INR", notional_unit=1, lot_units=1)
MARKETS = {m.symbol: m for m in (TATA, ZOMATO)}


def engine(**kwargs: Any) -> AccountsEngine:
    return AccountsEngine(MARKETS, **kwargs)


def place(
    user: int,
    side: Side,
    type: OrderType = LIMIT,
    price: int = 100,
    qty: int = 5,
    *,
    tif: TimeInForce = GTC,
    quote_qty: int = 0,
    market: str = "TATA_INR",
    client_order_id: str = "",
) -> PlaceOrder:
    return PlaceOrder(10, user, market, side, type, tif, price, qty, quote_qty, client_order_id)


def accept(acc: AccountsEngine, cmd: PlaceOrder) -> OrderAccepted:
    (event,) = acc.apply(cmd)
    assert isinstance(event, OrderAccepted), event
    return event


def funded(**balances: int) -> AccountsEngine:
    """An engine where user 1 holds ``balances`` (asset=amount) and user 2 the same."""
    acc = engine()
    for user in (1, 2):
        for asset, amount in balances.items():
            acc.apply(Deposit(1, user, asset, amount))
    return acc


def trade(
    maker: OrderAccepted, taker: OrderAccepted, price: int, qty: int, market: Market = TATA
) -> TradeExecuted:
    notional = market.notional(price, qty)
    return TradeExecuted(
        0, 20, market.symbol, 1, price, qty, taker.side, maker.order_id, maker.user, taker.order_id,
        taker.user, notional * market.maker_fee_bps // 10_000, notional * market.taker_fee_bps // 10_000,
    )  # fmt: skip


def without_seq(acc: AccountsEngine) -> dict[str, Any]:
    state: dict[str, Any] = msgspec.msgpack.decode(acc.snapshot())
    del state["seq"]
    return state


# ---------------------------------------------------------------------- deposits and withdrawals


def test_deposit_credits_available_and_numbers_events() -> None:
    acc = engine()
    assert acc.apply(Deposit(5, 1, "INR", 1_000)) == [Deposited(1, 5, 1, "INR", 1_000)]
    assert acc.apply(Deposit(6, 1, "INR", 500)) == [Deposited(2, 6, 1, "INR", 500)]
    assert acc.balance(1, "INR") == (1_500, 0)
    assert acc.balances(1) == {"INR": (1_500, 0)}
    acc.check_invariants()


@pytest.mark.parametrize(
    ("asset", "amount", "code"),
    [
        ("INR", 0, RejectCode.INVALID_AMOUNT),
        ("INR", -5, RejectCode.INVALID_AMOUNT),
        ("USD", 5, RejectCode.UNKNOWN_ASSET),
        ("INR", 1 << 63, RejectCode.INVALID_AMOUNT),  # would not fit an int64 balance
    ],
)
def test_bad_deposit_is_rejected_and_changes_nothing(asset: str, amount: int, code: RejectCode) -> None:
    acc = funded(INR=100)
    before = without_seq(acc)
    assert acc.apply(Deposit(5, 1, asset, amount)) == [DepositRejected(3, 5, 1, asset, amount, code)]
    assert without_seq(acc) == before
    acc.check_invariants()


def test_withdraw_debits_available() -> None:
    acc = funded(INR=1_000)
    assert acc.apply(Withdraw(5, 1, "INR", 400)) == [Withdrawn(3, 5, 1, "INR", 400)]
    assert acc.balance(1, "INR") == (600, 0)
    assert acc.apply(Withdraw(6, 1, "INR", 600)) == [Withdrawn(4, 6, 1, "INR", 600)]
    assert acc.balance(1, "INR") == (0, 0)
    assert acc.balances(1) == {}
    acc.check_invariants()


@pytest.mark.parametrize(
    ("asset", "amount", "code"),
    [
        ("INR", 1_001, RejectCode.INSUFFICIENT_BALANCE),
        ("TATA", 1, RejectCode.INSUFFICIENT_BALANCE),
        ("INR", 0, RejectCode.INVALID_AMOUNT),
        ("INR", -1, RejectCode.INVALID_AMOUNT),
        ("USD", 1, RejectCode.UNKNOWN_ASSET),
    ],
)
def test_bad_withdrawal_is_rejected_and_changes_nothing(asset: str, amount: int, code: RejectCode) -> None:
    acc = funded(INR=1_000)
    before = without_seq(acc)
    assert acc.apply(Withdraw(5, 1, asset, amount)) == [WithdrawRejected(3, 5, 1, asset, amount, code)]
    assert without_seq(acc) == before


def test_reserved_funds_cannot_be_withdrawn() -> None:
    acc = funded(TATA=1_000)
    accept(acc, place(1, SELL, qty=6))  # reserves 600 TATA
    (event,) = acc.apply(Withdraw(5, 1, "TATA", 401))
    assert isinstance(event, WithdrawRejected) and event.code == RejectCode.INSUFFICIENT_BALANCE
    assert acc.apply(Withdraw(5, 1, "TATA", 400))[0] == Withdrawn(4, 5, 1, "TATA", 400)
    assert acc.balance(1, "TATA") == (0, 600)


# ---------------------------------------------------------------------- reservations


def test_limit_buy_reserves_notional_plus_highest_fee() -> None:
    acc = funded(INR=100_000)
    rec = accept(acc, place(1, BUY, price=105, qty=7, client_order_id="a"))
    need = buy_reservation(TATA, 105, 7)
    assert need == 105 * 7 * 10 + 105 * 7 * 10 * 20 // 10_000 == 7_364
    assert rec == OrderAccepted(
        10, "TATA_INR", 1, 1, BUY, LIMIT, GTC, 105, 7, need, "a", StpMode.EXPIRE_MAKER
    )
    assert acc.balance(1, "INR") == (100_000 - need, need)
    assert acc.open_order(1) == ReservedOrder(1, 1, "TATA_INR", BUY, LIMIT, 105, 7, "INR", need)
    acc.check_invariants()


def test_limit_maker_is_normalised_to_gtc() -> None:
    acc = funded(INR=100_000)
    rec = accept(acc, place(1, BUY, LIMIT_MAKER, tif=IOC))
    assert rec.tif == GTC
    assert rec.quote_limit == buy_reservation(TATA, 100, 5)


@pytest.mark.parametrize("type", [LIMIT, LIMIT_MAKER, MARKET])
def test_sell_reserves_base(type: OrderType) -> None:
    acc = funded(TATA=1_000)
    price = 0 if type == MARKET else 100
    rec = accept(acc, place(1, SELL, type, price=price, qty=4))
    assert rec.quote_limit == 0
    assert acc.balance(1, "TATA") == (600, 400)
    acc.check_invariants()


def test_market_orders_are_ioc() -> None:
    acc = funded(TATA=1_000, INR=1_000)
    assert accept(acc, place(1, SELL, MARKET, price=0, qty=1, tif=GTC)).tif == IOC
    assert accept(acc, place(1, BUY, MARKET, price=0, qty=0, quote_qty=10, tif=FOK)).tif == IOC


def test_market_buy_by_quote_reserves_exactly_quote_qty() -> None:
    acc = funded(INR=10_000)
    rec = accept(acc, place(1, BUY, MARKET, price=0, qty=0, quote_qty=2_500))
    assert (rec.qty, rec.quote_limit) == (0, 2_500)
    assert acc.balance(1, "INR") == (7_500, 2_500)
    acc.check_invariants()


def test_market_buy_by_qty_reserves_all_available_quote() -> None:
    acc = funded(INR=10_000)
    accept(acc, place(1, BUY, price=100, qty=1))  # holds 1_002
    rec = accept(acc, place(1, BUY, MARKET, price=0, qty=3))
    assert rec.quote_limit == 10_000 - 1_002
    assert acc.balance(1, "INR") == (0, 10_000)
    acc.check_invariants()


def test_order_ids_count_accepted_orders_only() -> None:
    acc = funded(INR=10_000)
    assert accept(acc, place(1, BUY)).order_id == 1
    (rejected,) = acc.apply(place(1, BUY, price=0))
    assert isinstance(rejected, OrderRejected)
    assert accept(acc, place(2, BUY)).order_id == 2


def test_order_ids_are_unique_across_shards() -> None:
    shard1 = AccountsEngine(MARKETS, shard=1, shard_count=3)
    shard2 = AccountsEngine(MARKETS, shard=2, shard_count=3)
    shard1.apply(Deposit(1, 4, "INR", 100_000))
    shard2.apply(Deposit(1, 5, "INR", 100_000))
    ids1 = [accept(shard1, place(4, BUY)).order_id for _ in range(3)]
    ids2 = [accept(shard2, place(5, BUY)).order_id for _ in range(3)]
    assert ids1 == [4, 7, 10]
    assert ids2 == [5, 8, 11]


def test_command_for_another_shards_user_is_a_routing_error() -> None:
    acc = AccountsEngine(MARKETS, shard=1, shard_count=2)
    with pytest.raises(ValueError, match="shard"):
        acc.apply(Deposit(1, 2, "INR", 10))
    with pytest.raises(ValueError):
        AccountsEngine(MARKETS, shard=2, shard_count=2)


# ---------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("cmd", "code"),
    [
        (place(1, BUY, market="NOPE_INR"), RejectCode.UNKNOWN_MARKET),
        (place(1, BUY, price=0), RejectCode.INVALID_PRICE),
        (place(1, BUY, price=-100), RejectCode.INVALID_PRICE),
        (place(1, SELL, LIMIT_MAKER, price=1_001), RejectCode.INVALID_PRICE),
        (place(1, BUY, qty=0), RejectCode.INVALID_QUANTITY),
        (place(1, BUY, qty=1_001), RejectCode.INVALID_QUANTITY),
        (place(1, SELL, MARKET, price=0, qty=-1), RejectCode.INVALID_QUANTITY),
        (place(1, SELL, MARKET, price=0, qty=1_001), RejectCode.INVALID_QUANTITY),
        (place(1, BUY, MARKET, price=0, qty=0), RejectCode.INVALID_ORDER),  # neither qty nor quote
        (place(1, BUY, MARKET, price=0, qty=1, quote_qty=10), RejectCode.INVALID_ORDER),  # both
        (place(1, BUY, MARKET, price=0, qty=0, quote_qty=-10), RejectCode.INVALID_ORDER),
        (place(1, SELL, MARKET, price=0, qty=0), RejectCode.INVALID_QUANTITY),
        (place(1, SELL, MARKET, price=0, qty=1, quote_qty=10), RejectCode.INVALID_ORDER),
        (place(1, BUY, MARKET, price=100, qty=1), RejectCode.INVALID_ORDER),  # price on a market order
        (place(1, BUY, price=100, qty=5, quote_qty=10), RejectCode.INVALID_ORDER),
        (place(1, SELL, price=49, qty=1), RejectCode.MIN_NOTIONAL),  # 490 < 500
    ],
)
def test_invalid_order_is_rejected_and_changes_nothing(cmd: PlaceOrder, code: RejectCode) -> None:
    acc = funded(INR=10**9, TATA=10**9)
    before = without_seq(acc)
    assert acc.apply(cmd) == [OrderRejected(5, 10, cmd.market, 0, 1, "", code)]
    assert without_seq(acc) == before
    assert acc.seq == 5


def test_min_notional_boundary_is_accepted() -> None:
    assert validate_order(TATA, place(1, SELL, price=50, qty=1)) is None


@pytest.mark.parametrize(
    "cmd",
    [
        place(1, BUY, price=100, qty=5),  # needs 5_010
        place(1, BUY, LIMIT_MAKER, price=100, qty=5),
        place(1, SELL, qty=5),  # needs 500 TATA
        place(1, SELL, MARKET, price=0, qty=5),
        place(1, BUY, MARKET, price=0, qty=0, quote_qty=5_001),
    ],
)
def test_insufficient_balance_rejects_and_changes_nothing(cmd: PlaceOrder) -> None:
    acc = funded(INR=5_000, TATA=499)
    before, next_id = without_seq(acc), acc.next_local
    (event,) = acc.apply(cmd)
    assert event == OrderRejected(acc.seq, 10, "TATA_INR", 0, 1, "", RejectCode.INSUFFICIENT_BALANCE)
    assert without_seq(acc) == before
    assert acc.next_local == next_id
    acc.check_invariants()


def test_market_buy_by_qty_without_any_quote_is_rejected() -> None:
    acc = funded(TATA=1_000)
    hash_before = without_seq(acc)
    (event,) = acc.apply(place(1, BUY, MARKET, price=0, qty=1))
    assert isinstance(event, OrderRejected) and event.code == RejectCode.INSUFFICIENT_BALANCE
    assert without_seq(acc) == hash_before


def test_the_exact_reservation_is_enough() -> None:
    acc = funded(INR=buy_reservation(TATA, 100, 5))
    accept(acc, place(1, BUY, price=100, qty=5))
    assert acc.balance(1, "INR") == (0, 5_010)


# ---------------------------------------------------------------------- settlement


def test_trade_settles_both_sides_at_the_makers_price_and_credits_fees() -> None:
    acc = funded(INR=100_000, TATA=10_000)
    ask = accept(acc, place(2, SELL, price=100, qty=5))
    bid = accept(acc, place(1, BUY, price=105, qty=3))
    assert acc.apply(trade(ask, bid, 100, 3)) == []  # notional 3_000, maker fee 3, taker fee 6
    # Buyer: paid 3_006 and got 300 TATA; the over-reserve (105 vs 100) is released at once.
    assert acc.balance(1, "INR") == (100_000 - 3_006, 0)
    assert acc.balance(1, "TATA") == (10_300, 0)
    # Seller: delivered 300 TATA out of 500 reserved, received 3_000 − 3.
    assert acc.balance(2, "TATA") == (9_500, 200)
    assert acc.balance(2, "INR") == (100_000 + 2_997, 0)
    assert acc.balance(0, "INR") == (9, 0)
    assert acc.open_order(ask.order_id) == ReservedOrder(
        ask.order_id, 2, "TATA_INR", SELL, LIMIT, 100, 2, "TATA", 200
    )
    acc.check_invariants()  # the filled bid still counts as open until OrderFilled
    acc.apply(OrderPartiallyFilled(0, 20, "TATA_INR", ask.order_id, 2, 2))
    acc.apply(OrderFilled(0, 20, "TATA_INR", bid.order_id, 1))
    assert acc.open_order_ids(1) == []
    assert acc.open_order_ids(2) == [ask.order_id]
    acc.check_invariants()


def test_partial_fill_keeps_exactly_what_the_remaining_lots_need() -> None:
    acc = funded(INR=100_000, TATA=10_000)
    bid = accept(acc, place(1, BUY, price=105, qty=10))
    ask = accept(acc, place(2, SELL, price=101, qty=4))
    acc.apply(trade(bid, ask, 105, 4))  # the bid is the maker: fills at its own price, maker fee
    order = acc.open_order(bid.order_id)
    assert order is not None and order.remaining == 6
    assert order.reserved == buy_reservation(TATA, 105, 6)
    paid = 4_200 + 4_200 * 10 // 10_000
    assert acc.balance(1, "INR") == (100_000 - paid - order.reserved, order.reserved)
    acc.check_invariants()


@pytest.mark.parametrize(
    "finish",
    [
        lambda o: OrderCanceled(0, 30, "TATA_INR", o, 1, BUY, 100, 5, CancelReason.USER),
        lambda o: OrderExpired(0, 30, "TATA_INR", o, 1, BUY, 100, 5, ExpireReason.IOC_REMAINDER, False),
        lambda o: OrderRejected(0, 30, "TATA_INR", o, 1, "", RejectCode.WOULD_TAKE),
    ],
)
def test_finished_order_releases_its_reservation(finish: Any) -> None:
    acc = funded(INR=10_000)
    bid = accept(acc, place(1, BUY))
    assert acc.balance(1, "INR") == (10_000 - 5_010, 5_010)
    assert acc.apply(finish(bid.order_id)) == []
    assert acc.balance(1, "INR") == (10_000, 0)
    assert acc.open_order_ids(1) == []
    acc.check_invariants()


def test_events_that_move_no_money_change_nothing() -> None:
    acc = funded(INR=10_000)
    bid = accept(acc, place(1, BUY))
    before = acc.snapshot()
    acc.apply(OrderRested(1, 30, "TATA_INR", bid.order_id, 1, BUY, 100, 5))
    acc.apply(CancelRejected(2, 30, "TATA_INR", 1, 99, "", RejectCode.UNKNOWN_ORDER))
    acc.apply(OrderRejected(3, 30, "TATA_INR", 0, 1, "", RejectCode.INSUFFICIENT_BALANCE))
    acc.apply(OrderFilled(4, 30, "TATA_INR", 12345, 1))  # not an order of this shard
    assert acc.snapshot() == before


def test_settle_is_apply_on_each_event_in_turn() -> None:
    one_by_one, _, bid = busy_engine()  # bid: user 1 buys at 105, 3 lots left
    batched = AccountsEngine.restore(MARKETS, one_by_one.snapshot())
    low_bid, ask = place(1, BUY, price=90, qty=1), place(2, SELL, price=104, qty=2)
    low_bid_accepted, ask_accepted = accept(one_by_one, low_bid), accept(one_by_one, ask)
    assert [accept(batched, low_bid), accept(batched, ask)] == [low_bid_accepted, ask_accepted]
    events: list[MatchingEvent] = [
        OrderRested(1, 30, "TATA_INR", low_bid_accepted.order_id, 1, BUY, 90, 1),
        trade(bid, ask_accepted, 105, 2),  # the ask takes 2 lots from the bid, at the bid's price
        OrderPartiallyFilled(3, 30, "TATA_INR", bid.order_id, 1, 1),
        OrderFilled(4, 30, "TATA_INR", ask_accepted.order_id, 2),
        CancelRejected(5, 30, "TATA_INR", 1, 99, "", RejectCode.UNKNOWN_ORDER),
        OrderCanceled(6, 30, "TATA_INR", bid.order_id, 1, BUY, 105, 1, CancelReason.USER),
        OrderFilled(7, 30, "TATA_INR", 12345, 1),  # not an order of this shard
    ]
    for event in events:
        assert one_by_one.apply(event) == []
        one_by_one.check_invariants()
    batched.settle(events)
    assert batched.snapshot() == one_by_one.snapshot()
    assert batched.open_order_ids(1) == [low_bid_accepted.order_id]
    batched.check_invariants()


def test_open_orders_are_not_tracked_by_the_garbage_collector() -> None:
    # Side and type are kept as plain ints: an enum member would keep every entry tracked.
    # An entry shares its order kind, a tuple the collector stops tracking at its first
    # pass after the engine starts; from then on an entry stops being tracked at its own.
    acc = funded(INR=100_000, TATA=10_000)
    gc.collect()
    kinds = [kind for m in acc._by_market.values() for by_type in m.kinds for kind in by_type]
    assert not any(gc.is_tracked(kind) for kind in kinds)
    bid = accept(acc, place(1, BUY, price=100, qty=5))
    ask = accept(acc, place(2, SELL, price=100, qty=2))
    acc.apply(trade(bid, ask, 100, 2))  # a fill replaces the bid's entry
    gc.collect()
    assert acc.open_order_ids(1) == [bid.order_id] and acc.open_order_ids(2) == [ask.order_id]
    assert not any(gc.is_tracked(entry) for entry in acc._orders.values())


def test_market_buy_releases_what_it_did_not_spend_when_it_finishes() -> None:
    acc = funded(INR=10_000, TATA=10_000)
    ask = accept(acc, place(2, SELL, price=100, qty=2))
    taker = accept(acc, place(1, BUY, MARKET, price=0, qty=0, quote_qty=5_000))
    acc.apply(trade(ask, taker, 100, 2))  # 2_000 + taker fee 4
    assert acc.balance(1, "INR") == (5_000, 2_996)  # the market order keeps its reservation until done
    acc.apply(OrderExpired(0, 20, "TATA_INR", taker.order_id, 1, BUY, 0, 0, ExpireReason.NO_LIQUIDITY, False))
    assert acc.balance(1, "INR") == (10_000 - 2_004, 0)
    assert acc.balance(1, "TATA") == (10_200, 0)
    acc.check_invariants()


def test_self_trade_settles_both_sides_of_one_user() -> None:
    acc = funded(INR=100_000, TATA=10_000)
    ask = accept(acc, place(1, SELL, price=100, qty=5))
    bid = accept(acc, place(1, BUY, price=100, qty=5))
    acc.apply(trade(ask, bid, 100, 5))  # 5_000 notional, maker fee 5, taker fee 10
    acc.apply(OrderFilled(0, 20, "TATA_INR", ask.order_id, 1))
    acc.apply(OrderFilled(0, 20, "TATA_INR", bid.order_id, 1))
    assert acc.balances(1) == {"INR": (100_000 - 15, 0), "TATA": (10_000, 0)}
    assert acc.balance(0, "INR") == (15, 0)
    acc.check_invariants()


def test_fees_go_to_the_configured_fee_account() -> None:
    acc = AccountsEngine(MARKETS, fee_account=99)
    for user in (1, 2):
        acc.apply(Deposit(1, user, "INR", 100_000))
        acc.apply(Deposit(1, user, "TATA", 10_000))
    ask = accept(acc, place(2, SELL, price=100, qty=5))
    bid = accept(acc, place(1, BUY, price=100, qty=5))
    acc.apply(trade(ask, bid, 100, 5))
    assert acc.balance(99, "INR") == (15, 0)
    assert acc.balance(0, "INR") == (0, 0)
    acc.check_invariants()


def test_two_shards_each_settle_their_own_side_and_conserve_value_together() -> None:
    shards = [AccountsEngine(MARKETS, shard=s, shard_count=2) for s in (0, 1)]
    shards[1].apply(Deposit(1, 1, "INR", 100_000))
    shards[0].apply(Deposit(1, 2, "TATA", 10_000))
    bid = accept(shards[1], place(1, BUY, price=100, qty=5))
    ask = accept(shards[0], place(2, SELL, price=100, qty=5))
    event = trade(bid, ask, 100, 5)
    for shard in shards:
        shard.apply(event)
        shard.check_invariants()
    assert shards[1].balances(1) == {"INR": (100_000 - 5_005, 0), "TATA": (500, 0)}
    assert shards[0].balances(2) == {"INR": (5_000 - 10, 0), "TATA": (9_500, 0)}
    # Each shard credits the fee of the side it settled to its own copy of the fee account.
    assert shards[1].balance(0, "INR") == (5, 0)
    assert shards[0].balance(0, "INR") == (10, 0)
    for asset, deposited in (("INR", 100_000), ("TATA", 10_000)):
        assert sum(s.total(asset) for s in shards) == deposited


def test_check_invariants_detects_a_broken_balance() -> None:
    acc = funded(INR=10_000)
    accept(acc, place(1, BUY))
    acc.check_invariants()
    acc._holdings["INR"][1].reserved -= 1
    with pytest.raises(AssertionError, match="reserved"):
        acc.check_invariants()
    acc._holdings["INR"][1].reserved += 1
    acc._holdings["INR"][2].available += 1
    with pytest.raises(AssertionError, match="INR"):
        acc.check_invariants()


# ---------------------------------------------------------------------- snapshots


def busy_engine() -> tuple[AccountsEngine, OrderAccepted, OrderAccepted]:
    acc = funded(INR=100_000, TATA=10_000, ZOMATO=50)
    acc.apply(Withdraw(2, 2, "INR", 1_234))
    ask = accept(acc, place(2, SELL, price=100, qty=5, client_order_id="s"))
    bid = accept(acc, place(1, BUY, price=105, qty=8))
    acc.apply(trade(ask, bid, 100, 5))
    acc.apply(OrderFilled(0, 20, "TATA_INR", ask.order_id, 2))
    return acc, ask, bid


def test_snapshot_restore_round_trip() -> None:
    acc, _, bid = busy_engine()
    copy = AccountsEngine.restore(MARKETS, acc.snapshot())
    assert copy.snapshot() == acc.snapshot()
    assert copy.state_hash() == acc.state_hash()
    assert copy.open_orders() == acc.open_orders()
    copy.check_invariants()
    later: list[AccountsRecord] = [
        Deposit(40, 3, "INR", 7_000),
        place(3, BUY, MARKET, price=0, qty=0, quote_qty=600),
        place(1, BUY, price=1, qty=1),
        OrderCanceled(0, 41, "TATA_INR", bid.order_id, 1, BUY, 105, 3, CancelReason.USER),
        Withdraw(42, 1, "INR", 10**9),
    ]
    assert [copy.apply(r) for r in later] == [acc.apply(r) for r in later]
    assert copy.state_hash() == acc.state_hash()


def test_snapshot_is_canonical_whatever_the_history() -> None:
    a, b = engine(), engine()
    a.apply(Deposit(1, 1, "INR", 10))
    a.apply(Deposit(1, 2, "TATA", 10))
    b.apply(Deposit(1, 2, "TATA", 10))
    b.apply(Deposit(1, 1, "INR", 10))
    assert a.state_hash() == b.state_hash()


def test_an_emptied_account_is_not_listed() -> None:
    acc = engine()
    acc.apply(Deposit(1, 3, "ZOMATO", 5))
    acc.apply(Withdraw(2, 3, "ZOMATO", 5))
    assert acc.balances(3) == {}
    assert acc.balance(3, "ZOMATO") == (0, 0)
    assert msgspec.msgpack.decode(acc.snapshot())["balances"] == []
    acc.check_invariants()


def test_restore_refuses_orders_in_unknown_markets() -> None:
    acc, _, _ = busy_engine()
    with pytest.raises(ValueError, match="TATA_INR"):
        AccountsEngine.restore({"ZOMATO_INR": ZOMATO}, acc.snapshot())
