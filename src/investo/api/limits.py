"""Rate limits per IP and per API key, answered with Binance's 429 and ``Retry-After``.

Each limit is a fixed window (requests per window) as Binance counts them. A
client over its limit gets HTTP 429 with code -1003 and a ``Retry-After`` header
telling how many seconds remain in the window. Memory: one counter per client
seen in the current window; old windows are dropped as time moves on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from investo.api import errors


@dataclass
class WindowLimit:
    name: str  # "REQUEST_WEIGHT" (per IP) or "ORDERS" (per key)
    limit: int
    window_ms: int
    _window: int = -1
    _counts: dict[str, int] = field(default_factory=dict)

    def hit(self, client: str, now_ms: int) -> None:
        """Count one request of ``client``; raise a 429 ApiError when over the limit."""
        if self.limit <= 0:
            return
        window = now_ms // self.window_ms
        if window != self._window:
            self._window = window
            self._counts = {}
        count = self._counts.get(client, 0) + 1
        self._counts[client] = count
        if count > self.limit:
            retry_after = max(1, ((window + 1) * self.window_ms - now_ms + 999) // 1000)
            error = errors.too_many_requests(f"over {self.limit} per {self.window_ms // 1000}s ({self.name})")
            error.headers = {"Retry-After": str(retry_after)}
            raise error

    def describe(self) -> dict[str, Any]:
        seconds = self.window_ms // 1000
        unit, num = ("MINUTE", seconds // 60) if seconds % 60 == 0 else ("SECOND", seconds)
        return {
            "rateLimitType": "REQUEST_WEIGHT" if self.name == "REQUEST_WEIGHT" else "ORDERS",
            "interval": unit,
            "intervalNum": num,
            "limit": self.limit,
        }


@dataclass
class RateLimits:
    per_ip: WindowLimit
    orders_per_key: WindowLimit

    @classmethod
    def default(cls, per_ip_per_minute: int = 60_000, orders_per_10s: int = 10_000) -> RateLimits:
        return cls(
            WindowLimit("REQUEST_WEIGHT", per_ip_per_minute, 60_000),
            WindowLimit("ORDERS", orders_per_10s, 10_000),
        )

    def describe(self) -> list[dict[str, Any]]:
        return [self.per_ip.describe(), self.orders_per_key.describe()]
