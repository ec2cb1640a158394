"""The in-process exchange: accounts and matching engines wired as the logs wire them."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from investo.core.exchange import Exchange
from investo.core.markets import Market, buy_reservation
from investo.core.messages import (
    CancelAll,
    CancelOrder,
    CancelReason,
    CancelRejected,
    Command,
    Deposit,
    Deposited,
    Event,
    ExpireReason,
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
)

BUY, SELL = Side.BUY, Side.SELL
LIMIT, LIMIT_MAKER, MARKET = OrderType.LIMIT, OrderType.LIMIT_MAKER, OrderType.MARKET
GTC, IOC, FOK = TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK

# One tick × one lot is worth 10 INR units; one lot is 100 TATA units.
TATA = Market("TATA_INR", "TATA", "INR", notional_unit=10, lot_units=100, maker_fee_bps=10, taker_fee_bps=20)
ZOMATO = Market("ZOMATO_INR", "ZOMATO", "INR", notional_unit=1, lot_units=1)
MARKETS = [TATA, ZOMATO]
RICH = 10_000_000


def place(
    user: int,
    side: Side,
    price: int = 100,
    qty: int = 5,
    type: OrderType = LIMIT,
    *,
    tif: TimeInForce = GTC,
    quote_qty: int = 0,
    market: str = "TATA_INR",
    client_order_id: str = "",
    stp: StpMode = StpMode.EXPIRE_MAKER,
) -> PlaceOrder:
    return PlaceOrder(10, user, market, side, type, tif, price, qty, quote_qty, client_order_id, stp)


def market_buy(user: int, *, qty: int = 0, quote_qty: int = 0, market: str = "TATA_INR") -> PlaceOrder:
    return place(user, BUY, 0, qty, MARKET, quote_qty=quote_qty, market=market)


def exchange(users: tuple[int, ...] = (1, 2, 3), inr: int = RICH, tata: int = RICH) -> Exchange:
    ex = Exchange(MARKETS)
    for user in users:
        run(ex, Deposit(1, user, "INR", inr), Deposit(1, user, "TATA", tata))
    return ex


def run(ex: Exchange, *commands: Command) -> list[Event]:
    events: list[Event] = []
    for command in commands:
        events.extend(ex.apply(command))
        ex.check_invariants()
    return events


def order_id(events: list[Event]) -> int:
    accepted = [e for e in events if isinstance(e, OrderAccepted)]
    assert len(accepted) == 1, events
    return accepted[0].order_id


def of(events: list[Event], kind: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def holdings(ex: Exchange, asset: str, users: range = range(10)) -> int:
    """What ``users`` (by default all the users these tests use, fee account 0 included) hold."""
    return sum(sum(ex.accounts.balance(u, asset)) for u in users)


# ---------------------------------------------------------------------- routing


def test_deposit_and_withdraw_go_to_accounts() -> None:
    ex = Exchange(MARKETS)
    assert ex.apply(Deposit(1, 1, "INR", 500)) == [Deposited(1, 1, 1, "INR", 500)]
    assert ex.apply(Withdraw(2, 1, "INR", 200)) == [Withdrawn(2, 2, 1, "INR", 200)]
    assert ex.accounts.balance(1, "INR") == (300, 0)
    ex.check_invariants()


def test_events_come_in_causal_order() -> None:
    ex = exchange()
    run(ex, place(2, SELL, 100, 5))
    events = run(ex, place(1, BUY, 100, 2))
    assert [type(e) for e in events] == [OrderAccepted, TradeExecuted, OrderPartiallyFilled, OrderFilled]
    assert [getattr(e, "seq", None) for e in events] == [None, 2, 3, 4]  # matching's seq, per market


def test_rejected_order_never_reaches_matching() -> None:
    ex = exchange()
    before = ex.matching("TATA_INR").state_hash()
    events = run(ex, place(1, BUY, 0, 5))
    assert events == [OrderRejected(7, 10, "TATA_INR", 0, 1, "", RejectCode.INVALID_PRICE)]
    assert ex.matching("TATA_INR").state_hash() == before


def test_insufficient_balance_changes_no_engine_but_the_accounts_seq() -> None:
    ex = exchange(users=(1,), inr=1_000)
    run(ex, place(1, SELL, 100, 5))
    books_before = [ex.matching(s).state_hash() for s in ex.markets]
    accounts_before: dict[str, Any] = msgspec.msgpack.decode(ex.accounts.snapshot())
    (event,) = run(ex, place(1, BUY, 99, 2))  # needs 1_984 INR
    assert isinstance(event, OrderRejected) and event.code == RejectCode.INSUFFICIENT_BALANCE
    accounts_after: dict[str, Any] = msgspec.msgpack.decode(ex.accounts.snapshot())
    assert accounts_after.pop("seq") == accounts_before.pop("seq") + 1
    assert accounts_after == accounts_before
    assert [ex.matching(s).state_hash() for s in ex.markets] == books_before


def test_cancel_in_unknown_market_is_rejected_by_the_exchange() -> None:
    ex = exchange()
    before = ex.state_hash()
    assert ex.apply(CancelOrder(5, 1, "NOPE", order_id=7)) == [
        CancelRejected(0, 5, "NOPE", 1, 7, "", RejectCode.UNKNOWN_MARKET)
    ]
    assert ex.apply(CancelAll(5, 1, "NOPE")) == [
        CancelRejected(0, 5, "NOPE", 1, 0, "", RejectCode.UNKNOWN_MARKET)
    ]
    assert ex.state_hash() == before


def test_constructor_checks_markets() -> None:
    assert list(Exchange({"ZOMATO_INR": ZOMATO, "TATA_INR": TATA}).markets) == ["TATA_INR", "ZOMATO_INR"]
    with pytest.raises(ValueError):
        Exchange([TATA, TATA])
    with pytest.raises(ValueError):
        Exchange({"OTHER": TATA})
    with pytest.raises(KeyError):
        Exchange(MARKETS).matching("NOPE")


# ---------------------------------------------------------------------- fills and settlement


def test_buy_fills_at_the_makers_price_and_releases_the_over_reserve() -> None:
    ex = exchange()
    run(ex, place(2, SELL, 100, 5))
    events = run(ex, place(1, BUY, 105, 3))
    (fill,) = of(events, TradeExecuted)
    assert (fill.price, fill.qty, fill.maker_fee, fill.taker_fee) == (100, 3, 3, 6)
    # The buyer reserved 3 × 105 × 10 + fee, paid 3 × 100 × 10 + 6 and holds nothing more.
    assert ex.accounts.balance(1, "INR") == (RICH - 3_006, 0)
    assert ex.accounts.balance(1, "TATA") == (RICH + 300, 0)
    assert ex.accounts.balance(2, "INR") == (RICH + 2_997, 0)
    assert ex.accounts.balance(2, "TATA") == (RICH - 500, 200)
    assert ex.accounts.balance(0, "INR") == (9, 0)


def test_partial_fill_rests_the_rest_with_exactly_its_reservation() -> None:
    ex = exchange()
    run(ex, place(2, SELL, 100, 2), place(3, SELL, 102, 1))
    events = run(ex, place(1, BUY, 105, 10))
    oid = order_id(events)
    assert [(t.price, t.qty) for t in of(events, TradeExecuted)] == [(100, 2), (102, 1)]
    assert of(events, OrderRested) == [OrderRested(9, 10, "TATA_INR", oid, 1, BUY, 105, 7)]
    spent = 2_000 + 4 + 1_020 + 2
    held = buy_reservation(TATA, 105, 7)
    assert ex.accounts.balance(1, "INR") == (RICH - spent - held, held)
    # A later seller fills it as maker, at 105, with the maker fee.
    run(ex, place(2, SELL, 104, 7))
    assert ex.accounts.balance(1, "INR") == (RICH - spent - 7_350 - 7, 0)
    assert ex.accounts.open_order_ids(1) == []


def test_fees_are_credited_to_the_fee_account() -> None:
    ex = Exchange(MARKETS, fee_account=42)
    run(ex, Deposit(1, 1, "INR", RICH), Deposit(1, 2, "TATA", RICH))
    run(ex, place(2, SELL, 200, 10), place(1, BUY, 200, 10))  # notional 20_000
    assert ex.accounts.balance(42, "INR") == (20 + 40, 0)
    assert ex.accounts.balance(0, "INR") == (0, 0)
    assert holdings(ex, "INR", range(43)) == RICH


def test_sell_taker_pays_the_taker_fee() -> None:
    ex = exchange()
    run(ex, place(1, BUY, 100, 4))
    run(ex, place(2, SELL, 90, 4, tif=IOC))
    assert ex.accounts.balance(2, "INR") == (RICH + 4_000 - 8, 0)
    assert ex.accounts.balance(1, "INR") == (RICH - 4_000 - 4, 0)
    assert ex.accounts.balance(0, "INR") == (12, 0)


# ---------------------------------------------------------------------- releases


def test_cancel_releases_the_reservation() -> None:
    ex = exchange()
    oid = order_id(run(ex, place(1, BUY, 100, 5)))
    assert ex.accounts.balance(1, "INR") == (RICH - 5_010, 5_010)
    events = run(ex, CancelOrder(20, 1, "TATA_INR", order_id=oid))
    assert events == [OrderCanceled(2, 20, "TATA_INR", oid, 1, BUY, 100, 5, CancelReason.USER)]
    assert ex.accounts.balance(1, "INR") == (RICH, 0)


def test_cancel_by_client_order_id_and_cancel_all_release() -> None:
    ex = exchange()
    run(ex, place(1, SELL, 110, 2, client_order_id="x"), place(1, SELL, 111, 3), place(1, BUY, 90, 1))
    run(ex, CancelOrder(20, 1, "TATA_INR", client_order_id="x"))
    assert ex.accounts.balance(1, "TATA") == (RICH - 300, 300)
    events = run(ex, CancelAll(21, 1, "TATA_INR"))
    assert len(of(events, OrderCanceled)) == 2
    assert ex.accounts.balances(1) == {"INR": (RICH, 0), "TATA": (RICH, 0)}


def test_cancel_of_somebody_elses_order_changes_nothing() -> None:
    ex = exchange()
    oid = order_id(run(ex, place(1, BUY, 100, 5)))
    (event,) = run(ex, CancelOrder(20, 2, "TATA_INR", order_id=oid))
    assert isinstance(event, CancelRejected) and event.code == RejectCode.NOT_OWNER
    assert ex.accounts.balance(1, "INR") == (RICH - 5_010, 5_010)


def test_ioc_remainder_expires_and_is_released() -> None:
    ex = exchange()
    run(ex, place(2, SELL, 100, 2))
    events = run(ex, place(1, BUY, 101, 5, tif=IOC))
    (expired,) = of(events, OrderExpired)
    assert (expired.remaining, expired.reason) == (3, ExpireReason.IOC_REMAINDER)
    assert ex.accounts.balance(1, "INR") == (RICH - 2_004, 0)


def test_fok_that_cannot_fill_expires_and_is_released() -> None:
    ex = exchange()
    run(ex, place(2, SELL, 100, 2))
    events = run(ex, place(1, BUY, 100, 3, tif=FOK, stp=StpMode.NONE))
    assert of(events, TradeExecuted) == []
    assert of(events, OrderExpired)[0].reason == ExpireReason.FOK_UNFILLABLE
    assert ex.accounts.balance(1, "INR") == (RICH, 0)


def test_post_only_that_would_take_is_rejected_and_released() -> None:
    ex = exchange()
    run(ex, place(2, SELL, 100, 2))
    events = run(ex, place(1, BUY, 100, 1, LIMIT_MAKER))
    assert of(events, OrderRejected)[0].code == RejectCode.WOULD_TAKE
    assert ex.accounts.balance(1, "INR") == (RICH, 0)


def test_duplicate_client_order_id_is_rejected_by_matching_and_released() -> None:
    ex = exchange()
    run(ex, place(1, BUY, 90, 1, client_order_id="dup"))
    events = run(ex, place(1, BUY, 91, 1, client_order_id="dup"))
    assert of(events, OrderRejected)[0].code == RejectCode.DUPLICATE_CLIENT_ORDER_ID
    assert ex.accounts.balance(1, "INR") == (RICH - 901, 901)


def test_self_trade_prevention_expires_the_maker_and_releases_it() -> None:
    ex = exchange()
    run(ex, place(1, SELL, 100, 2))
    events = run(ex, place(1, BUY, 100, 2))
    (expired,) = of(events, OrderExpired)
    assert expired.was_resting and expired.reason == ExpireReason.SELF_TRADE
    assert ex.accounts.balance(1, "TATA") == (RICH, 0)
    assert ex.accounts.balance(1, "INR") == (RICH - 2_004, 2_004)  # the buy rests


def test_self_trade_allowed_with_stp_none_only_costs_fees() -> None:
    ex = exchange()
    run(ex, place(1, SELL, 100, 2))
    run(ex, place(1, BUY, 100, 2, stp=StpMode.NONE))
    assert ex.accounts.balances(1) == {"INR": (RICH - 2 - 4, 0), "TATA": (RICH, 0)}


# ---------------------------------------------------------------------- market orders


def test_market_buy_by_quote_never_spends_more_than_quote_qty() -> None:
    ex = exchange()
    run(ex, place(2, SELL, 100, 2), place(3, SELL, 103, 5), place(2, SELL, 110, 5))
    events = run(ex, market_buy(1, quote_qty=5_000))
    trades = of(events, TradeExecuted)
    spent = sum(TATA.notional(t.price, t.qty) + t.taker_fee for t in trades)
    assert [(t.price, t.qty) for t in trades] == [(100, 2), (103, 2)]  # a third lot at 103 would exceed
    assert spent == 2_004 + 2_064 <= 5_000
    assert ex.accounts.balance(1, "INR") == (RICH - spent, 0)
    assert ex.accounts.balance(1, "TATA") == (RICH + 400, 0)


def test_market_buy_by_quote_with_nothing_to_buy_gives_everything_back() -> None:
    ex = exchange()
    events = run(ex, market_buy(1, quote_qty=5_000))
    assert of(events, OrderExpired)[0].reason == ExpireReason.NO_LIQUIDITY
    assert ex.accounts.balance(1, "INR") == (RICH, 0)


def test_market_buy_by_qty_is_limited_by_the_balance() -> None:
    ex = exchange(users=(2,))
    run(ex, Deposit(1, 1, "INR", 3_500))
    run(ex, place(2, SELL, 100, 2), place(2, SELL, 120, 5))
    events = run(ex, market_buy(1, qty=5))
    trades = of(events, TradeExecuted)
    # 2 lots at 100 cost 2_004; of the 1_496 left, one lot at 120 costs 1_202; a second would not fit.
    assert [(t.price, t.qty) for t in trades] == [(100, 2), (120, 1)]
    assert of(events, OrderExpired)[0].reason == ExpireReason.BUDGET_EXHAUSTED
    assert ex.accounts.balance(1, "INR") == (3_500 - 2_004 - 1_202, 0)
    assert ex.accounts.balance(1, "TATA") == (300, 0)


def test_market_buy_by_qty_keeps_other_orders_reservations() -> None:
    ex = exchange(users=(2,))
    run(ex, Deposit(1, 1, "INR", 10_000))
    run(ex, place(1, BUY, 50, 4))  # holds 2_004
    run(ex, place(2, SELL, 100, 10))
    events = run(ex, market_buy(1, qty=10))
    assert sum(t.qty for t in of(events, TradeExecuted)) == 7  # 7 × 1_002 = 7_014 ≤ 7_996
    assert ex.accounts.balance(1, "INR") == (10_000 - 2_004 - 7_014, 2_004)


def test_market_sell_sells_into_bids() -> None:
    ex = exchange()
    run(ex, place(2, BUY, 100, 2), place(3, BUY, 99, 2))
    events = run(ex, place(1, SELL, 0, 3, MARKET))
    assert [(t.price, t.qty) for t in of(events, TradeExecuted)] == [(100, 2), (99, 1)]
    assert ex.accounts.balance(1, "TATA") == (RICH - 300, 0)
    assert ex.accounts.balance(1, "INR") == (RICH + 2_990 - 4 - 1, 0)


# ---------------------------------------------------------------------- conservation and snapshots


def scenario() -> list[Command]:
    return [
        Deposit(1, 4, "ZOMATO", 1_000),
        Deposit(1, 5, "INR", 50_000),
        place(2, SELL, 100, 5),
        place(3, SELL, 101, 5, client_order_id="c3"),
        place(1, BUY, 99, 4),
        place(1, BUY, 102, 7),
        place(4, SELL, 7, 100, market="ZOMATO_INR"),
        market_buy(5, quote_qty=400, market="ZOMATO_INR"),
        market_buy(5, qty=2),
        Withdraw(30, 2, "INR", 1_000),
        CancelOrder(31, 3, "TATA_INR", client_order_id="c3"),
        place(2, SELL, 99, 10, tif=IOC),
        CancelAll(32, 1, "TATA_INR"),
        Withdraw(33, 4, "INR", 1),
        place(5, BUY, 8, 30, market="ZOMATO_INR"),
    ]


def test_value_is_conserved_through_a_session() -> None:
    ex = exchange()
    events = run(ex, *scenario())
    assert len(of(events, Withdrawn)) == 2  # user 4 withdraws 1 INR of what it sold ZOMATO for
    assert holdings(ex, "INR") == 3 * RICH + 50_000 - 1_000 - 1
    assert holdings(ex, "TATA") == 3 * RICH
    assert holdings(ex, "ZOMATO") == 1_000
    assert ex.accounts.balance(0, "INR")[0] > 0


def test_snapshot_restore_gives_the_same_hash_and_the_same_future() -> None:
    commands = scenario()
    ex = exchange()
    run(ex, *commands[:8])
    copy = Exchange.restore(MARKETS, ex.snapshot())
    assert copy.state_hash() == ex.state_hash()
    assert copy.snapshot() == ex.snapshot()
    copy.check_invariants()
    rest = commands[8:]
    assert [copy.apply(c) for c in rest] == [ex.apply(c) for c in rest]
    assert copy.state_hash() == ex.state_hash()


def test_replay_is_deterministic() -> None:
    a, b = exchange(), exchange()
    events_a, events_b = run(a, *scenario()), run(b, *scenario())
    assert msgspec.msgpack.encode(events_a) == msgspec.msgpack.encode(events_b)
    assert a.state_hash() == b.state_hash()


def test_state_hash_covers_every_engine() -> None:
    a, b = exchange(), exchange()
    assert a.state_hash() == b.state_hash()
    run(b, place(1, BUY, 10, 1, market="ZOMATO_INR"))
    assert a.accounts.state_hash() != b.accounts.state_hash()
    assert a.state_hash() != b.state_hash()


def test_restore_with_a_new_market_starts_it_empty() -> None:
    ex = Exchange([TATA])
    run(ex, Deposit(1, 1, "INR", 10_000), place(1, BUY, 100, 1))
    grown = Exchange.restore(MARKETS, ex.snapshot())
    assert grown.matching("ZOMATO_INR").open_orders() == []
    grown.check_invariants()
    with pytest.raises(ValueError):
        Exchange.restore([ZOMATO], grown.snapshot())


def test_check_invariants_sees_a_book_without_a_reservation() -> None:
    ex = exchange()
    run(ex, place(1, BUY, 100, 1))
    ex.matching("TATA_INR").apply(
        OrderAccepted(1, "TATA_INR", 999, 2, BUY, LIMIT, GTC, 90, 1, 900, "", StpMode.EXPIRE_MAKER)
    )
    with pytest.raises(AssertionError, match="999"):
        ex.check_invariants()
