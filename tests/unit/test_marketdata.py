"""Market data builders on events of a real Exchange: depth diffs, candles, hub, control messages."""

from __future__ import annotations

import random
from dataclasses import replace

import orjson

from investo.core.exchange import Exchange
from investo.core.markets import Market
from investo.core.messages import (
    CancelOrder,
    Command,
    Deposit,
    Event,
    OrderRested,
    OrderType,
    PlaceOrder,
    Side,
    StpMode,
    TimeInForce,
)
from investo.marketdata.builders import Candle, DepthBuilder, KlineBuilder
from investo.marketdata.hub import Hub
from investo.store.models import INTERVALS

MARKET = Market("TATAINR", "TATA", "INR", notional_unit=5, lot_units=1, maker_fee_bps=10, taker_fee_bps=20)


def order(user: int, side: Side, price: int, qty: int, tif: TimeInForce = TimeInForce.GTC) -> PlaceOrder:
    return PlaceOrder(0, user, "TATAINR", side, OrderType.LIMIT, tif, price, qty, 0, "", StpMode.NONE)


def funded() -> Exchange:
    exchange = Exchange([MARKET])
    for user in (1, 2, 3):
        exchange.apply(Deposit(0, user, "INR", 10**12))
        exchange.apply(Deposit(0, user, "TATA", 10**9))
    return exchange


class LocalBook:
    """A client's book: a snapshot plus diffs, as Binance documents."""

    def __init__(self, exchange: Exchange) -> None:
        engine = exchange.matching("TATAINR")
        bids, asks = engine.depth()
        self.last = engine.seq
        self.sides = (dict(bids), dict(asks))

    def apply(self, first: int, last: int, bids: list[tuple[int, int]], asks: list[tuple[int, int]]) -> None:
        assert first == self.last + 1, (first, self.last)
        for side, levels in zip(self.sides, (bids, asks), strict=True):
            for price, qty in levels:
                if qty:
                    side[price] = qty
                else:
                    side.pop(price, None)
        self.last = last

    def depth(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        bids, asks = self.sides
        return sorted(bids.items(), reverse=True), sorted(asks.items())


def random_flow(rng: random.Random, n: int) -> list[Command]:
    commands: list[Command] = []
    for _ in range(n):
        roll = rng.random()
        user = rng.randint(1, 3)
        if roll < 0.15:
            commands.append(CancelOrder(0, user, "TATAINR", order_id=rng.randint(1, 400)))
        else:
            side = Side(rng.randint(0, 1))
            tif = TimeInForce.IOC if roll < 0.25 else TimeInForce.GTC
            commands.append(order(user, side, rng.randint(95, 105), rng.randint(1, 20), tif))
    return commands


def test_diffs_rebuild_the_engines_book_with_contiguous_ids() -> None:
    rng = random.Random(7)
    exchange = funded()
    engine = exchange.matching("TATAINR")
    builder = DepthBuilder(engine.seq)
    book = LocalBook(exchange)
    commands = random_flow(rng, 1_500)
    i = diffs = 0
    while i < len(commands):
        size = rng.randint(1, 8)  # one host batch
        events: list[Event] = []
        for command in commands[i : i + size]:
            events += exchange.apply(command)
        i += size
        for ev in events:
            builder.event(ev)
        diff = builder.flush(engine)
        if diff is None:
            assert book.depth() == engine.depth()  # nothing changed on the book
            continue
        diffs += 1
        assert diff.last == engine.seq
        book.apply(diff.first, diff.last, diff.bids, diff.asks)
        assert book.depth() == engine.depth()
        assert [p for p, _ in diff.bids] == sorted((p for p, _ in diff.bids), reverse=True)
        assert [p for p, _ in diff.asks] == sorted(p for p, _ in diff.asks)
    assert diffs > 100


def test_a_batch_without_book_changes_is_folded_into_the_next_diff() -> None:
    exchange = funded()
    engine = exchange.matching("TATAINR")
    builder = DepthBuilder(engine.seq)
    start = engine.seq
    # an IOC against an empty book: expires, advances seq, changes no level
    for ev in exchange.apply(order(1, Side.BUY, 100, 5, TimeInForce.IOC)):
        builder.event(ev)
    assert engine.seq == start + 1
    assert builder.flush(engine) is None
    snapshot_id = engine.seq  # a REST snapshot taken now
    events = exchange.apply(order(1, Side.BUY, 100, 5))
    assert any(isinstance(ev, OrderRested) for ev in events)
    for ev in events:
        builder.event(ev)
    diff = builder.flush(engine)
    assert diff is not None
    assert diff.first == start + 1  # the folded range is included
    assert diff.first <= snapshot_id + 1 <= diff.last
    assert diff.bids == [(100, 5)] and diff.asks == []


def test_a_fill_and_a_cancel_report_absolute_and_zero_quantities() -> None:
    exchange = funded()
    engine = exchange.matching("TATAINR")
    exchange.apply(order(1, Side.SELL, 101, 10))
    resting = exchange.apply(order(1, Side.SELL, 102, 3))
    builder = DepthBuilder(engine.seq)
    events = exchange.apply(order(2, Side.BUY, 101, 4))  # takes 4 of 10 at 101
    rested = next(ev for ev in resting if isinstance(ev, OrderRested))
    events += exchange.apply(CancelOrder(0, 1, "TATAINR", order_id=rested.order_id))
    for ev in events:
        builder.event(ev)
    diff = builder.flush(engine)
    assert diff is not None
    assert diff.asks == [(101, 6), (102, 0)]
    assert diff.bids == []


def test_klines_roll_over_on_trades_and_on_the_tick() -> None:
    k = KlineBuilder(grace_ms=500)
    assert k.trade(60_000 + 10, 100, 2, 1_000, True, 1) == []
    k.trade(60_000 + 20, 105, 1, 525, False, 2)
    k.trade(60_000 + 30, 99, 3, 1_485, True, 3)
    minute = k.current["1m"]
    assert (minute.open, minute.high, minute.low, minute.close) == (100, 105, 99, 99)
    assert (minute.volume, minute.trades, minute.first_id, minute.last_id) == (6, 3, 1, 3)
    assert (minute.taker_buy_volume, minute.taker_buy_quote, minute.quote_volume) == (5, 2_485, 3_010)
    assert sorted(i for i, _ in k.take_dirty()) == sorted(["1m", "3m", "5m", "15m", "30m", "1h", "4h", "1d"])
    closed = k.trade(120_000 + 5, 101, 1, 505, True, 4)  # a new minute (and 1m only: 3m is 0..179999)
    assert [(i, c.open_time, c.close) for i, c in closed] == [("1m", 60_000, 99)]
    assert k.current["1m"].open == 101 and k.current["3m"].trades == 4
    # the tick: nothing before the grace, then the candle closes and an empty one opens
    assert k.tick(180_000 + 400) == ([], [])
    closed, opened = k.tick(180_000 + 600)
    assert [(i, c.open_time) for i, c in closed] == [("1m", 120_000), ("3m", 0)]
    assert [(i, c.open_time, c.open, c.close, c.trades) for i, c in opened] == [
        ("1m", 180_000, 101, 101, 0),
        ("3m", 180_000, 101, 101, 0),
    ]
    k.trade(180_000 + 700, 110, 1, 550, False, 5)  # the first trade opens the filled candle
    assert (k.current["1m"].open, k.current["1m"].low, k.current["1m"].first_id) == (110, 110, 5)


class PerTradeKlines:
    """The reference: every trade added to every interval's candle at once (KlineBuilder folds lazily)."""

    def __init__(self, grace_ms: int) -> None:
        self.grace_ms = grace_ms
        self.current: dict[str, Candle] = {}
        self.dirty: set[str] = set()

    def trade(
        self, ts: int, price: int, qty: int, quote: int, buy: bool, trade_id: int
    ) -> list[tuple[str, Candle]]:
        closed = []
        for interval, length in INTERVALS.items():
            candle = self.current.get(interval)
            open_time = ts - ts % length
            if candle is None or open_time > candle.open_time:
                if candle is not None:
                    closed.append((interval, replace(candle)))
                candle = self.current[interval] = Candle.empty(open_time, length, price)
            candle.add(price, qty, quote, buy, trade_id)
        self.dirty.update(INTERVALS)
        return closed

    def tick(self, now: int) -> tuple[list[tuple[str, Candle]], list[tuple[str, Candle]]]:
        closed, opened = [], []
        for interval, candle in list(self.current.items()):
            if now > candle.close_time + self.grace_ms:
                length = INTERVALS[interval]
                fresh = self.current[interval] = Candle.empty(now - now % length, length, candle.close)
                self.dirty.discard(interval)
                closed.append((interval, replace(candle)))
                opened.append((interval, replace(fresh)))
        return closed, opened

    def take_dirty(self) -> list[tuple[str, Candle]]:
        out = sorted((i, replace(self.current[i])) for i in self.dirty)
        self.dirty.clear()
        return out


def copies(candles: list[tuple[str, Candle]]) -> list[tuple[str, Candle]]:
    return [(interval, replace(candle)) for interval, candle in candles]


def test_klines_fold_trades_as_adding_each_to_every_interval() -> None:
    rng = random.Random(3)
    lazy, reference = KlineBuilder(grace_ms=500), PerTradeKlines(grace_ms=500)
    ts = 1_767_225_600_000 - 5_000
    for trade_id in range(1, 20_000):
        ts += rng.choice((0, 0, 1, 7, 900, 30_000, 200_000)) - (700 if rng.random() < 0.02 else 0)
        price, qty, buy = rng.randint(90, 110), rng.randint(1, 9), rng.random() < 0.5
        args = (ts, price, qty, price * qty * 5, buy, trade_id)
        assert copies(lazy.trade(*args)) == reference.trade(*args)
        r = rng.random()
        if r < 0.05:
            assert sorted(copies(lazy.take_dirty())) == reference.take_dirty()
        elif r < 0.07:
            now = ts + rng.randint(0, 120_000)
            closed, opened = lazy.tick(now)
            assert (copies(closed), copies(opened)) == reference.tick(now)
        elif r < 0.08:
            assert lazy.current == reference.current
    assert lazy.current == reference.current


def test_kline_from_exchange_trades() -> None:
    exchange = funded()
    k = KlineBuilder()
    exchange.apply(order(1, Side.SELL, 100, 5))
    exchange.apply(order(1, Side.SELL, 101, 5))
    events = exchange.apply(
        PlaceOrder(
            1_000, 2, "TATAINR", Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 101, 7, 0, "", StpMode.NONE
        )
    )
    for ev in events:
        if type(ev).__name__ == "TradeExecuted":
            k.trade(ev.ts, ev.price, ev.qty, ev.price * ev.qty * 5, ev.taker_side == Side.BUY, ev.trade_id)  # type: ignore[union-attr]
    c: Candle = k.current["1m"]
    assert (c.open, c.high, c.low, c.close, c.volume, c.trades) == (100, 101, 100, 101, 7, 2)
    assert (c.first_id, c.last_id) == (1, 2)


class Sink:
    """A subscriber that keeps the frames it is pushed, and the payloads."""

    def __init__(self, combined: bool) -> None:
        self.combined = combined
        self.got: list[bytes] = []
        self.payloads: list[bytes] = []

    def push(self, frame: bytes, payload: bytes) -> None:
        self.got.append(frame)
        self.payloads.append(payload)

    def messages(self) -> list[object]:
        return [orjson.loads(frame[2:]) for frame in self.got]  # short frames: a 2-byte header


def test_hub_serialises_and_frames_once_and_wraps_for_combined_subscribers() -> None:
    hub = Hub()
    raw, other_raw, combined, other = Sink(False), Sink(False), Sink(True), Sink(True)
    for sink in (raw, other_raw, combined, other):
        hub.subscribe("a@trade", sink)
    assert not hub.wants("b@trade")
    hub.publish("a@trade", {"x": 1})
    assert raw.got[0] == b"\x81\x07" + b'{"x":1}'  # an unmasked final text frame
    assert raw.messages() == [{"x": 1}] and raw.payloads == [b'{"x":1}']
    assert raw.got[0] is other_raw.got[0]  # one frame object for every raw subscriber
    assert combined.messages() == [{"stream": "a@trade", "data": {"x": 1}}]
    assert combined.payloads == [b'{"x":1}']  # the unwrapped payload, for re-wrapping subscribers
    assert combined.got[0] is other.got[0]  # one wrapped frame for every combined subscriber
    hub.unsubscribe("a@trade", raw)
    hub.publish_many(["a@trade", "b@trade"], [1])
    assert len(raw.got) == 1 and len(combined.got) == 2
    hub.publish_json("a@trade", b'{"y":2}')  # already serialised elsewhere (a gateway fed from outside)
    assert other_raw.messages()[-1] == {"y": 2}
    assert combined.messages()[-1] == {"stream": "a@trade", "data": {"y": 2}}
    assert hub.published == 3
