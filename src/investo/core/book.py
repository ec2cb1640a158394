"""The data layout of one side of an order book.

Book layout
-----------
A side keeps its price levels under a *key*: the price for asks and minus the
price for bids, so that on both sides the best level has the smallest key and a
taker at limit ``L`` crosses every level whose key is ``<= L`` (asks) or
``<= -L`` (bids).

* ``levels[key]``: a :class:`Level`, the deque of the order ids queued at that
  price in arrival order (time priority), which also carries ``lots``, the total
  open lots at the level. A level exists exactly while its lots are positive; the
  last cancel or fill deletes it. The deque may still hold ids of orders that
  were cancelled: cancels are lazy, and a dead id is dropped when it reaches the
  front or when :meth:`BookSide.compact` runs.
* ``heap``: a binary heap of keys, holding every live key and possibly some dead
  ones, but never a dead one at the top: whoever deletes a level calls
  :meth:`BookSide.drop_level`, which pops dead keys off the top. So the best key
  is simply ``heap[0]``. ``in_heap`` mirrors the heap so that a key is never
  pushed twice.

Orders themselves live in the matching engine's int-keyed dict, so a resting
order costs no garbage-collected object of its own: its id is an int in a
deque, and its fields sit in a ``Resting`` struct of atomic values that the
collector never tracks (``gc=False``). Only levels are objects.

Complexity
----------
* best level: O(1) (``heap[0]``); deleting a level: amortised O(log n)
* add an order: O(1), plus O(log n) when it opens a new level
* remove lots from a level (fill or cancel): O(1)
* compact: O(n); the engine calls it only when dead ids outnumber live orders,
  so its cost is amortised O(1) per cancel.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container, Iterable, Iterator
from heapq import heappop, heappush


class Level(deque[int]):
    """The order ids queued at one price, oldest first, and their open ``lots``."""

    __slots__ = ("lots",)

    def __init__(self, order_ids: Iterable[int], lots: int) -> None:
        super().__init__(order_ids)
        self.lots = lots


class BookSide:
    """Levels of one side; see the module docstring for the layout."""

    __slots__ = ("heap", "in_heap", "levels", "sign")

    def __init__(self, sign: int) -> None:
        self.sign = sign  # +1 for asks, -1 for bids: key = sign * price
        self.levels: dict[int, Level] = {}
        self.heap: list[int] = []
        self.in_heap: set[int] = set()

    def best_key(self) -> int | None:
        """The key of the best live level, or None when the side is empty."""
        return self.heap[0] if self.heap else None

    def add(self, key: int, order_id: int, qty: int) -> None:
        """Append an order at the back of its level, opening the level if needed."""
        level = self.levels.get(key)
        if level is None:
            self.open_level(key, order_id, qty)
        else:
            level.append(order_id)
            level.lots += qty

    def open_level(self, key: int, order_id: int, qty: int) -> None:
        """Open a new level holding one order."""
        self.levels[key] = Level((order_id,), qty)
        if key not in self.in_heap:
            self.in_heap.add(key)
            heappush(self.heap, key)

    def drop_level(self, key: int) -> None:
        """Delete an emptied level and pop dead keys off the top of the heap."""
        del self.levels[key]
        heap = self.heap
        levels = self.levels
        while heap and heap[0] not in levels:
            self.in_heap.discard(heappop(heap))

    def compact(self, live: Container[int]) -> None:
        """Drop the ids of orders that are no longer ``live`` from every level."""
        for key, level in self.levels.items():
            self.levels[key] = Level((oid for oid in level if oid in live), level.lots)

    def lots(self, key: int) -> int:
        """The open lots at ``key`` (0 when there is no such level)."""
        level = self.levels.get(key)
        return 0 if level is None else level.lots

    def keys_best_first(self) -> list[int]:
        """Live keys from the best level outwards. O(L log L)."""
        return sorted(self.levels)

    def orders_at(self, key: int, live: Container[int]) -> Iterator[int]:
        """Live order ids at a level, in time priority."""
        return (oid for oid in self.levels[key] if oid in live)

    def price(self, key: int) -> int:
        return self.sign * key
