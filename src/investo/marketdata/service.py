"""Market data: a host listener that turns applied batches into Binance stream messages.

``MarketData.on_applied`` runs inside the engine host, right after a batch is applied
and before the next one, so the matching engines hold exactly the state at the end
of the batch. For each market the batch touched it publishes (only streams somebody
listens to are built; each message is serialised once, see :mod:`.hub`):

* ``<sym>@depth`` and ``<sym>@depth@100ms`` (the same bytes): one ``depthUpdate``
  diff per batch that changed the book, with ``U``/``u`` from the matching engine's
  ``seq`` (see :mod:`.builders`: ``U = previous u + 1``, ranges without book changes
  folded into the next diff, so ``/api/v3/depth``'s ``lastUpdateId`` is consistent);
* ``<sym>@depth5|10|20`` (and their ``@100ms``): the partial book after the batch,
  ``lastUpdateId = seq``, when the book changed;
* ``<sym>@bookTicker`` when the best bid or ask (price or lots) changed;
* ``<sym>@trade`` per trade, ``<sym>@aggTrade`` per run of one taker's fills at one
  price (its id is its first trade id, as in ``/api/v3/aggTrades``);
* ``<sym>@kline_<i>`` for the 8 intervals: the candle once per batch with trades,
  and a candle closed by a later trade with ``x = true``.

A periodic tick (every ``tick_seconds``, an asyncio task) closes candles whose
interval is over and opens empty ones (sent), and publishes ``<sym>@ticker``,
``<sym>@miniTicker`` and ``!miniTicker@arr`` for markets that traded since the last
tick (Binance sends these once a second too).

Replays: batches with ``replayed=True`` (recovery) publish nothing and build no
candle state; :meth:`MarketData.start`, called once the host recovered and the SQL
writer caught up, loads the current candles and the last 24 hours of one-minute
candles from SQL (so a restart continues the current candle) and starts each
market's depth ids at its engine's ``seq``.

Costs per batch: O(events) to route, plus per touched market O(levels changed) for
the diff, O(book levels × log 20) for a subscribed partial book, O(1) per trade and
one formatted candle per interval subscribed. Nothing awaits: publishing only
appends each message's frame to its subscribers' pending writes (:mod:`.hub`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from investo.api import units
from investo.api.formats import price_change, weighted_price
from investo.core.exchange import Exchange
from investo.core.messages import Side, TradeExecuted
from investo.host import Applied
from investo.marketdata.builders import (
    DAY_MS,
    LEVEL_EVENTS,
    Candle,
    DayStats,
    DepthBuilder,
    DepthDiff,
    KlineBuilder,
    RollingDay,
)
from investo.marketdata.hub import Hub
from investo.markets import MarketSpec
from investo.store import queries
from investo.store.models import INTERVALS
from investo.tasks import cancel_and_wait

log = logging.getLogger(__name__)

PARTIAL_LEVELS = (5, 10, 20)
SPEEDS = ("", "@100ms", "@1000ms")
Level = tuple[int, int]


def market_streams(symbol: str) -> list[str]:
    """Every stream name of one market (lowercase symbol), as clients may subscribe to them."""
    s = symbol.lower()
    names = [f"{s}@depth{speed}" for speed in SPEEDS]
    names += [f"{s}@depth{n}{speed}" for n in PARTIAL_LEVELS for speed in SPEEDS]
    names += [f"{s}@trade", f"{s}@aggTrade", f"{s}@bookTicker", f"{s}@ticker", f"{s}@miniTicker"]
    names += [f"{s}@kline_{i}" for i in INTERVALS]
    return names


class _Market:
    """Per-market state: the spec, stream names, depth ids, candles, the rolling day."""

    def __init__(self, spec: MarketSpec, grace_ms: int) -> None:
        self.spec = spec
        s = spec.symbol.lower()
        self.depth_streams = [f"{s}@depth{speed}" for speed in SPEEDS]
        self.partial_streams = {n: [f"{s}@depth{n}{speed}" for speed in SPEEDS] for n in PARTIAL_LEVELS}
        self.trade_stream = f"{s}@trade"
        self.agg_stream = f"{s}@aggTrade"
        self.book_stream = f"{s}@bookTicker"
        self.ticker_stream = f"{s}@ticker"
        self.mini_stream = f"{s}@miniTicker"
        self.kline_streams = {i: f"{s}@kline_{i}" for i in INTERVALS}
        self.depth = DepthBuilder()
        self.klines = KlineBuilder(grace_ms=grace_ms)
        self.day = RollingDay()
        self.top: tuple[Level | None, Level | None] = (None, None)
        self.traded = False  # since the last tick


class MarketData:
    """The market-data host listener; see the module docstring."""

    def __init__(
        self,
        markets: Mapping[str, MarketSpec],
        clock_ms: Callable[[], int],
        *,
        hub: Hub | None = None,
        tick_seconds: float = 1.0,
        grace_ms: int = 500,
    ) -> None:
        self.hub = hub or Hub()
        self.clock_ms = clock_ms
        self.tick_seconds = tick_seconds
        self._markets = {symbol: _Market(spec, grace_ms) for symbol, spec in markets.items()}
        self._exchange: Callable[[], Exchange] | None = None
        self._task: asyncio.Task[None] | None = None
        self.streams: frozenset[str] = frozenset(
            {"!miniTicker@arr"} | {n for spec in markets.values() for n in market_streams(spec.symbol)}
        )

    # ------------------------------------------------------------------ lifecycle

    def attach(self, exchange: Callable[[], Exchange]) -> None:
        """Read books through ``exchange()`` (the host replaces its Exchange on recovery)."""
        self._exchange = exchange

    @property
    def durable_offset(self) -> int | None:
        return None  # nothing durable: everything is rebuilt from the engines and SQL

    async def start(self, db: AsyncEngine | None = None) -> None:
        """After recovery: depth ids from the engines, candles from SQL, then the tick task."""
        assert self._exchange is not None
        exchange = self._exchange()
        now = self.clock_ms()
        for symbol, m in self._markets.items():
            m.depth.reset(exchange.matching(symbol).seq)
            m.top = self._top(exchange, symbol)
            if db is not None:
                await self._seed(db, m, now)
        if self._task is None:
            self._task = asyncio.create_task(self._ticker(), name="market-data-tick")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _seed(self, db: AsyncEngine, m: _Market, now: int) -> None:
        symbol = m.spec.symbol
        for interval, length in INTERVALS.items():
            rows = await queries.klines(db, symbol, interval, limit=1, now_ms=now)
            if rows:
                candle = _candle(rows[-1], length)
                if candle.trades:
                    ids = await queries.trade_id_range(db, symbol, candle.open_time, candle.close_time)
                    if ids is not None:
                        candle.first_id, candle.last_id = ids
                m.klines.seed(interval, candle)
        current = m.klines.current.get("1m")
        minutes = await queries.klines(db, symbol, "1m", now - DAY_MS, now, 1_441, now)
        m.day.extend(
            _candle(r, 60_000) for r in minutes if current is None or r.open_time_ms < current.open_time
        )
        last = await queries.recent_trades(db, symbol, 1)
        if last:
            m.day.last_qty = last[-1].qty_lots

    # ------------------------------------------------------------------ the listener

    def on_applied(self, batch: Sequence[Applied]) -> None:
        if self._exchange is None or batch[-1].replayed:
            return
        markets = self._markets
        touched: dict[str, list[TradeExecuted]] = {}
        # The events of one command are all about one market: look it up when it changes.
        market: str | None = None
        m: _Market | None = None
        trades: list[TradeExecuted] = []
        for applied in batch:
            for ev in applied.events:
                ev_market = getattr(ev, "market", None)
                if ev_market != market:
                    market = ev_market
                    m = markets.get(market) if market is not None else None
                    if m is not None:
                        trades = touched.setdefault(m.spec.symbol, [])
                if m is None:
                    continue
                if type(ev) in LEVEL_EVENTS:
                    m.depth.event(ev)
                    if isinstance(ev, TradeExecuted):
                        trades.append(ev)
        if not touched:
            return
        exchange = self._exchange()
        now = self.clock_ms()
        for symbol, trades in touched.items():
            self._publish_market(exchange, markets[symbol], trades, now)

    def _publish_market(self, exchange: Exchange, m: _Market, trades: list[TradeExecuted], now: int) -> None:
        hub = self.hub
        spec = m.spec
        symbol = spec.symbol
        engine = exchange.matching(symbol)
        book_changed = m.depth.changed
        diff = m.depth.flush(engine)
        if diff is not None:
            self._publish_depth(m, diff, now)
        if book_changed:
            for n, streams in m.partial_streams.items():
                if any(hub.wants(s) for s in streams):
                    bids, asks = engine.depth(n)
                    hub.publish_many(streams, _partial_json(spec, engine.seq, bids, asks))
            top = self._top(exchange, symbol)
            if top != m.top:
                m.top = top
                if hub.wants(m.book_stream):
                    hub.publish(m.book_stream, _book_ticker_json(spec, engine.seq, top))
        if trades:
            self._publish_trades(m, trades, now)

    def _publish_depth(self, m: _Market, diff: DepthDiff, now: int) -> None:
        """One diff on ``<sym>@depth`` and ``@depth@100ms`` (``investo marketdata`` overrides it)."""
        if any(self.hub.wants(s) for s in m.depth_streams):
            self.hub.publish_many(m.depth_streams, depth_diff_json(m.spec, diff, now))

    def depth_position(self, symbol: str) -> int:
        """The ``u`` of ``symbol``'s last diff: its book, read between batches, is the book at this id."""
        return self._markets[symbol].depth.last

    def _publish_trades(self, m: _Market, trades: list[TradeExecuted], now: int) -> None:
        hub, spec = self.hub, m.spec
        unit = spec.core.notional_unit
        want_trade, want_agg = hub.wants(m.trade_stream), hub.wants(m.agg_stream)
        run: list[TradeExecuted] = []
        for ev in trades:
            closed = m.klines.trade(
                ev.ts, ev.price, ev.qty, ev.price * ev.qty * unit, ev.taker_side == Side.BUY, ev.trade_id
            )
            for interval, candle in closed:
                if interval == "1m":
                    m.day.add(candle)
                self._send_kline(m, interval, candle, True, now)
            if want_trade:
                hub.publish(m.trade_stream, trade_json(spec, ev, now))
            if want_agg:
                if run and (run[0].taker_order_id != ev.taker_order_id or run[0].price != ev.price):
                    hub.publish(m.agg_stream, _agg_json(spec, run, now))
                    run = []
                run.append(ev)
        if run:
            hub.publish(m.agg_stream, _agg_json(spec, run, now))
        m.day.last_qty = trades[-1].qty
        m.traded = True
        for interval, candle in m.klines.take_dirty():
            self._send_kline(m, interval, candle, False, now)

    def _send_kline(self, m: _Market, interval: str, candle: Candle, final: bool, now: int) -> None:
        stream = m.kline_streams[interval]
        if self.hub.wants(stream):
            self.hub.publish(stream, _kline_json(m.spec, interval, candle, final, now))

    @staticmethod
    def _top(exchange: Exchange, symbol: str) -> tuple[Level | None, Level | None]:
        """The best bid and ask as (price, lots): O(1) (``depth(1)`` would look at every level)."""
        engine = exchange.matching(symbol)
        bid, ask = engine.best_bid(), engine.best_ask()
        return (
            None if bid is None else (bid, engine.level(Side.BUY, bid)),
            None if ask is None else (ask, engine.level(Side.SELL, ask)),
        )

    # ------------------------------------------------------------------ the tick

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.tick_seconds)
            try:
                self.tick(self.clock_ms())
            except Exception:
                log.exception("market data tick failed")

    def tick(self, now: int) -> None:
        """Roll candles over and publish the tickers of markets that traded (see the module docstring)."""
        hub = self.hub
        minis: list[dict[str, object]] = []
        for m in self._markets.values():
            closed, opened = m.klines.tick(now)
            for interval, candle in closed:
                if interval == "1m":
                    m.day.add(candle)
                self._send_kline(m, interval, candle, True, now)
            for interval, candle in opened:
                self._send_kline(m, interval, candle, False, now)
            if not m.traded:
                continue
            m.traded = False
            want_ticker, want_mini = hub.wants(m.ticker_stream), hub.wants(m.mini_stream)
            want_arr = hub.wants("!miniTicker@arr")
            if not (want_ticker or want_mini or want_arr):
                continue
            stats = m.day.stats(now, m.klines.current.get("1m"))
            if stats is None:
                continue
            mini = _mini_json(m.spec, stats, now)
            if want_mini:
                hub.publish(m.mini_stream, mini)
            if want_arr:
                minis.append(mini)
            if want_ticker and self._exchange is not None:
                top = self._top(self._exchange(), m.spec.symbol)
                hub.publish(m.ticker_stream, _ticker_json(m.spec, stats, top, now))
        if minis:
            hub.publish("!miniTicker@arr", minis)


# ----------------------------------------------------------------------------- JSON shapes


def _candle(row: queries.Kline, length: int) -> Candle:
    return Candle(
        row.open_time_ms, row.open_time_ms + length - 1, row.open, row.high, row.low, row.close,
        row.volume, row.quote_volume, row.trades,
    )  # fmt: skip


def _quote(spec: MarketSpec, amount: int) -> str:
    return units.format_amount(amount, spec.quote_decimals)


def _partial_json(spec: MarketSpec, seq: int, bids: list[Level], asks: list[Level]) -> dict[str, object]:
    fp, fq = spec.format_price, spec.format_qty
    return {
        "lastUpdateId": seq,
        "bids": [[fp(p), fq(q)] for p, q in bids],
        "asks": [[fp(p), fq(q)] for p, q in asks],
    }


def _book_ticker_json(
    spec: MarketSpec, seq: int, top: tuple[Level | None, Level | None]
) -> dict[str, object]:
    bid, ask = top[0] or (0, 0), top[1] or (0, 0)
    fp, fq = spec.format_price, spec.format_qty
    return {"u": seq, "s": spec.symbol, "b": fp(bid[0]), "B": fq(bid[1]), "a": fp(ask[0]), "A": fq(ask[1])}


def depth_diff_json(spec: MarketSpec, diff: DepthDiff, now: int) -> dict[str, object]:
    fp, fq = spec.format_price, spec.format_qty
    return {
        "e": "depthUpdate",
        "E": now,
        "s": spec.symbol,
        "U": diff.first,
        "u": diff.last,
        "b": [[fp(p), fq(q)] for p, q in diff.bids],
        "a": [[fp(p), fq(q)] for p, q in diff.asks],
    }


def trade_json(spec: MarketSpec, ev: TradeExecuted, now: int) -> dict[str, object]:
    return {
        "e": "trade",
        "E": now,
        "s": spec.symbol,
        "t": ev.trade_id,
        "p": spec.format_price(ev.price),
        "q": spec.format_qty(ev.qty),
        "T": ev.ts,
        "m": ev.taker_side == Side.SELL,  # the buyer is the maker
        "M": True,
    }


def _agg_json(spec: MarketSpec, run: list[TradeExecuted], now: int) -> dict[str, object]:
    first, last = run[0], run[-1]
    return {
        "e": "aggTrade",
        "E": now,
        "s": spec.symbol,
        "a": first.trade_id,
        "p": spec.format_price(first.price),
        "q": spec.format_qty(sum(ev.qty for ev in run)),
        "f": first.trade_id,
        "l": last.trade_id,
        "T": first.ts,
        "m": first.taker_side == Side.SELL,
        "M": True,
    }


def _kline_json(spec: MarketSpec, interval: str, c: Candle, final: bool, now: int) -> dict[str, object]:
    fp = spec.format_price
    return {
        "e": "kline",
        "E": now,
        "s": spec.symbol,
        "k": {
            "t": c.open_time,
            "T": c.close_time,
            "s": spec.symbol,
            "i": interval,
            "f": c.first_id,
            "L": c.last_id,
            "o": fp(c.open),
            "c": fp(c.close),
            "h": fp(c.high),
            "l": fp(c.low),
            "v": spec.format_qty(c.volume),
            "n": c.trades,
            "x": final,
            "q": _quote(spec, c.quote_volume),
            "V": spec.format_qty(c.taker_buy_volume),
            "Q": _quote(spec, c.taker_buy_quote),
            "B": "0",
        },
    }


def _mini_json(spec: MarketSpec, s: DayStats, now: int) -> dict[str, object]:
    fp = spec.format_price
    return {
        "e": "24hrMiniTicker",
        "E": now,
        "s": spec.symbol,
        "c": fp(s.last),
        "o": fp(s.open),
        "h": fp(s.high),
        "l": fp(s.low),
        "v": spec.format_qty(s.volume),
        "q": _quote(spec, s.quote_volume),
    }


def _ticker_json(
    spec: MarketSpec, s: DayStats, top: tuple[Level | None, Level | None], now: int
) -> dict[str, object]:
    fp, fq = spec.format_price, spec.format_qty
    bid, ask = top[0] or (0, 0), top[1] or (0, 0)
    change, percent = price_change(spec, s.open, s.last)
    return {
        "e": "24hrTicker",
        "E": now,
        "s": spec.symbol,
        "p": change,
        "P": percent,
        "w": weighted_price(spec, s.quote_volume, s.volume),
        "x": fp(s.prev_close),
        "c": fp(s.last),
        "Q": fq(s.last_qty),
        "b": fp(bid[0]),
        "B": fq(bid[1]),
        "a": fp(ask[0]),
        "A": fq(ask[1]),
        "o": fp(s.open),
        "h": fp(s.high),
        "l": fp(s.low),
        "v": fq(s.volume),
        "q": _quote(spec, s.quote_volume),
        "O": s.open_time,
        "C": s.close_time,
        "F": s.first_id,
        "L": s.last_id,
        "n": s.count,
    }
