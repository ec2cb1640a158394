"""The deterministic core of Investo: markets, messages and the two engines.

Nothing here reads a clock, a random source, the network, the disk or the
environment, and nothing here imports from the rest of ``investo``
(``tests/unit/test_core_purity.py`` enforces it). Every engine is a plain object
with ``apply(record) -> list[event]``, ``state_hash()``, ``snapshot()`` and
``restore()``.
"""

from investo.core.accounts import AccountsEngine
from investo.core.exchange import Exchange
from investo.core.markets import Market
from investo.core.matching import MatchingEngine

__all__ = ["AccountsEngine", "Exchange", "Market", "MatchingEngine"]
