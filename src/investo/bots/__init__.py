"""Built-in bots that keep every market alive, as ordinary users of the public API.

* :class:`MarketMaker` (:mod:`investo.bots.maker`): per market, quotes ``levels`` price
  levels a side around a fair value that follows a seeded random walk, spread and spacing in
  ticks, sizes in lots, skewed against its inventory, refreshed by cancelling and placing only
  what changed; self-trade prevention on, so it never trades with itself.
* :class:`NoiseTrader` (:mod:`investo.bots.trader`): MARKET and marketable LIMIT IOC orders
  of a few lots at seeded random intervals, on both sides.
* :class:`BotFleet` (:mod:`investo.bots.fleet`): runs them all against one exchange over HTTP;
  :class:`BotConfig` (:mod:`investo.bots.config`) holds every knob.

Each bot has its own Ed25519 key and user (``mm-TATAINR-1-<random>``, ``nt-…``), claims demo
funds, and survives API errors, rate limits and lost connections (:mod:`investo.bots.user`).
All money is exact: ticks and lots as integers, decimal strings for the API, never a float
(:mod:`investo.bots.quoting`). ``investo up`` runs a fleet in-process (``--no-bots`` to
turn it off); ``investo marketmaker --url URL`` runs one against any Investo.
"""

from investo.bots.config import BotConfig
from investo.bots.fleet import BotFleet, run_bots
from investo.bots.maker import MarketMaker
from investo.bots.trader import NoiseTrader

__all__ = ["BotConfig", "BotFleet", "MarketMaker", "NoiseTrader", "run_bots"]
