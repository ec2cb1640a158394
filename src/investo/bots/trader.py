"""A noise trader: small taker orders at random (seeded) moments, so trades, candles and tickers move.

Behaviour
---------
* Waits an exponential interval (mean ``1 / trader_rate`` s), then sends one order of
  1..``trader_max_lots`` lots (raised to the market's min notional at the fair value):
  a MARKET order with probability ``market_order_share``, else a LIMIT IOC priced through
  the fair value by half the spread plus 0..``levels`` level spacings, so it is marketable
  against the makers' quotes; nothing it sends ever rests in the book.
* Side: a fair coin leaning against its own inventory (what it bought minus what it sold,
  read from its fills), so over time it neither hoards nor runs out of either asset.
* Orders carry ``selfTradePreventionMode`` from the config; a trader never rests an order,
  so it can never meet itself. Refused for lack of funds, it claims demo funds (rate
  limited) and sells instead of buying (or the reverse) next time. Errors never stop it.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from investo.bots.config import BotConfig
from investo.bots.quoting import BUY, SELL, BotMarket, FairValue
from investo.bots.user import BotUser

INSUFFICIENT_BALANCE_MSG = "insufficient balance"


class NoiseTrader:
    """One noise trader in one market (see the module docstring)."""

    def __init__(
        self, user: BotUser, market: BotMarket, fair: FairValue, config: BotConfig, rng: random.Random
    ) -> None:
        self.user = user
        self.market = market
        self.fair = fair
        self.config = config
        self.rng = rng
        self.inventory_lots = 0  # bought minus sold since start
        self.lean = 0.0  # added to the buy probability after a refusal for lack of funds
        self.sent = 0
        self.filled_lots = 0

    async def start(self) -> None:
        await self.user.setup()

    async def run(self) -> None:
        await self.start()
        while True:
            await asyncio.sleep(self.rng.expovariate(self.config.trader_rate))
            await self.trade_once()

    def buy_probability(self) -> float:
        """0.5, leaning against inventory (±0.4 at most) and against the last refusal."""
        scale = 20 * self.config.trader_max_lots
        lean = max(-0.4, min(0.4, -self.inventory_lots / scale))
        return max(0.05, min(0.95, 0.5 + lean + self.lean))

    def next_order(self) -> dict[str, Any]:
        """The parameters of the next order (side, type, quantity, maybe price and timeInForce)."""
        side = BUY if self.rng.random() < self.buy_probability() else SELL
        fair = self.fair.ticks
        lots = max(self.rng.randint(1, self.config.trader_max_lots), self.market.min_lots_at(fair))
        order: dict[str, Any] = {"side": side, "quantity": self.market.qty(lots)}
        if self.rng.random() < self.config.market_order_share:
            order["type"] = "MARKET"
            return order
        through = self.config.spread_ticks // 2 + self.config.level_spacing_ticks * self.rng.randint(
            0, self.config.levels
        )
        ticks = self.market.clamp_ticks(fair + through if side == BUY else fair - through)
        order.update(type="LIMIT", timeInForce="IOC", price=self.market.price(ticks))
        # A limit sell far below fair must still clear min notional at its own price.
        order["quantity"] = self.market.qty(max(lots, self.market.min_lots_at(ticks)))
        return order

    async def trade_once(self) -> None:
        order = self.next_order()
        side = order.pop("side")
        kind = order.pop("type")
        symbol = self.market.symbol
        self.sent += 1
        self.user.last_error = None
        answer: Any = await self.user.call(
            "order",
            lambda: self.user.client.place_order(
                symbol,
                side,
                kind,
                selfTradePreventionMode=self.config.stp_mode,
                newOrderRespType="RESULT",
                **order,
            ),
        )
        if answer is None:
            refused = self.user.last_error
            if refused is not None and INSUFFICIENT_BALANCE_MSG in refused.msg.lower():
                self.lean = -0.3 if side == BUY else 0.3
                await self.user.claim()
            return
        self.lean = 0.0
        filled = self.market.lots_of(answer.get("executedQty", "0"))
        self.filled_lots += filled
        self.inventory_lots += filled if side == BUY else -filled
