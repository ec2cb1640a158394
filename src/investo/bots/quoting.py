"""The bots' pure logic: markets in ticks and lots, the fair-value walk, quote ladders, refresh plans.

Nothing here does I/O or reads a clock; randomness comes only from the
``random.Random`` a caller passes, so the same seed gives the same walk.

Invariants (``tests/unit/test_bots.py``)
----------------------------------------
* Money is integers: prices in ticks, sizes in lots; decimal strings are made with
  :func:`investo.api.units.format_steps` (exact, never a float, never rounded), and
  balances and notionals are exact ``Decimal`` products of decimal strings.
* Every quote of :func:`ladder` is on the tick and lot grid, inside the market's price
  and quantity range, and at or above its min notional.
* A ladder never crosses itself: every bid is below every ask, by at least
  ``spread_ticks``; bids fall and asks rise level by level, ``level_spacing_ticks`` apart.
  Levels sit on a grid of multiples of the spacing, so a small move of the fair value
  changes few quotes.
* Skew is against inventory: a maker holding more base than its target quotes lower
  (bids and asks both move down), one holding less quotes higher, never more than
  ``max_skew_ticks``.
* :func:`fund` keeps the levels nearest the fair value that the budget can pay for
  (bids: quote with fee headroom; asks: base), dropping the rest: a side the maker cannot
  fund is not quoted at all.
* :func:`plan` keeps an open order only if it matches a wanted quote (same side and price,
  at least half its size left), cancels every other one, and places what is missing: first
  it cancels the stale orders a new quote would meet, then places, then cancels the rest, so
  the maker's orders never cross each other, even half-way through. After the plan, its open
  orders are a subset of the ladder: at most ``2 × levels``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal, DivisionByZero, Inexact, InvalidOperation, localcontext
from typing import Any

from investo.api.units import format_steps, to_steps

BUY, SELL = "BUY", "SELL"
BPS = 10_000


@dataclass(frozen=True, slots=True)
class BotMarket:
    """A market as a bot sees it through the API: steps, ranges and its starting price."""

    symbol: str
    base: str
    quote: str
    tick_size: Decimal
    lot_size: Decimal
    min_price_ticks: int = 1
    max_price_ticks: int = 10**12
    min_lots: int = 1
    max_lots: int = 10**9
    min_notional: Decimal = Decimal(0)
    initial_price: Decimal | None = None

    @classmethod
    def from_symbol_info(cls, info: Mapping[str, Any], initial_price: Decimal | None = None) -> BotMarket:
        """A market from one ``symbols`` entry of ``GET /api/v3/exchangeInfo``."""
        filters = {f["filterType"]: f for f in info.get("filters", [])}
        price, lot = filters["PRICE_FILTER"], filters["LOT_SIZE"]
        tick, step = Decimal(price["tickSize"]), Decimal(lot["stepSize"])
        notional = filters.get("NOTIONAL") or filters.get("MIN_NOTIONAL") or {}
        return cls(
            symbol=str(info["symbol"]),
            base=str(info["baseAsset"]),
            quote=str(info["quoteAsset"]),
            tick_size=tick,
            lot_size=step,
            min_price_ticks=max(1, to_steps(price["minPrice"], tick)),
            max_price_ticks=to_steps(price["maxPrice"], tick),
            min_lots=max(1, to_steps(lot["minQty"], step)),
            max_lots=to_steps(lot["maxQty"], step),
            min_notional=Decimal(str(notional.get("minNotional", "0"))),
            initial_price=initial_price,
        )

    def price(self, ticks: int) -> str:
        """``ticks`` as the API's decimal price string (exact)."""
        return format_steps(ticks, self.tick_size)

    def qty(self, lots: int) -> str:
        """``lots`` as the API's decimal quantity string (exact)."""
        return format_steps(lots, self.lot_size)

    def ticks_of(self, text: str) -> int:
        """A price string in whole ticks (raises if it is off the tick)."""
        return to_steps(text, self.tick_size)

    def lots_of(self, text: str) -> int:
        """A quantity string in whole lots, rounded down (a balance need not be on the lot)."""
        return whole_steps(Decimal(text), self.lot_size)

    def notional(self, ticks: int, lots: int) -> Decimal:
        """``price × quantity`` in the quote asset, exactly."""
        return product(self.tick_size, ticks, self.lot_size, lots)

    def min_lots_at(self, ticks: int) -> int:
        """The fewest lots whose notional at ``ticks`` reaches the min notional (at least min_lots)."""
        lots = self.min_lots
        if self.min_notional > 0 and ticks > 0:
            one = self.notional(ticks, 1)
            whole = whole_steps(self.min_notional, one)
            lots = max(lots, whole + (0 if product(one, whole) == self.min_notional else 1))
        return lots

    def clamp_ticks(self, ticks: int) -> int:
        return min(max(ticks, self.min_price_ticks), self.max_price_ticks)


def _context() -> Context:
    """60 significant digits, and any rounding is an error: inputs have at most 40 characters."""
    return Context(prec=60, traps=[Inexact, InvalidOperation, DivisionByZero])


def product(*factors: Decimal | int) -> Decimal:
    """The exact product of ``factors`` (raises ``decimal.Inexact`` rather than round)."""
    with localcontext(_context()):
        result = Decimal(1)
        for factor in factors:
            result *= factor
        return result


def whole_steps(amount: Decimal, step: Decimal) -> int:
    """How many whole ``step``s fit in ``amount`` (rounded down, exact)."""
    with localcontext(_context()):
        return int(amount // step)


class FairValue:
    """A seeded random walk in ticks: each step moves down, stays or moves up, equally likely.

    A step is ``walk_step_bps`` of the current value, at least one tick; the value stays
    inside the market's price range.
    """

    def __init__(self, market: BotMarket, start_ticks: int, rng: random.Random, step_bps: int) -> None:
        self.market = market
        self.ticks = market.clamp_ticks(start_ticks)
        self.rng = rng
        self.step_bps = step_bps
        self.steps = 0

    def step(self) -> int:
        size = max(1, self.ticks * self.step_bps // BPS)
        self.ticks = self.market.clamp_ticks(self.ticks + self.rng.choice((-1, 0, 1)) * size)
        self.steps += 1
        return self.ticks


@dataclass(frozen=True, slots=True)
class Quote:
    """One wanted resting order: side, price in ticks, size in lots."""

    side: str
    ticks: int
    lots: int


@dataclass(frozen=True, slots=True)
class OpenOrder:
    """One of the maker's open orders as ``GET /api/v3/openOrders`` shows it, in ticks and lots."""

    order_id: int
    side: str
    ticks: int
    lots_left: int

    @classmethod
    def from_json(cls, market: BotMarket, order: Mapping[str, Any]) -> OpenOrder:
        left = market.lots_of(order["origQty"]) - market.lots_of(order["executedQty"])
        return cls(int(order["orderId"]), str(order["side"]), market.ticks_of(order["price"]), left)


@dataclass(frozen=True, slots=True)
class LadderShape:
    """The shape of a maker's quotes (the fields of :class:`investo.bots.config.BotConfig`)."""

    levels: int = 5
    spread_ticks: int = 4
    level_spacing_ticks: int = 2
    order_lots: int = 5
    skew_lots_per_tick: int = 20
    max_skew_ticks: int = 10


def skew_ticks(inventory_lots: int, shape: LadderShape) -> int:
    """How far quotes move for an inventory of ``inventory_lots`` above target (negative: below)."""
    magnitude = min(abs(inventory_lots) // shape.skew_lots_per_tick, shape.max_skew_ticks)
    return -magnitude if inventory_lots > 0 else magnitude


def level_lots(level: int, shape: LadderShape) -> int:
    """Size of level ``level`` (0 is the best): 1×, 1.5×, 2×, … the first level's size."""
    return max(1, shape.order_lots * (2 + level) // 2)


def ladder(market: BotMarket, fair_ticks: int, inventory_lots: int, shape: LadderShape) -> list[Quote]:
    """The quotes around ``fair_ticks`` for a maker ``inventory_lots`` above its target.

    Bids first (best to worst), then asks (best to worst). See the module docstring.
    """
    spacing = shape.level_spacing_ticks
    center = fair_ticks + skew_ticks(inventory_lots, shape)
    below = shape.spread_ticks // 2
    above = shape.spread_ticks - below
    best_bid = (center - below) // spacing * spacing
    best_ask = -(-(center + above) // spacing) * spacing
    quotes: list[Quote] = []
    for side, best, direction in ((BUY, best_bid, -1), (SELL, best_ask, 1)):
        for level in range(shape.levels):
            ticks = best + direction * level * spacing
            if not market.min_price_ticks <= ticks <= market.max_price_ticks:
                continue
            lots = max(level_lots(level, shape), market.min_lots_at(ticks))
            if lots > market.max_lots:
                continue
            quotes.append(Quote(side, ticks, lots))
    return quotes


def fund(
    market: BotMarket, quotes: Iterable[Quote], quote_budget: Decimal, base_budget_lots: int, fee_bps: int
) -> list[Quote]:
    """The quotes the budgets pay for, nearest the fair value first (``quotes`` in ladder order).

    A bid costs its notional plus ``fee_bps`` of it in the quote asset; an ask its lots of base.
    On each side, the first level that does not fit ends that side.
    """
    funded: list[Quote] = []
    budget_scaled = product(quote_budget, BPS)  # compare in 1/10,000ths: no division, no rounding
    spent_scaled = Decimal(0)
    spent_lots = 0
    stopped: set[str] = set()
    for quote in quotes:
        if quote.side in stopped:
            continue
        if quote.side == BUY:
            cost_scaled = product(market.notional(quote.ticks, quote.lots), BPS + fee_bps)
            with localcontext(_context()):
                total = spent_scaled + cost_scaled
            if total > budget_scaled:
                stopped.add(BUY)
                continue
            spent_scaled = total
        else:
            if spent_lots + quote.lots > base_budget_lots:
                stopped.add(SELL)
                continue
            spent_lots += quote.lots
        funded.append(quote)
    return funded


@dataclass(frozen=True, slots=True)
class Plan:
    """What one refresh does, in this order: cancel ``cancel_first``, place ``place``, cancel
    ``cancel_after``. Orders that would cross a new quote go first; the others stay until the
    new quotes are in, so a side is never left empty in between and never crosses itself."""

    cancel_first: list[int]
    place: list[Quote]
    cancel_after: list[int]

    @property
    def cancel(self) -> list[int]:
        return self.cancel_first + self.cancel_after


def plan(wanted: Sequence[Quote], open_orders: Iterable[OpenOrder], max_open: int) -> Plan:
    """Turn the open orders into the wanted quotes with the fewest cancels and placements.

    An open order is kept when it is the first one found at a wanted quote's side and price
    and still has at least half the wanted size; every other one is canceled: first if it is
    at or through a new quote of the other side, else after the placements. When more than
    ``max_open`` orders are open, every one is canceled first and the whole ladder placed again.
    """
    orders = list(open_orders)
    if len(orders) > max_open:
        return Plan([o.order_id for o in orders], list(wanted), [])
    by_level: dict[tuple[str, int], Quote] = {(q.side, q.ticks): q for q in wanted}
    kept: set[tuple[str, int]] = set()
    stale: list[OpenOrder] = []
    for order in orders:
        key = (order.side, order.ticks)
        target = by_level.get(key)
        if target is not None and key not in kept and order.lots_left * 2 >= target.lots:
            kept.add(key)
        else:
            stale.append(order)
    place = [q for q in wanted if (q.side, q.ticks) not in kept]
    new_bids = [q.ticks for q in place if q.side == BUY]
    new_asks = [q.ticks for q in place if q.side == SELL]
    first: list[int] = []
    after: list[int] = []
    for order in stale:
        if order.side == BUY:
            conflict = bool(new_asks) and order.ticks >= min(new_asks)
        else:
            conflict = bool(new_bids) and order.ticks <= max(new_bids)
        (first if conflict else after).append(order.order_id)
    return Plan(first, place, after)


def crossed(quotes: Iterable[Quote | OpenOrder]) -> bool:
    """Whether some bid is at or above some ask among ``quotes``."""
    items = list(quotes)
    bids = [q.ticks for q in items if q.side == BUY]
    asks = [q.ticks for q in items if q.side == SELL]
    return bool(bids and asks and max(bids) >= min(asks))
