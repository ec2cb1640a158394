"""Every shard engine of a cluster as tasks of one process: for tests and quick distributed runs.

Each engine is the same :class:`~investo.cluster.engine.ShardEngine` that
``investo engine`` runs alone; here they only share an event loop. ``drained``
waits until every input log is consumed, which is when the engines' states can be
compared (a trade's settlement is still in flight until then).
"""

from __future__ import annotations

import asyncio
import time

from investo.cluster.engine import ShardEngine
from investo.cluster.topology import Role, Topology


class LocalCluster:
    def __init__(self, server_url: str, topology: Topology, *, snapshot_every: int = 50_000) -> None:
        self.server_url = server_url
        self.topology = topology
        self.snapshot_every = snapshot_every
        self.engines: dict[tuple[Role, int], ShardEngine] = {}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for role, shard in self.topology.every_output():
            engine = ShardEngine(
                self.server_url, self.topology, role, shard, snapshot_every=self.snapshot_every
            )
            await engine.recover()
            self.engines[(role, shard)] = engine
        self._tasks = [
            asyncio.create_task(engine.run(self._stop), name=f"engine-{role}-{shard}")
            for (role, shard), engine in self.engines.items()
        ]

    async def drained(self, timeout_s: float = 10.0) -> None:
        """Return once every engine has consumed its whole input (raise TimeoutError if not in time)."""
        deadline = time.monotonic() + timeout_s
        while True:
            for task in self._tasks:
                if task.done():
                    task.result()  # an engine that died says why
            lasts = [await engine.input.last_offset() for engine in self.engines.values()]
            if all(engine.applied == last for engine, last in zip(self.engines.values(), lasts, strict=True)):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"engines not drained in {timeout_s} s: {list(self.engines.values())}")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """Stop every engine after its current batch, snapshot it, record its status, close it."""
        self._stop.set()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for engine in self.engines.values():
            await engine.save_snapshot()
            await engine.write_status()
            await engine.close()
        for result in results:
            if isinstance(result, BaseException):
                raise result
