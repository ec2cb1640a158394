"""A naive reference matching engine: obviously correct, deliberately slow.

It takes the same records as :class:`investo.core.matching.MatchingEngine`
(``OrderAccepted``, ``CancelOrder``, ``CancelAll``) and returns the same events,
so tests can compare whole event lists. Nothing here is clever:

* each side of the book is one list of orders kept sorted by (price, arrival):
  ascending price for asks, descending for bids, oldest first within a price;
  the best order is simply ``book[0]``;
* a taker walks that list from the front, one maker at a time;
* a FOK order is tried on a copy of the whole engine and kept only if the copy
  filled it completely;
* the lots a budget buys are found by bisection on the exact cost function.

The rules (see ``investo/core/matching.py``): price-time priority; every fill at
the maker's price; each trade emits ``TradeExecuted``, then the maker's and then
the taker's ``OrderPartiallyFilled``/``OrderFilled``; a taker with lots left
afterwards emits one ``OrderRested`` or ``OrderExpired``; ``seq`` is +1 per event.

Conventions copied from the engine because they are part of its observable
output, not because they follow from the rules:

* A MARKET BUY by quote amount (``qty == 0``) reports as ``remaining`` the lots
  its leftover budget would still buy at the price of its last fill (0 before
  any fill); when that is 0 it is ``OrderFilled``.
* Market orders ignore their time in force; LIMIT_MAKER orders that do not cross
  follow their time in force like any limit order.
"""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass, replace

from investo.core.markets import Market
from investo.core.messages import (
    CancelAll,
    CancelOrder,
    CancelReason,
    CancelRejected,
    ExpireReason,
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


@dataclass(eq=False)  # identity equality: list.remove() removes exactly this order
class RefOrder:
    order_id: int
    user: int
    side: Side
    price: int
    qty: int  # lots still open
    client_order_id: str
    arrival: int


def priority(order: RefOrder) -> tuple[int, int]:
    """Sort key of a book list: best price first, then oldest first."""
    return (order.price if order.side == Side.SELL else -order.price, order.arrival)


def cost(market: Market, price: int, qty: int, bps: int) -> int:
    """What a taker pays for ``qty`` lots at ``price``: notional plus fee."""
    notional = price * qty * market.notional_unit
    return notional + notional * bps // 10_000


def max_affordable(market: Market, price: int, budget: int, bps: int) -> int:
    """The most lots at ``price`` whose cost fits in ``budget`` (bisection)."""
    lo, hi = 0, budget // (price * market.notional_unit) + 1  # cost(lo) <= budget < cost(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if cost(market, price, mid, bps) <= budget:
            lo = mid
        else:
            hi = mid
    return lo


class ReferenceEngine:
    def __init__(self, market: Market) -> None:
        self.market = market
        self.seq = 0
        self.last_trade_id = 0
        self.bids: list[RefOrder] = []
        self.asks: list[RefOrder] = []
        self.open: dict[int, RefOrder] = {}  # order id -> resting order (an index, nothing more)
        self.arrivals = 0
        self._out: list = []

    # ------------------------------------------------------------------ records

    def apply(self, record) -> list:
        self._out = []
        if isinstance(record, OrderAccepted):
            self._place(record)
        elif isinstance(record, CancelOrder):
            self._cancel(record)
        elif isinstance(record, CancelAll):
            self._cancel_all(record)
        else:
            raise TypeError(f"not a matching record: {type(record).__name__}")
        return self._out

    def _emit(self, event_type, *fields) -> None:
        self.seq += 1
        self._out.append(event_type(self.seq, *fields))

    def _place(self, rec: OrderAccepted) -> None:
        if rec.market != self.market.symbol:
            return self._reject(rec, RejectCode.UNKNOWN_MARKET)
        if rec.client_order_id and self._by_client(rec.user, rec.client_order_id):
            return self._reject(rec, RejectCode.DUPLICATE_CLIENT_ORDER_ID)
        if rec.order_id in self.open:
            return self._reject(rec, RejectCode.INVALID_ORDER)
        is_market_buy = rec.type == OrderType.MARKET and rec.side == Side.BUY
        if rec.type == OrderType.MARKET and rec.qty <= 0 and not (is_market_buy and rec.quote_limit > 0):
            return self._reject(rec, RejectCode.INVALID_ORDER)  # neither lots nor a budget
        opposite = self._opposite(rec.side)
        if rec.type == OrderType.LIMIT_MAKER and opposite and self._crosses(rec, opposite[0].price):
            return self._reject(rec, RejectCode.WOULD_TAKE)
        if rec.tif == TimeInForce.FOK and rec.type != OrderType.MARKET and not self._fills_completely(rec):
            return self._expire_taker(rec, rec.qty, ExpireReason.FOK_UNFILLABLE)
        left, stopped = self._match(rec)
        if left == 0:
            return None
        remaining = left or 0  # None: a buy by quote amount that never traded
        if stopped is not None:
            self._expire_taker(rec, remaining, stopped)
        elif rec.type == OrderType.MARKET:
            self._expire_taker(rec, remaining, ExpireReason.NO_LIQUIDITY)
        elif rec.tif == TimeInForce.IOC:
            self._expire_taker(rec, remaining, ExpireReason.IOC_REMAINDER)
        elif rec.tif == TimeInForce.FOK:
            self._expire_taker(rec, remaining, ExpireReason.FOK_UNFILLABLE)
        else:
            self._rest(rec, remaining)
        return None

    def _match(self, rec: OrderAccepted) -> tuple[int | None, ExpireReason | None]:
        """Take liquidity for ``rec``; return (lots left, why matching stopped early)."""
        book = self._opposite(rec.side)
        is_market_buy = rec.type == OrderType.MARKET and rec.side == Side.BUY
        by_quote = is_market_buy and rec.qty == 0
        budget = rec.quote_limit if is_market_buy else None
        taker_bps = self.market.taker_fee_bps
        left: int | None = None if by_quote else rec.qty
        while left != 0 and book and self._crosses(rec, book[0].price):
            maker = book[0]
            if maker.user == rec.user and rec.stp != StpMode.NONE:
                if rec.stp in (StpMode.EXPIRE_MAKER, StpMode.EXPIRE_BOTH):
                    self._remove(maker)
                    self._emit(
                        OrderExpired, rec.ts, self.market.symbol, maker.order_id, maker.user, maker.side,
                        maker.price, maker.qty, ExpireReason.SELF_TRADE, True,
                    )  # fmt: skip
                if rec.stp in (StpMode.EXPIRE_TAKER, StpMode.EXPIRE_BOTH):
                    return left, ExpireReason.SELF_TRADE
                continue
            fill = maker.qty if left is None else min(left, maker.qty)
            if budget is not None:
                fill = min(fill, max_affordable(self.market, maker.price, budget, taker_bps))
                if fill == 0:
                    return left, ExpireReason.BUDGET_EXHAUSTED
            notional = maker.price * fill * self.market.notional_unit
            taker_fee = notional * taker_bps // 10_000
            self._trade(rec, maker, fill, notional * self.market.maker_fee_bps // 10_000, taker_fee)
            if budget is not None:
                budget -= notional + taker_fee
            if by_quote:
                left = max_affordable(self.market, maker.price, budget, taker_bps)
            else:
                left -= fill
            if left == 0:
                self._emit(OrderFilled, rec.ts, self.market.symbol, rec.order_id, rec.user)
            else:
                self._emit(OrderPartiallyFilled, rec.ts, self.market.symbol, rec.order_id, rec.user, left)
        return left, None

    def _trade(self, rec: OrderAccepted, maker: RefOrder, fill: int, maker_fee: int, taker_fee: int) -> None:
        symbol = self.market.symbol
        self.last_trade_id += 1
        self._emit(
            TradeExecuted, rec.ts, symbol, self.last_trade_id, maker.price, fill, rec.side,
            maker.order_id, maker.user, rec.order_id, rec.user, maker_fee, taker_fee,
        )  # fmt: skip
        maker.qty -= fill
        if maker.qty == 0:
            self._remove(maker)
            self._emit(OrderFilled, rec.ts, symbol, maker.order_id, maker.user)
        else:
            self._emit(OrderPartiallyFilled, rec.ts, symbol, maker.order_id, maker.user, maker.qty)

    def _fills_completely(self, rec: OrderAccepted) -> bool:
        """Would ``rec`` fill completely at once? Tried on a throwaway copy."""
        trial = self.copy()
        left, _ = trial._match(rec)
        return left == 0

    def _rest(self, rec: OrderAccepted, qty: int) -> None:
        self.arrivals += 1
        order = RefOrder(rec.order_id, rec.user, rec.side, rec.price, qty, rec.client_order_id, self.arrivals)
        insort(self._own(rec.side), order, key=priority)
        self.open[order.order_id] = order
        self._emit(
            OrderRested, rec.ts, self.market.symbol, order.order_id, rec.user, rec.side, rec.price, qty
        )

    def _reject(self, rec: OrderAccepted, code: RejectCode) -> None:
        self._emit(OrderRejected, rec.ts, rec.market, rec.order_id, rec.user, rec.client_order_id, code)

    def _expire_taker(self, rec: OrderAccepted, remaining: int, reason: ExpireReason) -> None:
        self._emit(
            OrderExpired, rec.ts, rec.market, rec.order_id, rec.user, rec.side, rec.price, remaining,
            reason, False,
        )  # fmt: skip

    # ------------------------------------------------------------------ cancels

    def _cancel(self, rec: CancelOrder) -> None:
        order_id = rec.order_id
        if not order_id and rec.client_order_id:
            found = self._by_client(rec.user, rec.client_order_id)
            order_id = found.order_id if found else 0
        order = self.open.get(order_id)
        if order is None:
            return self._reject_cancel(rec, RejectCode.UNKNOWN_ORDER)
        if order.user != rec.user:
            return self._reject_cancel(rec, RejectCode.NOT_OWNER)
        self._cancel_one(order, rec.ts, CancelReason.USER)
        return None

    def _cancel_all(self, rec: CancelAll) -> None:
        mine = [order for order in self.open.values() if order.user == rec.user]
        if not mine:
            self._emit(CancelRejected, rec.ts, rec.market, rec.user, 0, "", RejectCode.UNKNOWN_ORDER)
        for order in sorted(mine, key=lambda o: o.order_id):
            self._cancel_one(order, rec.ts, CancelReason.CANCEL_ALL)

    def _cancel_one(self, order: RefOrder, ts: int, reason: CancelReason) -> None:
        self._remove(order)
        self._emit(
            OrderCanceled, ts, self.market.symbol, order.order_id, order.user, order.side, order.price,
            order.qty, reason,
        )  # fmt: skip

    def _reject_cancel(self, rec: CancelOrder, code: RejectCode) -> None:
        self._emit(CancelRejected, rec.ts, rec.market, rec.user, rec.order_id, rec.client_order_id, code)

    # ------------------------------------------------------------------ helpers

    def _own(self, side: Side) -> list[RefOrder]:
        return self.bids if side == Side.BUY else self.asks

    def _opposite(self, side: Side) -> list[RefOrder]:
        return self.asks if side == Side.BUY else self.bids

    @staticmethod
    def _crosses(rec: OrderAccepted, maker_price: int) -> bool:
        if rec.type == OrderType.MARKET:
            return True
        return maker_price <= rec.price if rec.side == Side.BUY else maker_price >= rec.price

    def _by_client(self, user: int, client_order_id: str) -> RefOrder | None:
        for order in self.open.values():
            if order.user == user and order.client_order_id == client_order_id:
                return order
        return None

    def _remove(self, order: RefOrder) -> None:
        self._own(order.side).remove(order)
        del self.open[order.order_id]

    def copy(self) -> ReferenceEngine:
        """An independent copy (orders copied too)."""
        other = ReferenceEngine(self.market)
        other.seq, other.last_trade_id, other.arrivals = self.seq, self.last_trade_id, self.arrivals
        other.bids = [replace(order) for order in self.bids]
        other.asks = [replace(order) for order in self.asks]
        other.open = {order.order_id: order for order in other.bids + other.asks}
        return other

    # ------------------------------------------------------------------ views

    def book(self, side: Side) -> list[tuple[int, int, int]]:
        """(price, qty, order_id) of one side, in priority order."""
        return [(order.price, order.qty, order.order_id) for order in self._own(side)]

    def depth(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Aggregated (price, lots) levels, best first: (bids, asks)."""
        out = []
        for side in (Side.BUY, Side.SELL):
            levels: list[tuple[int, int]] = []
            for order in self._own(side):
                if levels and levels[-1][0] == order.price:
                    levels[-1] = (order.price, levels[-1][1] + order.qty)
                else:
                    levels.append((order.price, order.qty))
            out.append(levels)
        return out[0], out[1]

    def open_orders(self) -> list[tuple[int, int, Side, int, int, str]]:
        """(order_id, user, side, price, qty, client_order_id): bids best first, then asks."""
        return [
            (o.order_id, o.user, o.side, o.price, o.qty, o.client_order_id) for o in self.bids + self.asks
        ]
