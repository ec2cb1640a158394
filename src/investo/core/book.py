"""The data layout of one side of an order book.

Book layout
-----------
A side keeps its price levels under a *key*: the price for asks and minus the
price for bids, so that on both sides the best level has the smallest key and a
taker at limit ``L`` crosses every level whose key is ``<= L`` (asks) or
``<= -L`` (bids).

* ``queues[key]``: a deque of order ids in arrival order (time priority). It may
  still hold ids of orders that were cancelled: cancels are lazy, and a dead id is
  dropped when it reaches the front or when :meth:`BookSide.compact` runs.
* ``depth[key]``: the total open lots at the level. A level exists exactly while
  its depth is positive; the last cancel or fill deletes the level.
* ``heap``: a binary heap of keys, holding every live key and possibly some dead
  ones, but never a dead one at the top: whoever deletes a level calls
  :meth:`BookSide.drop_level`, which pops dead keys off the top. So the best key
  is simply ``heap[0]``. ``in_heap`` mirrors the heap so that a key is never
  pushed twice.

Orders themselves live in the matching engine's int-keyed dicts, so a resting
order costs no garbage-collected object of its own: ids and lots are ints, and
an order's fixed fields sit in a tuple of atomic values.

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
from collections.abc import Container, Iterator
from heapq import heappop, heappush


class BookSide:
    """Levels of one side; see the module docstring for the layout."""

    __slots__ = ("depth", "heap", "in_heap", "queues", "sign")

    def __init__(self, sign: int) -> None:
        self.sign = sign  # +1 for asks, -1 for bids: key = sign * price
        self.queues: dict[int, deque[int]] = {}
        self.depth: dict[int, int] = {}
        self.heap: list[int] = []
        self.in_heap: set[int] = set()

    def best_key(self) -> int | None:
        """The key of the best live level, or None when the side is empty."""
        return self.heap[0] if self.heap else None

    def add(self, key: int, order_id: int, qty: int) -> None:
        """Append an order at the back of its level, opening the level if needed."""
        queue = self.queues.get(key)
        if queue is None:
            self.open_level(key, order_id, qty)
        else:
            queue.append(order_id)
            self.depth[key] += qty

    def open_level(self, key: int, order_id: int, qty: int) -> None:
        """Open a new level holding one order."""
        self.queues[key] = deque((order_id,))
        self.depth[key] = qty
        if key not in self.in_heap:
            self.in_heap.add(key)
            heappush(self.heap, key)

    def reduce(self, key: int, qty: int) -> None:
        """Take ``qty`` lots off a level's depth; delete the level at zero."""
        left = self.depth[key] - qty
        if left:
            self.depth[key] = left
        else:
            self.drop_level(key)

    def drop_level(self, key: int) -> None:
        """Delete an emptied level and pop dead keys off the top of the heap."""
        del self.depth[key]
        del self.queues[key]
        heap = self.heap
        depth = self.depth
        while heap and heap[0] not in depth:
            self.in_heap.discard(heappop(heap))

    def compact(self, live: Container[int]) -> None:
        """Drop the ids of orders that are no longer ``live`` from every queue."""
        for key, queue in self.queues.items():
            self.queues[key] = deque(oid for oid in queue if oid in live)

    def keys_best_first(self) -> list[int]:
        """Live keys from the best level outwards. O(L log L)."""
        return sorted(self.depth)

    def orders_at(self, key: int, live: Container[int]) -> Iterator[int]:
        """Live order ids at a level, in time priority."""
        return (oid for oid in self.queues[key] if oid in live)

    def price(self, key: int) -> int:
        return self.sign * key
