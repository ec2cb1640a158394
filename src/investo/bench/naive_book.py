"""The baseline of `investo bench engine`: the order book anyone writes first.

A dict of price → deque of orders per side, the sorted list of prices kept with
``bisect``, and a cancel that finds the order in its level with
``deque.remove`` (a scan of the level). It matches with price-time priority at
the maker's price and reports trades as ``(taker, maker, price, qty)``; it has no
events, no fees and no users. Only the benchmark uses it.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque


class NaiveBook:
    def __init__(self) -> None:
        self.levels: tuple[dict[int, deque[list[int]]], dict[int, deque[list[int]]]] = ({}, {})
        self.prices: tuple[list[int], list[int]] = ([], [])  # ascending, per side
        self.orders: dict[int, tuple[int, int, list[int]]] = {}  # id -> (side, price, [id, qty])
        self.trades: list[tuple[int, int, int, int]] = []

    def limit(self, order_id: int, buy: bool, price: int, qty: int) -> None:
        side = 0 if buy else 1
        qty = self._match(side, order_id, price, qty)
        if qty:
            self._add(side, order_id, price, qty)

    def market(self, order_id: int, buy: bool, qty: int) -> None:
        self._match(0 if buy else 1, order_id, None, qty)

    def cancel(self, order_id: int) -> bool:
        found = self.orders.pop(order_id, None)
        if found is None:
            return False
        side, price, entry = found
        level = self.levels[side][price]
        level.remove(entry)
        if not level:
            self._drop_level(side, price)
        return True

    def _add(self, side: int, order_id: int, price: int, qty: int) -> None:
        level = self.levels[side].get(price)
        if level is None:
            level = self.levels[side][price] = deque()
            insort(self.prices[side], price)
        entry = [order_id, qty]
        level.append(entry)
        self.orders[order_id] = (side, price, entry)

    def _drop_level(self, side: int, price: int) -> None:
        del self.levels[side][price]
        prices = self.prices[side]
        del prices[bisect_left(prices, price)]

    def _match(self, side: int, order_id: int, limit: int | None, qty: int) -> int:
        other = 1 - side
        prices = self.prices[other]
        levels = self.levels[other]
        while qty and prices:
            best = prices[0] if other == 1 else prices[-1]
            if limit is not None and (best > limit if side == 0 else best < limit):
                break
            level = levels[best]
            while qty and level:
                entry = level[0]
                fill = min(qty, entry[1])
                qty -= fill
                entry[1] -= fill
                self.trades.append((order_id, entry[0], best, fill))
                if entry[1] == 0:
                    level.popleft()
                    del self.orders[entry[0]]
            if not level:
                self._drop_level(other, best)
        return qty
