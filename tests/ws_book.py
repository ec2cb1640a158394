"""A Binance client's local order book, as ccxt.pro keeps one: a snapshot plus ``depthUpdate`` diffs.

The rules of Binance's "how to manage a local order book": buffer diffs, take a snapshot
at ``L`` (``/api/v3/depth``'s ``lastUpdateId``), drop buffered diffs with ``u <= L``, the
first applied must have ``U <= L + 1 <= u``, and each later one ``U = previous u + 1``
(else :class:`DepthGap`: the stream served a hole). Levels are absolute quantities, keyed
by the price strings exactly as sent (a market formats them canonically).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any


class DepthGap(AssertionError):
    pass


class LocalBook:
    def __init__(self) -> None:
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}
        self.last: int | None = None
        self.buffer: list[dict[str, Any]] = []
        self.applied = 0

    def snapshot(self, depth: dict[str, Any]) -> None:
        """Take ``/api/v3/depth``'s answer, then apply the buffered diffs that follow it."""
        self.bids = {p: q for p, q in depth["bids"]}
        self.asks = {p: q for p, q in depth["asks"]}
        self.last = int(depth["lastUpdateId"])
        buffered, self.buffer = self.buffer, []
        first = True
        for diff in buffered:
            if diff["u"] <= self.last:
                continue
            if first and not diff["U"] <= self.last + 1 <= diff["u"]:
                raise DepthGap(f"first diff {diff['U']}..{diff['u']} does not cover {self.last + 1}")
            first = False
            self._apply(diff)

    def diff(self, diff: dict[str, Any]) -> None:
        if self.last is None:
            self.buffer.append(diff)
            return
        if diff["u"] <= self.last:
            return
        if diff["U"] != self.last + 1 and not diff["U"] <= self.last + 1 <= diff["u"]:
            raise DepthGap(f"diff {diff['U']}..{diff['u']} after u={self.last}")
        self._apply(diff)

    def _apply(self, diff: dict[str, Any]) -> None:
        for side, levels in ((self.bids, diff["b"]), (self.asks, diff["a"])):
            for price, qty in levels:
                if Decimal(qty) == 0:
                    side.pop(price, None)
                else:
                    side[price] = qty
        self.last = int(diff["u"])
        self.applied += 1

    def levels(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(bids best first, asks best first), as ``/api/v3/depth`` lists them."""
        bids = sorted(self.bids.items(), key=lambda kv: Decimal(kv[0]), reverse=True)
        asks = sorted(self.asks.items(), key=lambda kv: Decimal(kv[0]))
        return bids, asks
