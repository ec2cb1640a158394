"""Small asyncio helpers shared by the services."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

RECANCEL_S = 0.1


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (if any) and wait until it has finished; its cancellation is not re-raised.

    A library may swallow a cancellation (redis-py's asyncio client does when it arrives in
    the middle of a command), and a task that loops would then never end: the task is
    cancelled again every ``RECANCEL_S`` until it is done.
    """
    if task is None:
        return
    task.cancel()
    while not task.done():
        await asyncio.wait({task}, timeout=RECANCEL_S)
        if not task.done():
            task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def settle_heap() -> None:
    """Call once a service has started: keep what lives now out of the garbage collector's passes.

    Everything alive after start-up (a replayed shard, loaded markets, imported
    modules) lives as long as the process; ``gc.freeze`` moves it out of every
    collection, and a young generation of 50,000 allocations (not 700) makes the
    passes over the objects a busy loop creates rare. Services allocate few cycles, so
    this costs memory only for the cycles that do form, collected later.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def run_on_fast_loop(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on uvloop where it is installed (uvicorn[standard] brings it, except on
    Windows), else on the standard loop.

    A service's loop mostly waits on sockets: uvloop's (libuv) takes fewer steps per wake-up
    and per socket write than the standard selector loop, which is what a cluster process
    woken per small batch spends its CPU on.
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows, PyPy
        return asyncio.run(main)
    return uvloop.run(main)
