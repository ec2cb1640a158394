"""The gateway's group commit (investo.cluster.batcher): batching, order, errors, cancellation, close."""

from __future__ import annotations

import asyncio

import pytest

from investo.cluster.batcher import Batcher, BatcherClosed


async def settle() -> None:
    """Let every task that can run, run (a few loop turns)."""
    for _ in range(5):
        await asyncio.sleep(0)


class Server:
    """A fake server call: records each batch, answers each item doubled once released."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.fail_on = fail_on

    async def send(self, batch: list[int]) -> list[int]:
        self.batches.append(batch)
        await self.release.wait()
        if self.fail_on in batch:
            raise ConnectionError("lost")
        return [item * 2 for item in batch]


async def test_a_lone_item_goes_at_once_and_items_sent_meanwhile_go_together_in_order() -> None:
    server = Server()
    batcher: Batcher[int, int] = Batcher(server.send)
    first = asyncio.create_task(batcher.submit(1))
    await settle()
    assert server.batches == [[1]]  # not held back for company (sent on the next loop turn)
    later = [asyncio.create_task(batcher.submit(n)) for n in (2, 3, 4)]
    await settle()
    assert server.batches == [[1]]  # one call in flight at a time
    server.release.set()
    assert [await first, *await asyncio.gather(*later)] == [2, 4, 6, 8]
    assert server.batches == [[1], [2, 3, 4]]


async def test_a_batch_holds_at_most_max_batch_items() -> None:
    server = Server()
    server.release.set()
    batcher: Batcher[int, int] = Batcher(server.send, max_batch=2)
    assert await asyncio.gather(*(batcher.submit(n) for n in range(5))) == [0, 2, 4, 6, 8]
    assert server.batches == [[0, 1], [2, 3], [4]]


async def test_a_failed_call_fails_its_own_batch_only() -> None:
    server = Server(fail_on=1)
    batcher: Batcher[int, int] = Batcher(server.send)
    first = asyncio.create_task(batcher.submit(0))
    await settle()
    failing = [asyncio.create_task(batcher.submit(n)) for n in (1, 2)]
    server.release.set()
    assert await first == 0
    for task in failing:
        with pytest.raises(ConnectionError):
            await task
    assert await batcher.submit(3) == 6  # the next batch goes on


async def test_a_cancelled_caller_does_not_take_its_item_back() -> None:
    server = Server()
    batcher: Batcher[int, int] = Batcher(server.send)
    blocker = asyncio.create_task(batcher.submit(0))
    await settle()
    gone = asyncio.create_task(batcher.submit(1))
    await settle()
    gone.cancel()
    server.release.set()
    assert await blocker == 0 and await batcher.submit(2) == 4
    assert server.batches == [[0], [1], [2]]


async def test_close_fails_what_is_in_flight_or_waiting_and_refuses_more() -> None:
    server = Server()
    batcher: Batcher[int, int] = Batcher(server.send)
    tasks = [asyncio.create_task(batcher.submit(n)) for n in (0, 1)]
    await settle()
    await batcher.close()
    for task in tasks:
        with pytest.raises(BatcherClosed):
            await task
    with pytest.raises(BatcherClosed):
        await batcher.submit(2)
