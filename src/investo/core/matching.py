"""The matching engine of one market: a pure, deterministic state machine.

Input records: ``OrderAccepted`` (funds already reserved), ``CancelOrder``,
``CancelAll``. Output: the list of events each record causes, numbered by
``seq`` (per market, +1 per event, never reused). ``apply`` takes one record;
``apply_batch`` takes many and returns the events of all of them in one list,
exactly those ``apply`` would give record by record, without a call and a list
per record.

Ordering invariant
------------------
* Price-time priority: a taker meets the best price first and, within a price,
  the oldest order first. Every fill is at the maker's price.
* The book is never crossed between records: the best bid is below the best ask.
* Only GTC limit and LIMIT_MAKER orders rest. What an IOC, FOK or market order
  cannot fill at once expires; a FOK either fills completely or not at all.
* A LIMIT_MAKER order that would take is rejected (``WOULD_TAKE``).
* A ``(user, client_order_id)`` names at most one open order; a second
  ``OrderAccepted`` with the same pair is rejected, never executed.
* Order ids are never reused (the accounts engine assigns each once); an
  ``OrderAccepted`` whose id is open is rejected. A cancelled order's id may still
  sit in its level's deque (lazy cancel), so a reused id would inherit its stale place:
  the engine relies on the accounts engine here rather than checking.
* Only the owner cancels; cancelling an order that is not open is rejected.
* Self-trade prevention follows the taker's mode (Binance's EXPIRE_TAKER,
  EXPIRE_MAKER, EXPIRE_BOTH, NONE).

Events per record
-----------------
Each trade emits ``TradeExecuted`` followed by the maker's and then the taker's
``OrderPartiallyFilled`` or ``OrderFilled``. After matching, an order that
still has lots emits exactly one of ``OrderRested``, ``OrderExpired``. A record
that changes nothing emits one ``OrderRejected`` or ``CancelRejected``.

Complexity
----------
* place: O(log n) per price level touched, plus O(1) per fill
* cancel one: O(1) (lazy; see :mod:`investo.core.book`)
* cancel all of a user's orders: O(open orders in the market)
* FOK pre-check: O(levels crossed), or O(orders crossed) when the taker has
  orders of its own on the book and self-trade prevention is on
* snapshot / state hash: O(n log n)
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable
from typing import Any

import msgspec

from investo.core.book import BookSide
from investo.core.markets import Market, affordable_qty
from investo.core.messages import (
    CancelAll,
    CancelOrder,
    CancelReason,
    CancelRejected,
    ExpireReason,
    MatchingEvent,
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

# Enum members bound to module names: the hot path compares against these. A record's enum
# fields are members (msgspec decodes them so, and the types allow nothing else), so the order
# path tests them by identity: ``is`` is one pointer test, where ``==`` on an IntEnum takes the
# interpreter's generic comparison (no int fast path for int subclasses).
BUY = Side.BUY
SELL = Side.SELL
MARKET = OrderType.MARKET
LIMIT_MAKER = OrderType.LIMIT_MAKER
GTC = TimeInForce.GTC
FOK = TimeInForce.FOK
EXPIRE_TAKER = StpMode.EXPIRE_TAKER
EXPIRE_BOTH = StpMode.EXPIRE_BOTH
UNKNOWN_ORDER = RejectCode.UNKNOWN_ORDER
BY_USER = CancelReason.USER
COMPACT_SLACK = 1024  # dead queued ids tolerated beyond twice the open orders
UNBOUNDED = 1 << 62  # a limit key that every level crosses; lots "as many as affordable"


class Resting(msgspec.Struct, gc=False):
    """What the engine keeps of an open order, under its id; ``qty`` shrinks in place with each fill.

    ``key`` is the order's level key on its own side (see investo.core.book): minus
    the price for a bid, the price for an ask, so it gives both the side (a bid's
    key is negative) and the price. Plain ints and a str only, so the struct is
    never tracked by the garbage collector (``gc=False``; no reference cycle can
    pass through it): a resting order costs the collector nothing.
    """

    qty: int
    user: int
    key: int
    client_order_id: str


def side_of(key: int) -> Side:
    """The side of an order resting under ``key``."""
    return SELL if key > 0 else BUY


class OpenOrder(msgspec.Struct, frozen=True):
    """A read-only view of an open order, for queries (not used while matching)."""

    order_id: int
    user: int
    side: Side
    price: int
    qty: int
    client_order_id: str


class MatchingEngine:
    """Order book and matching rules of one market. See the module docstring."""

    def __init__(self, market: Market) -> None:
        self.market = market
        self._symbol = market.symbol
        self.seq = 0
        self.last_trade_id = 0
        self._bids = BookSide(-1)
        self._asks = BookSide(1)
        self._sides = (self._bids, self._asks)  # indexed by Side
        self._books = ((self._bids, self._asks), (self._asks, self._bids))  # Side -> (own, opposite)
        self._orders: dict[int, Resting] = {}  # open order id -> its entry
        self._by_client: dict[str, int] = {}  # "user:client_order_id" -> open order id
        self._dead = 0  # lazily cancelled ids still sitting in queues (an upper bound)
        self._compact_at = COMPACT_SLACK  # compact the queues when _dead exceeds this

    # ------------------------------------------------------------------ records

    def apply(self, record: MatchingRecord) -> list[MatchingEvent]:
        """Apply one record; return the events it caused, in order."""
        events: list[MatchingEvent] = []
        if type(record) is OrderAccepted:
            self._place(record, events)
        elif type(record) is CancelOrder:
            self._cancel(record, events)
        elif type(record) is CancelAll:
            self._cancel_all(record, events)
        else:
            raise TypeError(f"not a matching record: {type(record).__name__}")
        return events

    def apply_batch(self, records: Iterable[MatchingRecord]) -> list[MatchingEvent]:
        """Apply records in order; return the events of all of them, in order, in one list.

        The same events, numbered the same, as ``apply`` on each record in turn,
        without a call and a list per record. A record that is not a matching
        record raises ``TypeError`` with the records before it applied and their
        events lost: pass matching records only.
        """
        events: list[MatchingEvent] = []
        place, cancel = self._place, self._cancel
        for record in records:
            if type(record) is OrderAccepted:
                place(record, events)
            elif type(record) is CancelOrder:
                cancel(record, events)
            elif type(record) is CancelAll:
                self._cancel_all(record, events)
            else:
                raise TypeError(f"not a matching record: {type(record).__name__}")
        return events

    def place(self, rec: OrderAccepted) -> list[MatchingEvent]:
        """What ``apply`` does with an ``OrderAccepted``."""
        events: list[MatchingEvent] = []
        self._place(rec, events)
        return events

    def _place(self, rec: OrderAccepted, events: list[MatchingEvent]) -> None:
        """Match an accepted order, then rest, expire or finish it, appending its events.

        The common case, a GTC limit order that rests without crossing, is one
        straight path: three dict operations (the open-id check, its level, its
        entry), a deque append and one event.
        """
        order_id = rec.order_id
        if rec.client_order_id or rec.market != self._symbol or order_id in self._orders:
            code = self._refusal(rec)
            if code is not None:
                return self._reject(rec, code, events)
        if rec.type is MARKET:
            return self._place_market(rec, events)
        qty = rec.qty
        if qty <= 0:
            return self._reject(rec, RejectCode.INVALID_QUANTITY, events)
        own, opposite = self._books[rec.side]
        key = own.sign * rec.price  # the order's key on its own side; -key on the opposite side
        heap = opposite.heap
        if heap and heap[0] <= -key:  # the order would take
            if rec.type is LIMIT_MAKER:
                return self._reject(rec, RejectCode.WOULD_TAKE, events)
            if rec.tif is FOK and not self._fok_fillable(rec, opposite, -key, qty):
                return self._expire_taker(rec, qty, ExpireReason.FOK_UNFILLABLE, events)
            qty, stopped = self._take(rec, opposite, -key, qty, 0, events)
            if qty == 0:
                return None
            if stopped is not None:
                return self._expire_taker(rec, qty, stopped, events)
        if rec.tif is not GTC:
            reason = ExpireReason.FOK_UNFILLABLE if rec.tif is FOK else ExpireReason.IOC_REMAINDER
            return self._expire_taker(rec, qty, reason, events)
        # Rest what is left at the back of its level.
        level = own.levels.get(key)
        if level is None:
            own.open_level(key, order_id, qty)
        else:
            level.append(order_id)
            level.lots += qty
        self._orders[order_id] = Resting(qty, rec.user, key, rec.client_order_id)
        if rec.client_order_id:
            self._by_client[f"{rec.user}:{rec.client_order_id}"] = order_id
        self.seq = seq = self.seq + 1
        events.append(OrderRested(seq, rec.ts, self._symbol, order_id, rec.user, rec.side, rec.price, qty))
        return None

    def _place_market(self, rec: OrderAccepted, events: list[MatchingEvent]) -> None:
        """A market order: take what the book offers, up to its lots or budget; the rest expires."""
        qty = rec.qty
        if qty <= 0:  # only a market buy by quote amount may come without lots
            if rec.side != BUY or rec.quote_limit <= 0:
                return self._reject(rec, RejectCode.INVALID_ORDER, events)  # neither lots nor a budget
            qty = UNBOUNDED
        opposite = self._books[rec.side][1]
        budget = rec.quote_limit if rec.side == BUY else 0
        stopped = None
        if opposite.heap:
            qty, stopped = self._take(rec, opposite, UNBOUNDED, qty, budget, events)
            if qty == 0:
                return None
        return self._expire_taker(rec, qty, stopped or ExpireReason.NO_LIQUIDITY, events)

    def _refusal(self, rec: OrderAccepted) -> RejectCode | None:
        """Why an order with a client order id, or an unusual market or id, is refused, if it is."""
        if rec.market != self._symbol:
            return RejectCode.UNKNOWN_MARKET
        if rec.client_order_id and f"{rec.user}:{rec.client_order_id}" in self._by_client:
            return RejectCode.DUPLICATE_CLIENT_ORDER_ID
        if rec.order_id in self._orders:
            return RejectCode.INVALID_ORDER
        return None

    def _take(
        self, rec: OrderAccepted, side: BookSide, limit_key: int, qty: int, budget: int,
        events: list[MatchingEvent],
    ) -> tuple[int, ExpireReason | None]:  # fmt: skip
        """Match ``qty`` lots against ``side`` (the opposite one) up to ``limit_key``.

        The caller has checked that the best level crosses. ``budget`` > 0 caps
        the quote a market buy spends, fees included; with ``rec.qty == 0`` (buy
        by quote amount) it is the only cap. Returns the lots left and, if
        matching had to stop early, why.
        """
        heap, levels, orders = side.heap, side.levels, self._orders
        market = self.market
        taker, user, ts, stp, taker_side = rec.order_id, rec.user, rec.ts, rec.stp, rec.side
        symbol = self._symbol
        capped = budget > 0  # stays True when the budget is spent down to 0
        stopped: ExpireReason | None = None
        seq = self.seq  # kept in locals while matching, written back below
        trade_id = self.last_trade_id
        while True:
            key = heap[0]
            price = key if key > 0 else -key
            level = levels[key]
            level_qty = level.lots
            while True:
                maker = level[0]
                entry = orders.get(maker)
                if entry is None:  # lazily cancelled
                    level.popleft()
                    continue
                maker_qty, maker_user = entry.qty, entry.user
                if maker_user == user and stp:
                    if stp == EXPIRE_TAKER:
                        stopped = ExpireReason.SELF_TRADE
                        break
                    level.popleft()
                    self.seq = seq
                    self._expire_resting(maker, entry, ts, events)
                    seq = self.seq
                    level_qty -= maker_qty
                    if stp == EXPIRE_BOTH:
                        stopped = ExpireReason.SELF_TRADE
                        break
                    if level_qty == 0:
                        break
                    continue
                fill = qty if qty < maker_qty else maker_qty
                if capped:
                    affordable = affordable_qty(market, price, budget, market.taker_fee_bps)
                    if affordable < fill:
                        fill = affordable
                        if fill == 0:
                            stopped = ExpireReason.BUDGET_EXHAUSTED
                            break
                notional = price * fill * market.notional_unit
                taker_fee = notional * market.taker_fee_bps // 10_000
                trade_id += 1
                events.append(
                    TradeExecuted(
                        seq + 1, ts, symbol, trade_id, price, fill, taker_side,
                        maker, maker_user, taker, user, notional * market.maker_fee_bps // 10_000, taker_fee,
                    )
                )  # fmt: skip
                if fill == maker_qty:
                    level.popleft()
                    del orders[maker]
                    if entry.client_order_id:
                        del self._by_client[f"{maker_user}:{entry.client_order_id}"]
                    events.append(OrderFilled(seq + 2, ts, symbol, maker, maker_user))
                else:
                    entry.qty = maker_qty - fill
                    events.append(
                        OrderPartiallyFilled(seq + 2, ts, symbol, maker, maker_user, maker_qty - fill)
                    )
                if capped:
                    budget -= notional + taker_fee
                    if rec.qty == 0:  # by quote amount: lots left = what the rest of the budget buys here
                        qty = affordable_qty(market, price, budget, market.taker_fee_bps) + fill
                qty -= fill
                if qty:
                    events.append(OrderPartiallyFilled(seq + 3, ts, symbol, taker, user, qty))
                else:
                    events.append(OrderFilled(seq + 3, ts, symbol, taker, user))
                seq += 3
                level_qty -= fill
                if level_qty == 0 or qty == 0:
                    break
            if level_qty:
                level.lots = level_qty
            else:
                side.drop_level(key)
            if qty == 0 or stopped is not None or not heap or heap[0] > limit_key:
                break
        self.seq = seq
        self.last_trade_id = trade_id
        return qty, stopped

    def _expire_resting(self, order_id: int, entry: Resting, ts: int, events: list[MatchingEvent]) -> None:
        """Expire a resting order by self-trade prevention (its level is the caller's)."""
        qty, user, key, client_order_id = entry.qty, entry.user, entry.key, entry.client_order_id
        del self._orders[order_id]
        if client_order_id:
            del self._by_client[f"{user}:{client_order_id}"]
        self.seq += 1
        events.append(
            OrderExpired(
                self.seq, ts, self._symbol, order_id, user, side_of(key), abs(key), qty,
                ExpireReason.SELF_TRADE, True,
            )
        )  # fmt: skip

    # ------------------------------------------------------------------ checks

    def _fok_fillable(self, rec: OrderAccepted, side: BookSide, limit_key: int, qty: int) -> bool:
        """Whether a limit order's ``qty`` lots would all fill at once in ``_take``.

        Without STP a level offers its whole depth. With STP the level's orders are
        walked in time order as ``_take`` would meet them: the taker's own orders are
        skipped (EXPIRE_MAKER) or end the walk (EXPIRE_TAKER, EXPIRE_BOTH).
        """
        for key in side.keys_best_first():
            if key > limit_key:
                return False
            if rec.stp == StpMode.NONE:
                qty -= side.levels[key].lots
                if qty <= 0:
                    return True
                continue
            for order_id in side.orders_at(key, self._orders):
                entry = self._orders[order_id]
                if entry.user != rec.user:
                    qty -= entry.qty
                    if qty <= 0:
                        return True
                elif rec.stp != StpMode.EXPIRE_MAKER:
                    return False  # matching would stop at the taker's own order
        return False

    # ------------------------------------------------------------------ cancels

    def _cancel(self, rec: CancelOrder, events: list[MatchingEvent]) -> None:
        """Take one open order off the book, or say why not."""
        order_id = rec.order_id
        if not order_id and rec.client_order_id:
            order_id = self._by_client.get(f"{rec.user}:{rec.client_order_id}", 0)
        entry = self._orders.get(order_id)
        if entry is None or entry.user != rec.user:
            code = UNKNOWN_ORDER if entry is None else RejectCode.NOT_OWNER
            self.seq = seq = self.seq + 1
            events.append(
                CancelRejected(seq, rec.ts, rec.market, rec.user, rec.order_id, rec.client_order_id, code)
            )
            return
        events.append(self._remove_resting(order_id, entry, rec.ts, BY_USER))

    def _cancel_all(self, rec: CancelAll, events: list[MatchingEvent]) -> None:
        """Cancel every open order of the user in this market, oldest id first."""
        mine = sorted(oid for oid, entry in self._orders.items() if entry.user == rec.user)
        if not mine:
            self.seq += 1
            events.append(CancelRejected(self.seq, rec.ts, rec.market, rec.user, 0, "", UNKNOWN_ORDER))
        for oid in mine:
            events.append(self._remove_resting(oid, self._orders[oid], rec.ts, CancelReason.CANCEL_ALL))

    def _remove_resting(self, order_id: int, entry: Resting, ts: int, reason: CancelReason) -> OrderCanceled:
        """Take an open order off the book (lazily: its id stays queued until skipped)."""
        qty, user, key, client_order_id = entry.qty, entry.user, entry.key, entry.client_order_id
        del self._orders[order_id]
        if client_order_id:
            del self._by_client[f"{user}:{client_order_id}"]
        if key > 0:
            book, side, price = self._asks, SELL, key
        else:
            book, side, price = self._bids, BUY, -key
        level = book.levels[key]
        level.lots -= qty
        if not level.lots:
            book.drop_level(key)
        self._dead += 1
        if self._dead > self._compact_at:
            self._compact()
        self.seq = seq = self.seq + 1
        return OrderCanceled(seq, ts, self._symbol, order_id, user, side, price, qty, reason)

    def _compact(self) -> None:
        """Drop the lazily cancelled ids from every queue; amortised O(1) per cancel."""
        self._bids.compact(self._orders)
        self._asks.compact(self._orders)
        self._dead = 0
        self._compact_at = COMPACT_SLACK + 2 * len(self._orders)

    # ------------------------------------------------------------------ outcomes

    def _reject(self, rec: OrderAccepted, code: RejectCode, events: list[MatchingEvent]) -> None:
        self.seq += 1
        events.append(
            OrderRejected(self.seq, rec.ts, rec.market, rec.order_id, rec.user, rec.client_order_id, code)
        )

    def _expire_taker(
        self, rec: OrderAccepted, qty: int, reason: ExpireReason, events: list[MatchingEvent]
    ) -> None:
        if qty == UNBOUNDED:
            qty = 0  # a market buy by quote amount has no lot count of its own
        self.seq += 1
        events.append(
            OrderExpired(
                self.seq, rec.ts, rec.market, rec.order_id, rec.user, rec.side, rec.price, qty,
                reason, False,
            )
        )  # fmt: skip

    # ------------------------------------------------------------------ queries

    def best_bid(self) -> int | None:
        key = self._sides[BUY].best_key()
        return None if key is None else -key

    def best_ask(self) -> int | None:
        return self._sides[SELL].best_key()

    def depth(self, levels: int | None = None) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Aggregated (price, lots) levels, best first: (bids, asks).

        O(L log L) for the whole book, O(L log levels) for the best ``levels``.
        """
        out: list[list[tuple[int, int]]] = []
        for side in self._sides:
            keys = side.keys_best_first() if levels is None else heapq.nsmallest(levels, side.levels)
            out.append([(side.price(k), side.levels[k].lots) for k in keys])
        return out[0], out[1]

    def level(self, side: Side, price: int) -> int:
        """The open lots at ``price`` on ``side`` (0 when there is no such level). O(1)."""
        book = self._sides[side]
        return book.lots(book.sign * price)

    def open_order(self, order_id: int) -> OpenOrder | None:
        entry = self._orders.get(order_id)
        if entry is None:
            return None
        key = entry.key
        return OpenOrder(order_id, entry.user, side_of(key), abs(key), entry.qty, entry.client_order_id)

    def open_orders(self) -> list[OpenOrder]:
        """Every open order, in book order: bids best first, then asks."""
        out = []
        for side in self._sides:
            for key in side.keys_best_first():
                for order_id in side.orders_at(key, self._orders):
                    view = self.open_order(order_id)
                    assert view is not None
                    out.append(view)
        return out

    def order_id_for(self, user: int, client_order_id: str) -> int | None:
        return self._by_client.get(f"{user}:{client_order_id}")

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> bytes:
        """The whole state as canonical bytes: the same state gives the same bytes."""
        orders = [
            (o.order_id, o.user, int(o.side), o.price, o.qty, o.client_order_id) for o in self.open_orders()
        ]
        state: dict[str, Any] = {
            "market": self.market.symbol,
            "seq": self.seq,
            "last_trade_id": self.last_trade_id,
            "orders": orders,
        }
        return msgspec.msgpack.encode(state)

    @classmethod
    def restore(cls, market: Market, data: bytes) -> MatchingEngine:
        state = msgspec.msgpack.decode(data)
        if state["market"] != market.symbol:
            raise ValueError(f"snapshot of {state['market']} cannot restore {market.symbol}")
        engine = cls(market)
        engine.seq = state["seq"]
        engine.last_trade_id = state["last_trade_id"]
        for order_id, user, side, price, qty, client_order_id in state["orders"]:
            engine.load_order(order_id, user, Side(side), price, qty, client_order_id)
        return engine

    def load_order(
        self, order_id: int, user: int, side: Side, price: int, qty: int, client_order_id: str
    ) -> None:
        """Put an open order at the back of its level, without matching or events (restore, rebuild)."""
        book = self._sides[side]
        key = book.sign * price
        book.add(key, order_id, qty)
        self._orders[order_id] = Resting(qty, user, key, client_order_id)
        if client_order_id:
            self._by_client[f"{user}:{client_order_id}"] = order_id

    def state_hash(self) -> str:
        return hashlib.sha256(self.snapshot()).hexdigest()
