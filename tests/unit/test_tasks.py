"""investo.tasks.cancel_and_wait ends a task even when a library swallowed its cancellation;
run_on_fast_loop runs a service's main on uvloop."""

from __future__ import annotations

import asyncio

from investo.tasks import cancel_and_wait, run_on_fast_loop


async def test_a_task_that_swallows_a_cancellation_is_cancelled_again() -> None:
    swallowed = []

    async def stubborn() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:  # as redis-py's asyncio client may, mid-command
            swallowed.append(True)
        while True:
            await asyncio.sleep(1)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    async with asyncio.timeout(2):
        await cancel_and_wait(task)
    assert swallowed == [True] and task.cancelled()


async def test_a_failed_task_raises_and_none_is_nothing() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    try:
        await cancel_and_wait(task)
    except ValueError as error:
        assert str(error) == "boom"
    else:
        raise AssertionError("the task's own error is raised")
    await cancel_and_wait(None)


def test_a_service_runs_on_uvloop_and_its_result_comes_back() -> None:
    async def main() -> str:
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop()).__module__

    assert run_on_fast_loop(main()).startswith("uvloop")
