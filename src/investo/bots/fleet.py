"""The fleet: every bot of every market, run together against one Investo over HTTP.

Behaviour
---------
* :meth:`BotFleet.run` waits until the exchange answers (``GET /api/v3/exchangeInfo``,
  retried with back-off), reads its markets, and gives each market a
  :class:`~investo.bots.quoting.FairValue` starting at the last trade price if there is
  one, else the market's ``initial_price`` (from ``initial_prices``, by default the
  built-in markets file's), else the middle of the book; a market with none of these is left alone.
* Then it runs, per market, ``makers`` market makers, ``traders`` noise traders and one
  task stepping the fair value every ``walk_interval_s``. A bot that fails for a reason
  other than the API's or the network's (those never stop it) is logged and restarted
  a second later; cancellation stops everything.
* Randomness: each walk and each trader has its own ``random.Random`` seeded from
  ``(seed, symbol, role, index)``, so one seed gives the same intentions on every run.
* On stop (cancellation), with ``cancel_on_stop``, each maker cancels its orders (at most
  2 s in all), then every HTTP client is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from investo.bots.config import BotConfig
from investo.bots.maker import MarketMaker
from investo.bots.quoting import BotMarket, FairValue
from investo.bots.trader import NoiseTrader
from investo.bots.user import BotUser

log = logging.getLogger("investo.bots")
STOP_TIMEOUT_S = 2.0


def default_initial_prices() -> dict[str, Decimal]:
    """The ``initial_price`` of each market of the built-in markets file."""
    from investo.markets import load_markets

    return {s: spec.initial_price for s, spec in load_markets(None).items() if spec.initial_price is not None}


class BotFleet:
    """All bots against one exchange at ``base_url`` (see the module docstring)."""

    def __init__(
        self,
        base_url: str,
        config: BotConfig | None = None,
        *,
        initial_prices: Mapping[str, Decimal] | None = None,
        symbols: Sequence[str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.config = config or BotConfig()
        self.initial_prices = dict(default_initial_prices() if initial_prices is None else initial_prices)
        self.symbols = None if symbols is None else set(symbols)
        self.markets: dict[str, BotMarket] = {}
        self.fair: dict[str, FairValue] = {}
        self.makers: list[MarketMaker] = []
        self.traders: list[NoiseTrader] = []
        self.ready = asyncio.Event()  # set once every bot exists (not yet registered)
        self._probe = BotUser(self.base_url, "fleet")

    def rng(self, *parts: object) -> random.Random:
        return random.Random(":".join(str(p) for p in (self.config.seed, *parts)))

    @property
    def users(self) -> list[BotUser]:
        return [m.user for m in self.makers] + [t.user for t in self.traders]

    async def run(self) -> None:
        tasks: list[asyncio.Task[None]] = []
        try:
            await self._build()
            for symbol, fair in self.fair.items():
                tasks.append(asyncio.create_task(self._walk(fair), name=f"walk-{symbol}"))
            for maker in self.makers:
                tasks.append(asyncio.create_task(self._supervise(maker.user.label, maker.run)))
            for trader in self.traders:
                tasks.append(asyncio.create_task(self._supervise(trader.user.label, trader.run)))
            self.ready.set()
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.shield(self._close())

    async def _close(self) -> None:
        if self.config.cancel_on_stop and self.makers:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(
                    asyncio.gather(*(m.stop() for m in self.makers), return_exceptions=True),
                    STOP_TIMEOUT_S,
                )
        for user in [self._probe, *self.users]:
            await user.close()

    async def _build(self) -> None:
        client = self._probe.client
        info: Any = await self._probe.call("exchangeInfo", client.exchange_info, retry=True)
        config = self.config
        for entry in (info or {}).get("symbols", []):
            symbol = str(entry["symbol"])
            if (self.symbols is not None and symbol not in self.symbols) or entry.get("status") != "TRADING":
                continue
            market = BotMarket.from_symbol_info(entry, self.initial_prices.get(symbol))
            start = await self._start_ticks(market)
            if start is None:
                log.warning("bots: no price to start %s (no trade, no initial_price, empty book)", symbol)
                continue
            self.markets[symbol] = market
            fair = FairValue(market, start, self.rng(symbol, "walk"), config.walk_step_bps)
            self.fair[symbol] = fair
            for i in range(1, config.makers + 1):
                user = self._user(f"mm-{symbol}-{i}")
                self.makers.append(MarketMaker(user, market, fair, config))
            for i in range(1, config.traders + 1):
                user = self._user(f"nt-{symbol}-{i}")
                self.traders.append(NoiseTrader(user, market, fair, config, self.rng(symbol, "nt", i)))

    def _user(self, label: str) -> BotUser:
        config = self.config
        return BotUser(
            self.base_url, label, state_dir=config.state_dir, claim_interval_s=config.claim_interval_s
        )

    async def _start_ticks(self, market: BotMarket) -> int | None:
        """The last trade price, else the initial price, else the book's middle, in ticks."""
        client = self._probe.client
        trades: Any = await self._probe.call("trades", lambda: client.trades(market.symbol, 1), retry=True)
        if trades:
            return market.ticks_of(trades[-1]["price"])
        if market.initial_price is not None:
            return market.ticks_of(format(market.initial_price, "f"))
        book: Any = await self._probe.call("depth", lambda: client.depth(market.symbol, 5), retry=True)
        bids, asks = (book or {}).get("bids", []), (book or {}).get("asks", [])
        prices = [market.ticks_of(side[0][0]) for side in (bids, asks) if side]
        return sum(prices) // len(prices) if prices else None

    async def _walk(self, fair: FairValue) -> None:
        while True:
            await asyncio.sleep(self.config.walk_interval_s)
            fair.step()

    async def _supervise(self, label: str, run: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("bot %s failed; restarting it in 1 s", label)
                await asyncio.sleep(1.0)


async def run_bots(
    base_url: str, config: BotConfig | None = None, initial_prices: Mapping[str, Decimal] | None = None
) -> None:
    """Run a fleet against ``base_url`` until cancelled."""
    await BotFleet(base_url, config, initial_prices=initial_prices).run()
