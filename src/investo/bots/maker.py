"""A market maker: a ladder of resting quotes on both sides of a market's fair value.

Behaviour
---------
* On start it registers (or reuses) its user, claims demo funds and cancels whatever it has
  open in its market (orders a previous run left behind). Its inventory target is the base
  it holds then (raised by every later claim of base).
* Every ``requote_interval_s`` it reads its open orders and, every ``account_interval_s``,
  its balances; computes the :func:`~investo.bots.quoting.ladder` around the market's shared
  :class:`~investo.bots.quoting.FairValue`, skewed against its inventory; keeps the levels it
  can fund (:func:`~investo.bots.quoting.fund`); and applies the
  :func:`~investo.bots.quoting.plan`: cancels what a new quote would meet, places, then
  cancels the rest, so its own orders never cross each other and a side is not emptied;
  it holds at most ``2 × levels`` open orders after each refresh.
* Orders are LIMIT GTC with ``selfTradePreventionMode`` from the config (EXPIRE_BOTH by
  default): the exchange never matches two of its orders, so it never wash trades.
* A side it cannot fund is not quoted; it then claims demo funds (at most once per
  ``claim_interval_s``, and on each new UTC day). Errors never stop it (see
  :mod:`investo.bots.user`).
"""

from __future__ import annotations

import asyncio
import functools
import time
from decimal import Decimal
from typing import Any

from investo.bots.config import BotConfig
from investo.bots.quoting import (
    BotMarket,
    FairValue,
    LadderShape,
    OpenOrder,
    Quote,
    fund,
    ladder,
    plan,
)
from investo.bots.user import BotUser


def shape_of(config: BotConfig) -> LadderShape:
    return LadderShape(
        levels=config.levels,
        spread_ticks=config.spread_ticks,
        level_spacing_ticks=config.level_spacing_ticks,
        order_lots=config.order_lots,
        skew_lots_per_tick=config.skew_lots_per_tick,
        max_skew_ticks=config.max_skew_ticks,
    )


class MarketMaker:
    """One maker in one market (see the module docstring)."""

    def __init__(self, user: BotUser, market: BotMarket, fair: FairValue, config: BotConfig) -> None:
        self.user = user
        self.market = market
        self.fair = fair
        self.config = config
        self.shape = shape_of(config)
        self.max_open = 2 * config.levels
        self.target_lots: int | None = None
        self.base_lots = 0  # base held, free + locked, in whole lots
        self.quote_total = Decimal(0)  # quote held, free + locked
        self.last_account = -float("inf")
        self.refreshes = 0
        self.placed = 0
        self.canceled = 0

    async def start(self) -> None:
        await self.user.setup()
        await self.user.call("cancel leftovers", lambda: self.user.client.cancel_all(self.market.symbol))
        while self.target_lots is None:
            if not await self.read_account():
                await asyncio.sleep(self.config.requote_interval_s)

    async def run(self) -> None:
        await self.start()
        while True:
            await self.refresh()
            await asyncio.sleep(self.config.requote_interval_s)

    async def read_account(self) -> bool:
        balances = await self.user.balances()
        if balances is None:
            return False
        self.last_account = time.monotonic()
        base_free, base_locked = balances.get(self.market.base, (Decimal(0), Decimal(0)))
        quote_free, quote_locked = balances.get(self.market.quote, (Decimal(0), Decimal(0)))
        self.base_lots = self.market.lots_of(str(base_free + base_locked))
        self.quote_total = quote_free + quote_locked
        if self.target_lots is None:
            self.target_lots = self.base_lots
        return True

    @property
    def inventory_lots(self) -> int:
        return self.base_lots - (self.target_lots or 0)

    def wanted(self) -> tuple[list[Quote], bool]:
        """The funded ladder now, and whether some level had to be left out for lack of funds."""
        quotes = ladder(self.market, self.fair.ticks, self.inventory_lots, self.shape)
        funded = fund(self.market, quotes, self.quote_total, self.base_lots, self.config.fee_headroom_bps)
        return funded, len(funded) < len(quotes)

    async def refresh(self) -> None:
        """One refresh: read state, compute the ladder, cancel what changed, place what is missing."""
        self.refreshes += 1
        symbol = self.market.symbol
        if time.monotonic() - self.last_account >= self.config.account_interval_s:
            await self.read_account()
        wanted, short = self.wanted()
        if short or self.user.claim_due():
            deposits = await self.user.claim()
            for deposit in deposits:
                if deposit.get("asset") == self.market.base and self.target_lots is not None:
                    self.target_lots += self.market.lots_of(deposit["amount"])
            if deposits:
                await self.read_account()
                wanted, _ = self.wanted()
        answer: Any = await self.user.call("open orders", lambda: self.user.client.open_orders(symbol))
        if answer is None:
            return
        orders = [OpenOrder.from_json(self.market, o) for o in answer]
        todo = plan(wanted, orders, self.max_open)
        for order_id in todo.cancel_first:
            canceled = await self.user.call("cancel", functools.partial(self._cancel, order_id))
            self.canceled += canceled is not None
        for quote in todo.place:
            placed = await self.user.call("place", functools.partial(self._place, quote))
            self.placed += placed is not None
        for order_id in todo.cancel_after:
            canceled = await self.user.call("cancel", functools.partial(self._cancel, order_id))
            self.canceled += canceled is not None

    async def _cancel(self, order_id: int) -> Any:
        return await self.user.client.cancel_order(self.market.symbol, orderId=order_id)

    async def _place(self, quote: Quote) -> Any:
        return await self.user.client.place_order(
            self.market.symbol,
            quote.side,
            "LIMIT",
            timeInForce="GTC",
            price=self.market.price(quote.ticks),
            quantity=self.market.qty(quote.lots),
            selfTradePreventionMode=self.config.stp_mode,
            newOrderRespType="ACK",
        )

    async def stop(self) -> None:
        """Cancel this maker's orders (best effort, once)."""
        if self.user.client.api_key is not None:
            await self.user.call("cancel on stop", lambda: self.user.client.cancel_all(self.market.symbol))
