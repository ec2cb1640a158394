"""How far the DB writers have written each output stream into SQL: read-your-writes for a gateway.

The REST endpoints that read the SQL history (``allOrders``, ``myTrades``, an order by id,
trades, klines, tickers) must see every answer given before the request. An answer is
given after its events are in the shard's output stream, so :meth:`SqlProgress.wait` reads
the output streams' ``next`` (the last entry appended) when the request starts, in one
round trip, and waits until the DB writers' committed watermark of each stream reaches it.

Where the watermarks come from: every DB writer announces ``"<output prefix> <offset>"``
on ``<ns>:dbwriter:written`` after each commit (:mod:`investo.cluster.dbwriter`); this
class hears it through the gateway's subscription (:meth:`SqlProgress.on_announce`).
Pub/sub delivers at most once, so while anybody waits it also reads ``writer_progress``
(the watermarks as committed, the source of truth) every ``poll_s``.

Only the matching shards' streams are waited for: they carry every order, trade and
candle; the accounts streams add only deposit and withdrawal ledger rows, which no
endpoint reads. A wait longer than ``timeout_s`` (no DB writer, Postgres down) raises
:class:`~investo.api.nodes.NotCaughtUp`.

Costs: one ``MGET`` per wait; nothing more when the watermarks are already there, else
one small SQL query per ``poll_s`` for all waiters together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy import Table, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from investo.api.nodes import NotCaughtUp
from investo.cluster import topology as topo
from investo.cluster.topology import Role, Topology
from investo.store.models import WriterProgress
from investo.tasks import cancel_and_wait

log = logging.getLogger(__name__)

_progress = cast(Table, WriterProgress.__table__)


@dataclass
class _Waiter:
    targets: dict[str, int]  # output prefix -> offset to reach
    future: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class SqlProgress:
    """The DB writers' committed watermarks, and waiting for them; see the module docstring."""

    def __init__(
        self,
        client: aioredis.Redis,
        db: AsyncEngine,
        topology: Topology,
        *,
        timeout_s: float = 5.0,
        poll_s: float = 0.05,
    ) -> None:
        self.client = client
        self.db = db
        self.topology = topology
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.written: dict[str, int] = {}  # output prefix -> committed offset (as far as we know)
        self.seen: dict[str, int] = {}  # output prefix -> last offset read from the stream
        self._waiters: list[_Waiter] = []
        self._poller: asyncio.Task[None] | None = None

    def streams_of(self, symbols: Iterable[str]) -> list[tuple[Role, int]]:
        """The output streams holding the history of ``symbols`` (none: every market)."""
        topology = self.topology
        wanted = list(symbols)
        shards = (
            {topology.matching_shard(s) for s in wanted} if wanted else set(range(topology.matching_shards))
        )
        return [("matching", shard) for shard in sorted(s for s in shards if s is not None)]

    def lag(self) -> int:
        """Entries seen in the output streams and not yet known to be in SQL."""
        return sum(max(0, n - self.written.get(prefix, 0)) for prefix, n in self.seen.items())

    # ------------------------------------------------------------------ waiting

    async def wait(self, streams: list[tuple[Role, int]]) -> None:
        """Return once SQL holds every entry the ``streams`` held at the call."""
        prefixes = [self.topology.output_prefix(role, shard) for role, shard in streams]
        try:
            values = await self.client.mget([f"{prefix}:next" for prefix in prefixes])
        except RedisError as exc:
            raise NotCaughtUp(f"the cluster's Redis cannot be reached ({exc}); try again") from exc
        targets: dict[str, int] = {}
        for prefix, value in zip(prefixes, values, strict=True):
            target = int(value or 0)
            self.seen[prefix] = max(self.seen.get(prefix, 0), target)
            if self.written.get(prefix, 0) < target:
                targets[prefix] = target
        if not targets:
            return
        waiter = _Waiter(targets)
        self._waiters.append(waiter)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(), name="sql-progress-poll")
        try:
            async with asyncio.timeout(self.timeout_s):
                await waiter.future
        except TimeoutError:
            late = sorted(p for p, t in targets.items() if self.written.get(p, 0) < t)
            raise NotCaughtUp(
                f"the SQL history is behind on {', '.join(late)} (DB writers down or slow, "
                f"more than {self.timeout_s:g} s); try again"
            ) from None
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def on_announce(self, data: bytes) -> None:
        """A DB writer's ``"<output prefix> <offset>"`` (see the module docstring)."""
        try:
            prefix, _, offset = data.decode().rpartition(" ")
            self.note(prefix, int(offset))
        except (UnicodeDecodeError, ValueError):
            log.warning("a malformed watermark announcement: %r", data[:100])

    def note(self, prefix: str, offset: int) -> None:
        """SQL holds ``prefix`` up to ``offset``: wake whoever waited for that."""
        if offset <= self.written.get(prefix, 0):
            return
        self.written[prefix] = offset
        written = self.written
        for waiter in self._waiters:
            if not waiter.future.done() and all(written.get(p, 0) >= t for p, t in waiter.targets.items()):
                waiter.future.set_result(None)

    async def _poll(self) -> None:
        """Read the committed watermarks from SQL while anybody waits (announcements may be lost)."""
        while True:
            prefixes = {p for w in self._waiters if not w.future.done() for p in w.targets}
            if not prefixes:
                return
            try:
                await self.refresh(prefixes)
            except (SQLAlchemyError, OSError) as exc:
                log.warning("reading the DB writers' progress failed: %s", exc)
                await asyncio.sleep(0.5)
            await asyncio.sleep(self.poll_s)

    async def refresh(self, prefixes: Iterable[str]) -> None:
        """Read the watermarks of ``prefixes`` from ``writer_progress``."""
        c = _progress.c
        async with self.db.connect() as conn:
            rows = await conn.execute(select(c.name, c.log_offset).where(c.name.in_(list(prefixes))))
            for name, offset in rows:
                self.note(str(name), int(offset) // topo.STREAMS_PER_OFFSET)

    async def close(self) -> None:
        await cancel_and_wait(self._poller)
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.cancel()
