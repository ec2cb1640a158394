"""A read-only replica of one shard: the same state as the running engine, for reads and witnesses.

A replica loads the shard's latest snapshot and steps the shard's input log with the same
deterministic code as the engine, but only up to ``<shard>:done`` (what the engine has
published) and without publishing anything. Gateways and WebSocket processes use replicas
of the matching shards for books and of the accounts shards for balances; a replica is
also a second witness of the engine's state (same input, same state hash).

Invariants: a replica never writes to Redis; it is never ahead of the engine's published
state (``applied <= done``); after catching up its state hash is the engine's at that
offset. ``on_step`` sees every stepped entry in input order with the events the engine
published for it (the output entry's events), replays from the snapshot included. A
replica that falls behind the input's trim (the engine trims behind its snapshots)
reloads the latest snapshot: ``on_step`` then misses the entries in between, and a
reader must resync from the replica's state, as a WebSocket client does from a snapshot.

Costs: the shard's stepping cost, plus one ``GET done`` and one read per batch; idle, one
blocking read on the input log every ``block_ms``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from investo.cluster.engine import ShardEngine, step_entry
from investo.cluster.shards import Shard, Step
from investo.cluster.topology import Role, Topology
from investo.log.base import LogError, LogTrimmedError

StepObserver = Callable[[int, Step], None]  # (input offset, what stepping it caused)


class ShardReplica:
    def __init__(
        self,
        server_url: str,
        topology: Topology,
        role: Role,
        shard: int,
        *,
        on_step: StepObserver | None = None,
        batch: int = 1_000,
        block_ms: int = 200,
    ) -> None:
        self._engine = ShardEngine(server_url, topology, role, shard, batch=batch, block_ms=block_ms)
        self.on_step = on_step

    @property
    def shard(self) -> Shard:
        """The replicated :class:`~investo.cluster.shards.AccountsShard` or ``MatchingShard``."""
        return self._engine.shard

    @property
    def applied(self) -> int:
        return self._engine.applied

    def state_hash(self) -> str:
        return self._engine.shard.state_hash()

    async def start(self) -> None:
        """Load the snapshot; what follows it is stepped by :meth:`catch_up` / :meth:`follow`."""
        await self._engine.load_snapshot()

    async def catch_up(self) -> int:
        """Step everything the engine has published so far; return how many entries."""
        engine = self._engine
        done = await engine.published_up_to()
        stepped = 0
        while engine.applied < done:
            entries = await engine.input.read(engine.applied, min(engine.batch, done - engine.applied))
            if not entries:
                raise RuntimeError(f"the input of {engine!r} ends before its done offset {done}")
            for offset, payload in entries:
                step = step_entry(engine.shard, offset, payload)
                engine.applied = offset
                if self.on_step is not None:
                    self.on_step(offset, step)
            stepped += len(entries)
        return stepped

    async def follow(self, stop: asyncio.Event) -> None:
        """Keep catching up until ``stop``; a lost Redis connection is waited out."""
        engine = self._engine
        while not stop.is_set():
            try:
                if not await self.catch_up():
                    await engine.input.wait_for_entries(engine.applied, engine.block_ms)
                    await asyncio.sleep(0.005)  # entries not published yet: the engine is on them
            except LogTrimmedError:  # fell behind a trim: start again from the latest snapshot
                await self.start()
            except LogError:
                await asyncio.sleep(0.2)

    async def close(self) -> None:
        await self._engine.close()
