"""Pure state behind the market streams: depth diffs, candles, the rolling 24 hours.

Nothing here reads a clock, awaits or formats: integers in (ticks, lots, quote
units, ms), integers out. :mod:`investo.marketdata.service` feeds them the events
of each applied batch and turns their output into Binance JSON.

Depth diffs and update ids
--------------------------
The matching engine numbers its events with ``seq`` (+1 per event, per market);
``/api/v3/depth`` answers ``lastUpdateId = engine.seq``. A :class:`DepthBuilder`
remembers ``last``, the ``u`` of the last diff it produced. After a batch it
produces ``U = last + 1``, ``u = engine.seq`` and the *absolute* lots, read from the
engine after the batch, of every level the batch's events touched (0 for a level
that is gone). The engine's state is then exactly its state at ``u``, so a client
that applies the diffs with ``U <= L + 1 <= u`` onto a snapshot at ``L`` holds the
engine's book at every ``u``.

A batch whose events change no level (a rejection, an IOC that finds nothing)
still advances ``engine.seq``: its range is **folded into the next diff** (``last``
is not advanced), so consecutive diffs always satisfy ``U = previous u + 1`` and no
empty diff is ever sent. A snapshot taken inside a folded range is still followed
by a diff with ``U <= L + 1 <= u``.

Levels touched: ``OrderRested`` (its side and price), ``TradeExecuted`` (the
maker's side, opposite the taker, at the trade price), ``OrderCanceled`` and a
resting ``OrderExpired``.

Candles
-------
One :class:`Candle` per interval, built from trades at match time; a trade in a
later interval closes the current candle (returned once, to be sent with
``x = true``) and opens the next with the trade's price. :meth:`KlineBuilder.tick`
closes candles whose interval has passed (``now > close time + grace``) and opens
an empty one at ``now``'s interval with the previous close (open = high = low =
close, no volume), as ``/api/v3/klines`` fills gaps. The grace lets a command
stamped just before the boundary, still being committed, land in its own candle;
a trade older than the current candle (later than the grace) is counted in the
current candle (the stream only; SQL keeps it in its own interval).

Every interval is a whole number of minutes, so a trade is added once, to the
run of its minute's trades, which is folded into the 8 candles when a trade of
another minute comes or before the candles are read (the service reads them once
per batch with trades): the same candles as adding each trade to each interval.

Costs: per trade O(1), plus O(intervals) = 8 per fold (at most one per batch and
minute); per batch O(levels touched) for depth; tick
O(markets × intervals); the rolling day keeps at most 1,440 one-minute candles
per market and is summed O(1,440) at most once per tick per traded market.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from investo.core.matching import MatchingEngine
from investo.core.messages import (
    Event,
    OrderCanceled,
    OrderExpired,
    OrderRested,
    Side,
    TradeExecuted,
)
from investo.store.models import INTERVALS  # the candle intervals, one definition for all

DAY_MS: Final = 86_400_000
MINUTE_MS: Final = 60_000
BUY, SELL = Side.BUY, Side.SELL


# ----------------------------------------------------------------------------- depth


@dataclass(frozen=True, slots=True)
class DepthDiff:
    """One diff: update ids ``first``..``last`` and absolute (price, lots) of changed levels.

    Bids best (highest) first, asks best (lowest) first; lots 0 means the level is gone.
    """

    first: int
    last: int
    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]


LEVEL_EVENTS: Final = frozenset({TradeExecuted, OrderRested, OrderCanceled, OrderExpired})
"""The kinds of event that may change a level; :meth:`DepthBuilder.event` ignores the others."""


class DepthBuilder:
    """Changed levels of one market between diffs; see the module docstring."""

    __slots__ = ("_asks", "_bids", "last")

    def __init__(self, last: int = 0) -> None:
        self.last = last  # u of the last diff (or the engine's seq when we started)
        self._bids: set[int] = set()
        self._asks: set[int] = set()

    def reset(self, seq: int) -> None:
        """Start (again) at the engine's ``seq``: the next diff begins at ``seq + 1``."""
        self.last = seq
        self._bids.clear()
        self._asks.clear()

    def touch(self, side: Side, price: int) -> None:
        (self._bids if side == BUY else self._asks).add(price)

    def event(self, ev: Event) -> None:
        """Note the level an event changes, if any (only the kinds in ``LEVEL_EVENTS`` may)."""
        if isinstance(ev, TradeExecuted):
            (self._asks if ev.taker_side == BUY else self._bids).add(ev.price)
        elif isinstance(ev, OrderRested | OrderCanceled) or (isinstance(ev, OrderExpired) and ev.was_resting):
            (self._bids if ev.side == BUY else self._asks).add(ev.price)

    @property
    def changed(self) -> bool:
        return bool(self._bids or self._asks)

    def flush(self, engine: MatchingEngine) -> DepthDiff | None:
        """The diff up to ``engine.seq``, or None (range folded into the next) if no level changed."""
        seq = engine.seq
        if seq <= self.last or not (self._bids or self._asks):
            return None
        level = engine.level
        bids = [(p, level(BUY, p)) for p in sorted(self._bids, reverse=True)]
        asks = [(p, level(SELL, p)) for p in sorted(self._asks)]
        diff = DepthDiff(self.last + 1, seq, bids, asks)
        self.last = seq
        self._bids.clear()
        self._asks.clear()
        return diff


# ----------------------------------------------------------------------------- candles


@dataclass(slots=True)
class Candle:
    """One candle in integers: prices in ticks, volumes in lots, quote volumes in quote units.

    ``first_id``/``last_id`` are -1 when unknown (no trade, or seeded without ids).
    ``taker_buy_*`` count only trades seen live (SQL does not keep them).
    """

    open_time: int
    close_time: int
    open: int
    high: int
    low: int
    close: int
    volume: int = 0
    quote_volume: int = 0
    trades: int = 0
    taker_buy_volume: int = 0
    taker_buy_quote: int = 0
    first_id: int = -1
    last_id: int = -1

    @classmethod
    def empty(cls, open_time: int, length: int, price: int) -> Candle:
        return cls(open_time, open_time + length - 1, price, price, price, price)

    def add(self, price: int, qty: int, quote: int, taker_buy: bool, trade_id: int) -> None:
        if self.trades == 0 and self.volume == 0:  # an empty (filled) candle: its first trade opens it
            self.open = self.high = self.low = price
        if price > self.high:
            self.high = price
        if price < self.low:
            self.low = price
        self.close = price
        self.volume += qty
        self.quote_volume += quote
        self.trades += 1
        if taker_buy:
            self.taker_buy_volume += qty
            self.taker_buy_quote += quote
        if self.first_id < 0:
            self.first_id = trade_id
        self.last_id = trade_id

    def merge(self, later: Candle) -> None:
        """Count ``later``'s trades, all made after this candle's: as ``add`` of each of them."""
        if self.trades == 0 and self.volume == 0:  # an empty (filled) candle: its first trade opens it
            self.open = self.high = self.low = later.open
        if later.high > self.high:
            self.high = later.high
        if later.low < self.low:
            self.low = later.low
        self.close = later.close
        self.volume += later.volume
        self.quote_volume += later.quote_volume
        self.trades += later.trades
        self.taker_buy_volume += later.taker_buy_volume
        self.taker_buy_quote += later.taker_buy_quote
        if self.first_id < 0:
            self.first_id = later.first_id
        self.last_id = later.last_id


class KlineBuilder:
    """The current candle of every interval of one market; see the module docstring.

    Every interval is a whole number of minutes, aligned on the epoch, so the trades
    of one minute fall in the same candle of every interval. A trade is therefore
    added once, to ``_run``: the candle of the trades not yet counted in the
    intervals' candles, all of one minute. The run is folded into all 8 candles
    when a trade of another minute arrives and before anything reads them
    (``current``, ``take_dirty``, ``tick``, ``seed``): 1 candle update per trade
    plus 8 per fold instead of 8 per trade, with the same candles as adding each
    trade to each interval.
    """

    __slots__ = ("_current", "_run", "dirty", "grace_ms")

    def __init__(self, grace_ms: int = 500) -> None:
        self.grace_ms = grace_ms
        self._current: dict[str, Candle] = {}
        self._run: Candle | None = None  # trades of one minute not yet in _current's candles
        self.dirty: set[str] = set()  # intervals whose candle trades changed since take_dirty

    @property
    def current(self) -> dict[str, Candle]:
        """The current candle of each interval, every trade so far counted."""
        self._fold()
        return self._current

    def seed(self, interval: str, candle: Candle) -> None:
        self._fold()
        self._current[interval] = candle

    def trade(
        self, ts: int, price: int, qty: int, quote: int, taker_buy: bool, trade_id: int
    ) -> list[tuple[str, Candle]]:
        """Count one trade; return the candles it closed, (interval, candle), to send with x=true."""
        minute = ts - ts % MINUTE_MS
        run = self._run
        if run is not None and run.open_time == minute:  # most trades: the same minute as the last
            run.add(price, qty, quote, taker_buy, trade_id)
            return []
        self._fold()
        closed: list[tuple[str, Candle]] = []
        current = self._current
        for interval, length in INTERVALS.items():
            candle = current.get(interval)
            open_time = ts - ts % length
            if candle is None or open_time > candle.open_time:
                if candle is not None:
                    closed.append((interval, candle))
                current[interval] = Candle.empty(open_time, length, price)
        run = self._run = Candle.empty(minute, MINUTE_MS, price)
        run.add(price, qty, quote, taker_buy, trade_id)
        return closed

    def _fold(self) -> None:
        """Count the run's trades in every interval's candle (each opened by trade() already)."""
        run = self._run
        if run is None:
            return
        self._run = None
        for candle in self._current.values():
            candle.merge(run)
        self.dirty.update(INTERVALS)

    def tick(self, now: int) -> tuple[list[tuple[str, Candle]], list[tuple[str, Candle]]]:
        """Close candles whose interval is over; return (closed, opened empty)."""
        self._fold()
        closed: list[tuple[str, Candle]] = []
        opened: list[tuple[str, Candle]] = []
        for interval, candle in list(self._current.items()):
            if now > candle.close_time + self.grace_ms:
                length = INTERVALS[interval]
                fresh = Candle.empty(now - now % length, length, candle.close)
                self._current[interval] = fresh
                self.dirty.discard(interval)
                closed.append((interval, candle))
                opened.append((interval, fresh))
        return closed, opened

    def take_dirty(self) -> list[tuple[str, Candle]]:
        """Candles changed by trades since the last call (each sent once per batch)."""
        self._fold()
        out = [(i, self._current[i]) for i in self.dirty if i in self._current]
        self.dirty.clear()
        return out


# ----------------------------------------------------------------------------- 24 hours


@dataclass(frozen=True, slots=True)
class DayStats:
    """Statistics of the last 24 hours, from whole one-minute candles plus the current one."""

    open_time: int
    close_time: int
    open: int
    high: int
    low: int
    last: int
    last_qty: int
    prev_close: int
    volume: int
    quote_volume: int
    count: int
    first_id: int
    last_id: int


@dataclass(slots=True)
class RollingDay:
    """Closed one-minute candles of the last 24 hours of one market (at most 1,440).

    The window is minute-aligned (the REST ticker is exact to the millisecond; the
    stream's may differ by the part of a minute at the window's start).
    """

    minutes: deque[Candle] = field(default_factory=deque)
    prev_close: int = 0  # close of the last candle that left the window
    last_qty: int = 0

    def add(self, candle: Candle) -> None:
        self.minutes.append(candle)

    def extend(self, candles: Iterable[Candle]) -> None:
        self.minutes.extend(candles)

    def stats(self, now: int, current: Candle | None) -> DayStats | None:
        start = now - DAY_MS
        minutes = self.minutes
        while minutes and minutes[0].open_time < start:
            self.prev_close = minutes.popleft().close
        window = [c for c in minutes if c.trades or c.volume]
        if current is not None and current.open_time >= start and (current.trades or current.volume):
            window.append(current)  # the current minute: never among the closed ones
        if not window:
            return None
        firsts = [c.first_id for c in window if c.first_id >= 0]
        lasts = [c.last_id for c in window if c.last_id >= 0]
        return DayStats(
            open_time=start,
            close_time=now,
            open=window[0].open,
            high=max(c.high for c in window),
            low=min(c.low for c in window),
            last=window[-1].close,
            last_qty=self.last_qty,
            prev_close=self.prev_close,
            volume=sum(c.volume for c in window),
            quote_volume=sum(c.quote_volume for c in window),
            count=sum(c.trades for c in window),
            first_id=min(firsts) if firsts else -1,
            last_id=max(lasts) if lasts else -1,
        )
