"""Group commit for one kind of Redis call: calls made while one is in flight go together in the next.

A gateway under load makes the same small Redis call for many requests at once (append
one order to a shard's input, ``SET NX`` one signature). Each call through redis-py costs
tens of microseconds of Python and a round trip, and each append one script run on the
server. :class:`Batcher` sends the first item at once, and everything that arrives while
that call is in flight as one batch when it returns (at most ``max_batch`` items a call),
so the cost per item falls as the load grows while a lone request waits for nobody.

Invariants
----------
* Items are sent in the order :meth:`Batcher.submit` was called, and batches one after
  the other (never two in flight), so what one caller submits after another's
  ``submit`` returned is sent after it.
* Each caller gets its own item's result, or the exception the batch's call raised (every
  item of a failed batch gets it: the caller cannot tell whether it was sent).
* A caller cancelled while waiting does not take its item back: it is sent (or already
  was) with its batch; nobody hears the result.
* :meth:`Batcher.close` fails the items not yet sent with :class:`BatcherClosed`.

Costs: one future per item, one task per run of consecutive batches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from investo.tasks import cancel_and_wait

T = TypeVar("T")
R = TypeVar("R")


class BatcherClosed(Exception):
    """The batcher was closed before the item was sent."""


class Batcher(Generic[T, R]):
    """Sends items through ``send(batch) -> results`` (one result per item, in order); see the module."""

    def __init__(self, send: Callable[[list[T]], Awaitable[Sequence[R]]], max_batch: int = 500) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._send = send
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def submit(self, item: T) -> R:
        """Send ``item`` with the next batch; return its result."""
        if self._closed:
            raise BatcherClosed("the batcher is closed")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="batcher")
        return await future

    async def _run(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                try:
                    results = await self._send([item for item, _ in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
                except asyncio.CancelledError:
                    _fail(batch, BatcherClosed("the batcher was closed while the batch was sent"))
                    raise
                except Exception as exc:
                    _fail(batch, exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._task = None

    async def close(self) -> None:
        """Stop sending: the batch in flight and every item not yet sent fail with :class:`BatcherClosed`."""
        self._closed = True
        await cancel_and_wait(self._task)
        pending, self._pending = self._pending, []
        _fail(pending, BatcherClosed("the batcher is closed"))


def _fail(batch: Sequence[tuple[object, asyncio.Future[R]]], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
