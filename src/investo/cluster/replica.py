"""A read-only replica of one shard: the same state as the running engine, for reads and witnesses.

A replica loads the shard's latest snapshot and steps the shard's input log with the same
deterministic code as the engine, but only up to ``<shard>:done`` (what the engine has
published) and without publishing anything. Gateways use replicas of the matching shards
for books and of the accounts shards for balances (:mod:`investo.cluster.view`); a replica
is also a second witness of the engine's state (same input, same state hash).

Invariants: a replica never writes to Redis; it is never ahead of the engine's published
state (``applied <= done``); after catching up its state hash is the engine's at that
offset. ``on_batch`` sees every stepped entry in input order, as ``(offset, envelope,
step)`` with the events the engine published for it (``step.output``), a read batch at a
time, replays from the snapshot included. A replica that falls behind the input's trim
(the engine trims behind its snapshots) reloads the latest snapshot and calls
``on_reload``: ``on_batch`` then misses the entries in between, and a reader must resync
from the replica's state, as a WebSocket client does from a snapshot.

Input epochs
------------
If Redis loses the cluster, ``investo cluster rebuild`` (:mod:`investo.cluster.rebuild`)
saves each shard's state at input offset 0 and writes a new epoch under
``<shard>:epoch`` (:mod:`investo.cluster.topology`): the same offsets then name other
entries. A replica remembers the epoch it loaded its snapshot under (:attr:`epoch`, read
before the snapshot) and reads the current one with ``done``, in the same ``MGET``, at
every look (:meth:`catch_up`; :meth:`ClusterView.sync <investo.cluster.view.ClusterView.sync>`
does the same for its reads and waits in :meth:`wait_epoch`). Another epoch, or ``done``
behind what it stepped, means its state is not the shard's history any more: it keeps
that state while the shard has no snapshot within ``done`` (Redis lost it, not rebuilt
yet), then reloads from the latest snapshot and calls ``on_reload``. So a replica never
takes a rebuilt shard's offsets for a continuation of what it stepped, however far the
rebuilt engine has gone before it looks.

:meth:`ShardReplica.wait_applied` lets a reader wait until the replica has stepped a given
offset (read-your-writes: the offset is read from Redis when the read starts).

Eager or lazy
-------------
A replica whose ``wanted`` callable says False (a gateway with no user stream open) is
*lazy*: it steps nothing until a reader waits for it (:meth:`wait_applied`), then catches
up to what the engine has published, and rests again once no reader waits. Its shard's
stepping then costs this process nothing while nobody reads: a second gateway adds HTTP
capacity, not a second copy of every engine's work. A lazy replica may fall behind the
input's trim; the next read then reloads the latest snapshot (as above) instead of
stepping the whole backlog, and one ``skip_after`` entries or more behind restores the
latest snapshot if it is newer than what it stepped (``on_reload`` is called in both cases, as
``on_batch`` missed entries). It checks ``wanted`` again every ``lazy_check_s``, so it
turns eager within that time (:meth:`poke` makes it look at once). ``wanted`` defaults
to always (eager), as a witness needs.

A lazy replica may rest for long while its shard is lost and rebuilt, and the rebuilt
engine may publish far past the offset it rested at: ``done`` alone cannot tell it. The
epoch can: the reader's sync (:meth:`wait_epoch`) and the replica's own catch-up read it
with ``done``, so the first read after a rebuild reloads the rebuilt snapshot before it
is answered (see Input epochs).

Costs: the shard's stepping cost, plus one ``MGET done epoch`` and one read per batch; idle,
one blocking read on the input log every ``block_ms``; busy, about one ``MGET`` and one read
every ``poll_s`` (or sooner when :meth:`poke`\\ d: a reader never waits for the
poll), whatever the load, so the cost per entry falls as the load grows. Lazy and unread:
nothing but a timer every ``lazy_check_s``. A catch-up steps ``batch`` entries between two
reads of the log, so a long one lets the event loop run other tasks between batches.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable

from investo.cluster.engine import ShardEngine, decode_entry, make_shard
from investo.cluster.records import Envelope
from investo.cluster.shards import Shard, Step
from investo.cluster.topology import Role, Topology
from investo.log.base import LogError, LogTrimmedError

Stepped = tuple[int, Envelope | None, Step]  # (input offset, the entry (None: undecodable), what it caused)
BatchObserver = Callable[[list[Stepped]], None]


class ShardRewound(RuntimeError):
    """The shard's ``done`` is behind what the replica stepped, or its epoch changed: Redis lost
    the shard's state (and it may have been rebuilt from SQL)."""


class ShardReplica:
    def __init__(
        self,
        server_url: str,
        topology: Topology,
        role: Role,
        shard: int,
        *,
        on_batch: BatchObserver | None = None,
        on_reload: Callable[[], None] | None = None,
        batch: int = 1_000,
        block_ms: int = 200,
        poll_s: float = 0.005,
        wanted: Callable[[], bool] = lambda: True,
        lazy_check_s: float = 0.25,
        skip_after: int = 5_000,
    ) -> None:
        self._engine = ShardEngine(server_url, topology, role, shard, batch=batch, block_ms=block_ms)
        self.role = role
        self.shard_no = shard
        self.on_batch = on_batch
        self.on_reload = on_reload
        self.poll_s = poll_s
        self.wanted = wanted  # False: lazy (step only for a waiting reader); see the module docstring
        self.lazy_check_s = lazy_check_s
        self.skip_after = skip_after  # lazy and this far behind: a newer snapshot beats stepping
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []  # a heap by offset
        self._waiter_seq = itertools.count()
        self._poked = asyncio.Event()
        self._rewound = False  # done went behind applied or the epoch changed: reload once rebuilt
        self._reloads: list[asyncio.Future[None]] = []  # readers waiting for the next reload

    def __repr__(self) -> str:
        return f"<ShardReplica {self.role} {self.shard_no} at {self.applied}>"

    @property
    def shard(self) -> Shard:
        """The replicated :class:`~investo.cluster.shards.AccountsShard` or ``MatchingShard``."""
        return self._engine.shard

    @property
    def applied(self) -> int:
        return self._engine.applied

    @property
    def epoch(self) -> int:
        """The input epoch the replica's state belongs to (see the module docstring)."""
        return self._engine.epoch

    def state_hash(self) -> str:
        return self._engine.shard.state_hash()

    async def start(self) -> None:
        """Load the snapshot; what follows it is stepped by :meth:`catch_up` / :meth:`follow`."""
        await self._engine.load_snapshot()
        self._resolve_waiters()

    async def catch_up(self) -> int:
        """Step everything the engine has published so far; return how many entries."""
        engine = self._engine
        done = await self._published()
        if done < engine.applied:
            raise ShardRewound(f"{engine!r}: done is {done}")
        stepped = 0
        while engine.applied < done:
            entries = await engine.input.read(engine.applied, min(engine.batch, done - engine.applied))
            if not entries:
                raise RuntimeError(f"the input of {engine!r} ends before its done offset {done}")
            batch: list[Stepped] = []
            for offset, payload in entries:
                envelope = decode_entry(offset, payload)
                step = Step() if envelope is None else engine.shard.step(envelope)
                engine.applied = offset
                batch.append((offset, envelope, step))
            stepped += len(entries)
            if self.on_batch is not None:
                self.on_batch(batch)
            self._resolve_waiters()
        return stepped

    async def follow(self, stop: asyncio.Event) -> None:
        """Keep catching up until ``stop``; a lost Redis connection is waited out."""
        engine = self._engine
        while not stop.is_set():
            try:
                if self._rewound:
                    await self._reload_rebuilt()
                    continue
                if not self.wanted():
                    if not self._waiters:
                        await self._pause(self.lazy_check_s)  # lazy: a waiting reader pokes
                        continue
                    await self._skip_ahead()
                if await self.catch_up():
                    await self._pause()  # busy: more comes within poll_s (a reader pokes sooner)
                else:
                    await engine.input.wait_for_entries(engine.applied, engine.block_ms)
                    await self._pause()  # entries not published yet: the engine is on them
            except LogTrimmedError:  # fell behind a trim: start again from the latest snapshot
                await self._reload()
            except ShardRewound:
                self._rewound = True
            except LogError:
                await asyncio.sleep(0.2)

    async def _published(self) -> int:
        """The shard's ``done``; :class:`ShardRewound` if its epoch is not the replica's (rebuilt)."""
        engine = self._engine
        done, epoch = await engine.published_marks()
        if epoch != engine.epoch:
            raise ShardRewound(f"{engine!r}: the epoch is {epoch}, not {engine.epoch}: the shard was rebuilt")
        return done

    async def _skip_ahead(self) -> None:
        """Lazy and ``skip_after`` entries behind: restore the latest snapshot if it is ahead."""
        engine = self._engine
        done = await self._published()
        if done - engine.applied < self.skip_after:
            return
        snapshot = await engine.input.latest_snapshot()
        if snapshot is None or not engine.applied < snapshot[0] <= done:
            return
        engine.applied, data = snapshot
        engine.shard.restore(data)
        self._resolve_waiters()
        if self.on_reload is not None:
            self.on_reload()  # on_batch missed the entries skipped

    async def _reload_rebuilt(self) -> None:
        """After Redis lost the shard: once it is rebuilt (a snapshot within ``done``), start from it."""
        engine = self._engine
        snapshot = await engine.input.latest_snapshot()
        if snapshot is None or snapshot[0] > await engine.published_up_to():
            await self._pause(0.2)  # not rebuilt yet (investo cluster rebuild): keep the old state
            return
        await self._reload()

    async def _reload(self) -> None:
        """Start again from the latest snapshot (under the current epoch); tell ``on_reload``."""
        engine = self._engine
        engine.shard = make_shard(engine.topology, engine.role, engine.shard_no)
        engine.applied = 0
        await self.start()
        self._rewound = False
        reloads, self._reloads = self._reloads, []
        for future in reloads:
            if not future.done():
                future.set_result(None)
        if self.on_reload is not None:
            self.on_reload()

    async def _pause(self, seconds: float | None = None) -> None:
        """Wait ``seconds`` (default ``poll_s``) or until poked."""
        self._poked.clear()
        try:
            async with asyncio.timeout(self.poll_s if seconds is None else seconds):
                await self._poked.wait()
        except TimeoutError:
            pass

    def poke(self) -> None:
        """Look at ``done`` again now (a reader waits for an offset the engine may have published)."""
        self._poked.set()

    async def wait_applied(self, offset: int) -> None:
        """Return once the replica has stepped ``offset`` (at once if it has)."""
        if self._engine.applied >= offset:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (offset, next(self._waiter_seq), future))
        self.poke()
        await future

    async def wait_epoch(self, epoch: int) -> None:
        """Return once the replica's state belongs to ``epoch``, the shard's as a reader just read it.

        A replica under another epoch reloads (see the module docstring); this returns after
        its next reload, which reads the epoch again (so a newer one than ``epoch`` counts).
        """
        if self._engine.epoch == epoch:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reloads.append(future)
        self._rewound = True
        self.poke()
        await future

    def _resolve_waiters(self) -> None:
        waiters = self._waiters
        applied = self._engine.applied
        while waiters and waiters[0][0] <= applied:
            future = heapq.heappop(waiters)[2]
            if not future.done():
                future.set_result(None)

    async def close(self) -> None:
        for _, _, future in self._waiters:
            future.cancel()
        self._waiters.clear()
        for future in self._reloads:
            future.cancel()
        self._reloads.clear()
        await self._engine.close()
