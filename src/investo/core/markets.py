"""Markets as the core sees them, and the integer arithmetic of money.

Invariants
----------
* Prices are whole ticks, quantities whole lots, amounts whole smallest units of
  an asset. Nothing here is ever a float.
* ``notional = price × qty × notional_unit`` quote units, exactly.
* Fees are ``notional × bps // 10_000``, rounded down, so the fees of several
  fills never exceed the fee of their sum; that is what lets a reservation made
  for the whole order cover every partial fill.

Cost: every function is O(1).
"""

from __future__ import annotations

import msgspec

BPS = 10_000


class Market(msgspec.Struct, frozen=True, gc=False):
    """One market in integer units.

    ``notional_unit``: quote units worth one tick times one lot
    (tick size × lot size, in the quote asset's smallest unit).
    ``lot_units``: base units in one lot (lot size in the base asset's smallest unit).
    """

    symbol: str
    base: str
    quote: str
    notional_unit: int
    lot_units: int
    maker_fee_bps: int = 0
    taker_fee_bps: int = 0
    min_price: int = 1
    max_price: int = 10**12
    min_qty: int = 1
    max_qty: int = 10**9
    min_notional: int = 0

    def __post_init__(self) -> None:
        if self.notional_unit <= 0 or self.lot_units <= 0:
            raise ValueError(f"{self.symbol}: notional_unit and lot_units must be positive")
        if not (0 <= self.maker_fee_bps < BPS and 0 <= self.taker_fee_bps < BPS):
            raise ValueError(f"{self.symbol}: fees must be between 0 and 9999 bps")
        if not (1 <= self.min_price <= self.max_price and 1 <= self.min_qty <= self.max_qty):
            raise ValueError(f"{self.symbol}: price and quantity ranges must be positive")

    @property
    def max_fee_bps(self) -> int:
        return max(self.maker_fee_bps, self.taker_fee_bps)

    def notional(self, price: int, qty: int) -> int:
        return price * qty * self.notional_unit

    def base_amount(self, qty: int) -> int:
        return qty * self.lot_units


def fee(notional: int, bps: int) -> int:
    """The fee on ``notional`` at ``bps`` basis points, rounded down."""
    return notional * bps // BPS


def buy_reservation(market: Market, price: int, qty: int) -> int:
    """Quote a BUY limit needs set aside: price × qty plus the highest fee it may pay."""
    notional = market.notional(price, qty)
    return notional + fee(notional, market.max_fee_bps)


def affordable_qty(market: Market, price: int, budget: int, bps: int) -> int:
    """The most lots at ``price`` whose notional plus fee at ``bps`` fits in ``budget``."""
    unit_cost = price * market.notional_unit
    qty = budget * BPS // (unit_cost * (BPS + bps))
    # Fees round down, so one more lot may still fit.
    notional = unit_cost * (qty + 1)
    if notional + fee(notional, bps) <= budget:
        qty += 1
    return qty
