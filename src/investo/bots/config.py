"""The bots' settings: one :class:`BotConfig` for a whole fleet.

Defaults give every market two market makers quoting five levels a side and two
noise traders sending about 1.5 orders a second each, so each market sees a few
trades a second while staying far below the server's default rate limits
(a fleet over two markets makes roughly 40 requests a second).

Prices are in ticks, sizes in lots, so one config fits markets of any tick and lot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BotConfig:
    """How many bots run per market and how they behave (see the module docstring)."""

    seed: int = 1
    """Seeds every random choice (walks, sizes, sides, intervals): same seed, same intentions."""
    makers: int = 2
    """Market makers per market."""
    traders: int = 2
    """Noise traders per market."""
    levels: int = 5
    """Price levels each maker quotes on each side."""
    spread_ticks: int = 4
    """Least distance between a maker's best bid and best ask, in ticks (at least 1)."""
    level_spacing_ticks: int = 2
    """Distance between two levels of one side, in ticks; quotes sit on this grid."""
    order_lots: int = 5
    """Size of a maker's first level in lots; level i quotes ``order_lots × (2 + i) // 2``."""
    skew_lots_per_tick: int = 20
    """Inventory (lots above the maker's target) that moves its quotes one tick against it."""
    max_skew_ticks: int = 10
    """The skew never moves quotes further than this."""
    walk_step_bps: int = 2
    """Size of one fair-value step in basis points of the price (at least one tick)."""
    walk_interval_s: float = 0.5
    """Seconds between two fair-value steps (each step: down, stay or up, equally likely)."""
    requote_interval_s: float = 0.5
    """Seconds between two quote refreshes of one maker."""
    trader_rate: float = 1.5
    """Orders per second of one noise trader (exponential intervals)."""
    trader_max_lots: int = 3
    """A noise order is 1..trader_max_lots lots (raised to the market's min notional)."""
    market_order_share: float = 0.5
    """Share of noise orders sent as MARKET; the rest are marketable LIMIT IOC."""
    fee_headroom_bps: int = 100
    """Quote kept aside for fees when deciding which bid levels can be funded."""
    claim_interval_s: float = 60.0
    """Least seconds between two demo-fund claims of one bot (claims also refill daily)."""
    account_interval_s: float = 2.0
    """Seconds between two balance reads of one maker (for skew and funding)."""
    stp_mode: str = "EXPIRE_BOTH"
    """Self-trade prevention of every bot order (EXPIRE_MAKER or EXPIRE_BOTH)."""
    state_dir: Path | None = None
    """Where bot identities (key, name, API key) are kept, so a restart reuses them and
    cancels what they left in the book; None makes new users each run."""
    cancel_on_stop: bool = True
    """Cancel each maker's orders when the fleet stops (needs the server still answering)."""

    def __post_init__(self) -> None:
        positive = {
            "levels": self.levels,
            "spread_ticks": self.spread_ticks,
            "level_spacing_ticks": self.level_spacing_ticks,
            "order_lots": self.order_lots,
            "skew_lots_per_tick": self.skew_lots_per_tick,
            "walk_step_bps": self.walk_step_bps,
            "trader_max_lots": self.trader_max_lots,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"BotConfig.{name} must be at least 1, got {value}")
        for name, count in (("makers", self.makers), ("traders", self.traders)):
            if count < 0:
                raise ValueError(f"BotConfig.{name} must not be negative, got {count}")
        if self.max_skew_ticks < 0 or self.fee_headroom_bps < 0:
            raise ValueError("BotConfig.max_skew_ticks and fee_headroom_bps must not be negative")
        for name, seconds in (
            ("walk_interval_s", self.walk_interval_s),
            ("requote_interval_s", self.requote_interval_s),
            ("trader_rate", self.trader_rate),
        ):
            if not seconds > 0:
                raise ValueError(f"BotConfig.{name} must be positive, got {seconds}")
        if not 0 <= self.market_order_share <= 1:
            raise ValueError("BotConfig.market_order_share must be between 0 and 1")
        if self.stp_mode not in ("EXPIRE_MAKER", "EXPIRE_BOTH"):
            raise ValueError("BotConfig.stp_mode must be EXPIRE_MAKER or EXPIRE_BOTH")
