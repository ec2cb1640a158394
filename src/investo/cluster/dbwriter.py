"""The DB writer: every shard's output stream into SQL (Postgres), exactly once per entry.

For each output stream (``<ns>:<role>:<shard>:out``) one writer at a time holds a
lease (``…:out:dbwriter-lease``, renewed every third of its life). The holder reads
the stream with the consumer group ``dbwriter`` (``XREADGROUP``), writes what it read
with a :class:`~investo.store.writer.HistoryWriter` named after the stream (one
transaction per batch, written while the next batch is read), and acknowledges
(``XACK``) an entry only once its rows are committed. A writer
that takes over a stream (its previous holder died) first claims the pending entries
the dead one read but never acknowledged (``XAUTOCLAIM``), then goes on with new ones.

Guarantees
----------
* **Idempotent on (stream, offset).** The history writer's watermark for the stream
  is committed in the same transaction as the rows and skips every entry at or below
  it, so an entry written, then claimed again after a crash, is not written twice;
  two writers that briefly both believe they hold a lease cannot both commit
  (compare-and-set on the watermark).
* **Nothing lost.** An entry is acknowledged only once committed; an unacknowledged
  one stays pending in the group until a writer claims it.
* Matching streams give orders, order updates, trades and candles (no ledger rows: a
  trade's row implies what it moved); accounts streams give deposits, withdrawals and
  refusals (an accepted order is not in them: its ``OrderAccepted`` is written from the
  matching stream, which carries every order's whole life).
* SQL keys rows by log offset: entry ``o`` of the stream numbered ``n`` is stored as
  offset ``o * 1024 + n`` (:meth:`~investo.cluster.topology.Topology.stream_number`).
* **Never over a lost stream.** A stream whose counter in Redis is below the SQL
  watermark was lost (Redis restarted without its data): its writer refuses to start
  (:class:`~investo.cluster.rebuild.RedisLost`, logged, retried at the next lease)
  until ``investo cluster rebuild`` restored it; otherwise new entries at offsets SQL
  already holds would be skipped as duplicates. ``start`` saves the cluster's
  configuration in SQL (``cluster_configs``), what such a rebuild starts from.
* Output streams are trimmed behind the watermark, keeping the last ``retain``
  entries for late readers.
* After each commit the new watermark is announced on ``<ns>:dbwriter:written``
  (``"<output prefix> <offset>"``), so gateways waiting to read their writes from SQL
  hear of it at once (at most once: they also poll ``writer_progress``).

Costs: one ``XREADGROUP`` + one ``XACK`` per read of up to ``batch`` entries per
stream, at most one read per ``READ_PAUSE_S`` (10 ms) unless a read came back full (a
trickle of entries would otherwise cost a read per entry, while the rows wait for the
transaction anyway), and one transaction per ``batch`` entries or per ``linger`` (default
50 ms), whichever comes first: larger transactions cost Postgres much less per entry, and
the lag grows by at most ``linger`` plus the pause. Both calls go over a lean connection
per stream (:mod:`investo.log.resp`; redis-py where the URL needs TLS or a Unix socket),
entries are read as hiredis parses them (no dict per entry), and accounts entries
without a deposit or withdrawal are not decoded. Several
writers share the streams between them (one lease per stream; within a process each
stream is written by its own task and its own connection, concurrently).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Sequence
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError
from sqlalchemy.ext.asyncio import AsyncEngine

from investo.cluster import history
from investo.cluster import topology as topo
from investo.cluster.rebuild import RedisLost
from investo.cluster.records import OUTPUT_DECODER
from investo.cluster.topology import Role, Topology
from investo.core.messages import (
    Deposited,
    DepositRejected,
    Event,
    OrderRejected,
    Withdrawn,
    WithdrawRejected,
)
from investo.log.redis import RedisLog
from investo.log.resp import RespConnection, hot_connection
from investo.store.migrate import open_migrated
from investo.store.writer import HistoryWriter, WriterStats
from investo.tasks import cancel_and_wait

log = logging.getLogger(__name__)

GROUP = "dbwriter"
READ_BLOCK_MS = 200  # an idle read waits this long for entries, then the loop checks for stop
READ_PAUSE_S = 0.01  # after a read that was not full: gather entries for the next one

# KEYS: lease. ARGV: holder, lease ms. Renews the lease only for its holder.
_RENEW = """#!lua
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: lease. ARGV: holder. Gives the lease up only if held.
_RELEASE = """#!lua
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class _Entry(NamedTuple):
    """One read entry as the history writer takes it (a tuple: cheaper to make than a frozen dataclass)."""

    offset: int
    events: Sequence[Event]


_ACCOUNTS_ROWS = (Deposited, Withdrawn, DepositRejected, WithdrawRejected, OrderRejected)
"""What an accounts stream's entries give the history: ledger rows (deposits and withdrawals),
and the shard's event seq (rejections carry it too; ``engine_seqs`` keeps it for a rebuild from SQL)."""


def _may_hold_accounts_rows(payload: bytes) -> bool:
    """False only if the encoded entry holds none of :data:`_ACCOUNTS_ROWS` (their tags are absent).

    Engines no longer publish accepted orders to accounts streams (the matching stream has
    them), but a stream written before that holds mostly ``OrderAccepted`` entries: a
    substring test skips decoding those. A false positive (the tag inside a client order
    id) is only decoded and filtered like any other entry.
    """
    return b"Deposited" in payload or b"Withdrawn" in payload or b"Rejected" in payload


def _read_rows(found: Any) -> list[tuple[bytes, bytes | None]]:
    """``(entry id, payload)`` from a raw XREADGROUP answer on one stream.

    RESP3 gives ``{stream: [[id, [b"p", payload]], ...]}``, RESP2 ``[[stream, [...]]]``.
    """
    rows = next(iter(found.values())) if isinstance(found, dict) else found[0][1]
    return [(entry_id, fields[1] if fields else None) for entry_id, fields in rows]


class StreamWriter:
    """Writes one output stream while this process holds its lease."""

    def __init__(
        self,
        client: aioredis.Redis,
        out: RedisLog,
        role: Role,
        stream_number: int,
        history: HistoryWriter,
        consumer: str,
        *,
        batch: int = 5_000,
        retain: int = 100_000,
        announce_channel: str = "",
        hot: RespConnection | None = None,
    ) -> None:
        self.client = client
        self.hot = hot  # reads and acknowledgements, where the lean connection is supported
        self.out = out
        self.role = role
        self.stream_number = stream_number
        self.history = history
        self.consumer = consumer
        self.batch = batch
        self.retain = retain
        self.key = out.stream_key
        self._unacknowledged: deque[tuple[int, list[Any]]] = deque()  # (SQL offset, entry ids) in read order
        self._acks = 0
        self.announce_channel = announce_channel
        self._committed = asyncio.Event()

    @property
    def written(self) -> int:
        """The stream's last offset committed to SQL."""
        return self.history.durable_offset // topo.STREAMS_PER_OFFSET

    async def run(self, stop: asyncio.Event) -> None:
        with contextlib.suppress(ResponseError):  # BUSYGROUP: the group exists
            await self.client.xgroup_create(self.key, GROUP, id="0", mkstream=True)
        await self.history.load_progress()
        in_redis = await self.out.last_offset()
        if in_redis < self.written:
            raise RedisLost(
                f"{self.key} is at offset {in_redis} but SQL holds it up to {self.written}: "
                "Redis lost the cluster; rebuild it (`investo cluster rebuild`) before writing on"
            )
        self.history.on_durable = lambda _: self._committed.set()
        self.history.start()
        announcer = asyncio.create_task(self._announce(), name=f"announce-{self.key}")
        try:
            await self._claim_pending()
            while not stop.is_set():
                found = await self._read_new()
                if found:
                    rows = _read_rows(found)
                    await self._write(rows)
                    if len(rows) < self.batch:
                        await asyncio.sleep(READ_PAUSE_S)
                await self._acknowledge_committed()
        finally:
            await self.history.stop()
            await cancel_and_wait(announcer)
        await self._acknowledge_committed()  # what the final flush committed

    async def _read_new(self) -> Any:
        """Up to ``batch`` entries never delivered to the group, as hiredis parses them (None: none came)."""
        if self.hot is None:
            return await self.client.xreadgroup(
                GROUP, self.consumer, {self.key: ">"}, self.batch, block=READ_BLOCK_MS
            )
        return await self.hot.call(
            "XREADGROUP", "GROUP", GROUP, self.consumer, "COUNT", self.batch,
            "BLOCK", READ_BLOCK_MS, "STREAMS", self.key, ">",
        )  # fmt: skip

    async def _announce(self) -> None:
        """Publish the watermark after commits (coalesced: the latest one when Redis is free)."""
        if not self.announce_channel:
            return
        prefix = self.out.prefix
        announced = -1
        while True:
            await self._committed.wait()
            self._committed.clear()
            written = self.written
            if written != announced:
                try:
                    await self.client.publish(self.announce_channel, f"{prefix} {written}")
                    announced = written
                except RedisError as exc:  # at most once anyway: gateways poll SQL as well
                    log.debug("announcing %s at %d failed: %s", prefix, written, exc)

    async def _claim_pending(self) -> None:
        """Take over what a dead writer read but never acknowledged."""
        cursor: Any = "0-0"
        while True:
            answer = await self.client.xautoclaim(self.key, GROUP, self.consumer, 0, cursor, count=self.batch)
            cursor, rows = answer[0], answer[1]
            if rows:
                await self._write([(entry_id, (fields or {}).get(b"p")) for entry_id, fields in rows])
            if cursor in (b"0-0", "0-0"):
                return

    async def _write(self, rows: list[tuple[bytes, bytes | None]]) -> None:
        """Queue read entries ``(entry id, payload)`` for the history writer; acknowledge the committed."""
        entries = []
        ids = []
        accounts = self.role == "accounts"
        for entry_id, payload in rows:
            ids.append(entry_id)
            if payload is None:
                continue  # trimmed away meanwhile: it was committed before (trims stay behind the watermark)
            offset = int(entry_id[: entry_id.index(b"-")]) * topo.STREAMS_PER_OFFSET + self.stream_number
            if accounts and not _may_hold_accounts_rows(payload):
                entries.append(_Entry(offset, ()))  # nothing to store; still moves the watermark
                continue
            events: Sequence[Event] = OUTPUT_DECODER.decode(payload).events
            if accounts:
                events = [e for e in events if isinstance(e, _ACCOUNTS_ROWS)]
            entries.append(_Entry(offset, events))
        if entries:
            self.history.on_applied(entries)  # written by its own task while we read on
        self._unacknowledged.append((entries[-1].offset if entries else 0, ids))
        if self.history.backlog > 4 * self.batch:  # the database is behind: stop reading a while
            await self.history.wait_for(self._unacknowledged[0][0])
        await self._acknowledge_committed()

    async def _acknowledge_committed(self) -> None:
        """XACK every entry read so far whose rows are committed; now and then trim the stream."""
        durable = self.history.durable_offset
        ids: list[Any] = []
        while self._unacknowledged and self._unacknowledged[0][0] <= durable:
            ids += self._unacknowledged.popleft()[1]
        if not ids:
            return
        if self.hot is None:
            await self.client.xack(self.key, GROUP, *ids)
        else:
            await self.hot.call("XACK", self.key, GROUP, *ids)
        self._acks += 1
        watermark = self.written
        if self._acks % 16 == 0 and watermark - self.retain > await self.out.first_offset() + self.batch:
            await self.out.trim(watermark - self.retain + 1)


class DbWriter:
    """Holds leases on output streams and runs a :class:`StreamWriter` on each one held."""

    def __init__(
        self,
        redis_url: str,
        database_url: str,
        *,
        writer_id: str | None = None,
        lease_ms: int = 10_000,
        batch: int = 5_000,
        linger_s: float = 0.05,
    ) -> None:
        self.linger_s = linger_s
        self.server_url, self.namespace = topo.split_url(redis_url)
        self.database_url = database_url
        self.writer_id = writer_id or secrets.token_hex(6)
        self.lease_ms = lease_ms
        self.batch = batch
        self.client: aioredis.Redis = aioredis.Redis.from_url(self.server_url)
        # Read entries as hiredis parses them: redis-py's callback builds a dict per entry.
        self.client.set_response_callback("XREADGROUP", lambda response, **_: response)
        self._renew = self.client.register_script(_RENEW)
        self._release = self.client.register_script(_RELEASE)
        self.db: AsyncEngine | None = None
        self.topology: Topology | None = None
        self.writers: dict[str, tuple[StreamWriter, asyncio.Event, asyncio.Task[None]]] = {}
        self.written: dict[str, WriterStats] = {}  # the stats of the streams let go, by prefix

    async def start(self) -> None:
        """Load the shard map and migrate the database, waiting for Redis and the database to be up."""
        self.topology = await topo.load_when_reachable(
            self.client, self.namespace, lambda exc: log.warning("waiting for Redis: %s", exc)
        )
        self.db = await open_migrated(self.database_url)  # the database may be starting too
        await history.save_config(self.db, self.topology)  # what a rebuild into an empty Redis starts from

    async def run(self, stop: asyncio.Event) -> None:
        """Take, keep and use leases until ``stop``; then finish the current batches and let go."""
        try:
            while not stop.is_set():
                try:
                    await self._tend_leases()
                except RedisError as exc:  # Redis restarting: keep what runs, try again later
                    log.warning("db writer %s cannot reach Redis (%s)", self.writer_id, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.lease_ms / 3000)
        finally:
            for key in list(self.writers):
                await self._let_go(key)

    async def durable(self) -> dict[str, int]:
        """The committed watermark of every stream this process writes."""
        return {key: w.written for key, (w, _, _) in self.writers.items()}

    async def close(self) -> None:
        if self.db is not None:
            await self.db.dispose()
        await self.client.aclose()

    async def _tend_leases(self) -> None:
        assert self.topology is not None
        for role, shard in self.topology.every_output():
            prefix = self.topology.output_prefix(role, shard)
            lease = f"{prefix}:dbwriter-lease"
            if prefix in self.writers:
                _, _, task = self.writers[prefix]
                if task.done() or not await self._renew(keys=[lease], args=[self.writer_id, self.lease_ms]):
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        log.error("writer of %s failed: %r", prefix, task.exception())
                    await self._let_go(prefix)
                continue
            if await self.client.set(lease, self.writer_id, nx=True, px=self.lease_ms):
                self._take(role, shard, prefix)

    def _take(self, role: Role, shard: int, prefix: str) -> None:
        assert self.db is not None and self.topology is not None
        out = RedisLog(topo.log_url(self.server_url, prefix))
        history = HistoryWriter(
            self.db, self.topology.markets, name=prefix, max_commands=self.batch, linger_s=self.linger_s
        )
        number = self.topology.stream_number(role, shard)
        writer = StreamWriter(
            self.client, out, role, number, history, self.writer_id, batch=self.batch,
            announce_channel=topo.written_channel(self.namespace), hot=hot_connection(self.server_url),
        )  # fmt: skip
        stop = asyncio.Event()
        task = asyncio.create_task(writer.run(stop), name=f"dbwriter-{prefix}")
        self.writers[prefix] = (writer, stop, task)
        log.info("writer %s took %s", self.writer_id, prefix)

    async def _let_go(self, prefix: str) -> None:
        writer, stop, task = self.writers.pop(prefix)
        stop.set()
        with contextlib.suppress(Exception):
            await task
        self.written[prefix] = writer.history.stats
        with contextlib.suppress(Exception):
            await writer.out.close()
        if writer.hot is not None:
            writer.hot.close()
        with contextlib.suppress(RedisError):  # else the lease just expires
            await self._release(keys=[f"{prefix}:dbwriter-lease"], args=[self.writer_id])
