"""A shard engine process: an accounts or matching shard over its Redis input log.

Start-up: load the input log's latest snapshot, then replay the input up to
``<shard>:done`` (the last entry whose outputs are already published) without
publishing anything again. Then, in a loop: read up to ``batch`` entries, step each
one (:mod:`investo.cluster.shards`), publish the whole batch's outputs and forwards
with one Lua script, answer the gateways on their reply channels, and every
``snapshot_every`` entries save a snapshot and trim the input behind the previous one.

Invariants
----------
* **Exactly once.** The publish script appends every output and forward of a batch
  and advances ``done`` in one atomic step, and only if ``done`` still holds the
  offset this engine read from (compare-and-set). So an entry's effects are
  published once, whatever crashes; and a second engine started for the same
  shard is *fenced*: its first publish fails and it stops (:class:`Fenced`). A
  publish whose answer is lost (Redis restarting) is retried with the same
  payloads, and counts as done if ``done`` already moved to its end.
* **Deterministic.** State is a pure function of the input log.
* **Answers after durability.** The script PUBLISHes the batch's answers (one message
  per gateway) only after its writes, and only if it writes at all. Redis sends
  every client's output, pub/sub messages included, only after the AOF holds the
  writes of the commands that produced it (``appendfsync always``: the fsync comes
  first, and a socket still sending older output does so behind a write barrier), so
  a gateway never hears of something a crash could undo. A publish retried after a
  lost answer is refused (``done`` moved) and sends nothing twice.
* **Lost state is noticed.** ``done`` only moves forward and the shard's input epoch
  (``<shard>:epoch``, read before the snapshot) changes only when the shard is rebuilt
  from SQL; finding ``done`` behind what this engine published, or another epoch (the
  publish script checks it, and an idle engine both every second), means Redis lost its
  data: the engine stops (:class:`StateLost`) rather than go on from a
  state Redis no longer backs. Started with ``--database`` it then rebuilds the
  cluster from SQL (:mod:`investo.cluster.rebuild`).
* Snapshots are taken only of published state (offset ≤ ``done``), and the input
  is trimmed only behind a snapshot that remains.

Costs: per batch, two round trips: one ``XREAD BLOCK`` (returns at once when
entries wait) and one script call (on the server: one ``XADD`` per output and
forward, one ``PUBLISH`` per gateway answered), both on a lean connection of their own
(:mod:`investo.log.resp`: about half redis-py's client CPU per call, which was most of
an engine's cost per wake-up at a few thousand orders per second); one msgpack decode per input entry,
one encode of each entry's events (its output entry and its answer embed the same
bytes) and one per forward; stepping is the engines' cost; a snapshot serialises the
shard every ``snapshot_every`` entries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from investo.cluster.records import ENCODER, ENVELOPE_DECODER, Envelope
from investo.cluster.shards import AccountsShard, MatchingShard, Shard, Step
from investo.cluster.topology import Role, Topology, log_url, parse_epoch
from investo.log.base import LogError
from investo.log.redis import RedisLog
from investo.log.resp import hot_connection

log = logging.getLogger(__name__)

ReplayProgress = Callable[[int, int], None]
RETRY_S = 0.2  # between attempts while Redis is unreachable
LOST_CHECK_S = 1.0  # an idle engine checks this often that Redis still holds what it published

# KEYS: done, epoch, then (stream, next) per target log (each log once: its counter is read
# once). ARGV: expected done, new done, the epoch the engine loaded under, then per target:
# a count and that many payloads, then the number of answers and that many (channel,
# message) pairs. Checks everything first (the epoch, then done), so a refused call writes
# and sends nothing; appends with the RedisLog layout (stream id "<offset>-0", field p),
# then publishes the answers (Redis sends them after the script's writes are in the AOF).
_PUBLISH = """#!lua
local epoch = redis.call('GET', KEYS[2]) or '0'
if epoch ~= ARGV[3] then
    return redis.error_reply('EPOCH ' .. KEYS[2] .. ' is ' .. epoch .. ', not ' .. ARGV[3])
end
local done = tonumber(redis.call('GET', KEYS[1]) or '0')
if done ~= tonumber(ARGV[1]) then
    return redis.error_reply('FENCED ' .. KEYS[1] .. ' is at ' .. done .. ', not ' .. ARGV[1])
end
local targets = (#KEYS - 2) / 2
local lasts = {}
for j = 1, targets do
    local last = tonumber(redis.call('GET', KEYS[2 * j + 2]) or '0')
    local top = redis.call('XREVRANGE', KEYS[2 * j + 1], '+', '-', 'COUNT', 1)
    if #top > 0 and tonumber(string.match(top[1][1], '^%d+')) > last then
        return redis.error_reply('the stream ' .. KEYS[2 * j + 1] .. ' holds offsets past its counter')
    end
    lasts[j] = last
end
local a = 4
for j = 1, targets do
    local count = tonumber(ARGV[a])
    a = a + 1
    local last = lasts[j]
    for i = 1, count do
        redis.call('XADD', KEYS[2 * j + 1], string.format('%d-0', last + i), 'p', ARGV[a])
        a = a + 1
    end
    redis.call('SET', KEYS[2 * j + 2], string.format('%d', last + count))
end
redis.call('SET', KEYS[1], ARGV[2])
local answers = tonumber(ARGV[a])
for i = 1, answers do
    redis.call('PUBLISH', ARGV[a + 2 * i - 1], ARGV[a + 2 * i])
end
return 1
"""


class Fenced(RuntimeError):
    """Another engine published for this shard: this one must stop."""


class StateLost(RuntimeError):
    """Redis no longer holds what this engine published (``done`` went back): Redis lost its data.

    The engine stops; started again with ``--database`` it rebuilds the cluster from SQL
    (:mod:`investo.cluster.rebuild`).
    """


@dataclass
class EngineStats:
    entries: int = 0
    batches: int = 0
    replies: int = 0
    snapshots: int = 0


def make_shard(topology: Topology, role: Role, shard: int) -> Shard:
    if not 0 <= shard < topology.shard_count(role):
        raise ValueError(f"there is no {role} shard {shard}: the cluster has {topology.shard_count(role)}")
    return AccountsShard(topology, shard) if role == "accounts" else MatchingShard(topology, shard)


class ShardEngine:
    """Runs one shard over its input log; see the module docstring."""

    def __init__(
        self,
        server_url: str,
        topology: Topology,
        role: Role,
        shard: int,
        *,
        batch: int = 512,
        snapshot_every: int = 50_000,
        block_ms: int = 200,
    ) -> None:
        self.topology = topology
        self.role = role
        self.shard_no = shard
        self.shard = make_shard(topology, role, shard)
        self.server_url = server_url
        self.input = RedisLog(log_url(server_url, topology.input_prefix(role, shard)), lean=True)
        # No retries inside redis-py: a publish is retried here, where a retry is known to be one.
        self.client: aioredis.Redis = aioredis.Redis.from_url(server_url, retry=Retry(NoBackoff(), 0))
        self._publish = self.client.register_script(_PUBLISH)
        # The loop's publish skips redis-py's layers where it can (its read does too: ``lean``).
        self._hot = hot_connection(server_url)
        self._done_key = topology.done_key(role, shard)
        self._epoch_key = topology.epoch_key(role, shard)
        self.epoch = 0  # the input epoch the state belongs to (read before the snapshot)
        self._targets: dict[tuple[Role, int], RedisLog] = {}
        self.output = self._target_log(role, shard, output=True)
        self.applied = 0
        self.batch = batch
        self.snapshot_every = snapshot_every
        self.block_ms = block_ms
        self.stats = EngineStats()
        self._since_snapshot = 0
        self._snapshots: list[int] = []
        self.from_snapshot = False  # whether start-up found a snapshot (a rebuilt shard has one at 0)

    def __repr__(self) -> str:
        return f"<ShardEngine {self.role} {self.shard_no} at {self.applied}>"

    # ------------------------------------------------------------------ start-up

    async def load_snapshot(self) -> None:
        """Restore the shard from its input log's latest snapshot, if there is one; note the epoch.

        The epoch is read first: a rebuild between the two reads shows as a changed epoch
        at the next look, never as an old epoch on a new snapshot.
        """
        self.epoch = (await self.published_marks())[1]
        snapshot = await self.input.latest_snapshot()
        if snapshot is not None:
            self.applied, data = snapshot
            self.shard.restore(data)
            self._snapshots = [self.applied]
            self.from_snapshot = True

    async def recover(self, progress: ReplayProgress | None = None, page: int = 5_000) -> int:
        """Load the latest snapshot and replay the published part of the input; return entries replayed."""
        await self.load_snapshot()
        published = int(await self.client.get(self._done_key) or 0)
        if published < self.applied:
            raise RuntimeError(
                f"{self._done_key} is {published} but the snapshot is at {self.applied}: Redis lost writes"
            )
        total = published - self.applied
        replayed = 0
        while self.applied < published:
            entries = await self.input.read(self.applied, min(page, published - self.applied))
            if not entries:
                raise RuntimeError(f"the input log ends before {self._done_key} = {published}")
            for offset, payload in entries:
                step_entry(self.shard, offset, payload)
                self.applied = offset
            replayed += len(entries)
            if progress is not None:
                progress(replayed, total)
        return replayed

    # ------------------------------------------------------------------ running

    async def run(self, stop: asyncio.Event) -> None:
        """Process the input until ``stop`` is set (raises :class:`Fenced` if another engine took over).

        A lost connection to Redis (a restart, a network fault) is waited out: reads are
        retried, and a batch whose publish failed is published again or found published.
        """
        idle_since = time.monotonic()
        while not stop.is_set():
            try:
                entries = await self.input.read_or_wait(self.applied, self.batch, self.block_ms)
                if not entries:
                    if time.monotonic() - idle_since > LOST_CHECK_S:  # does Redis still hold our writes?
                        idle_since = time.monotonic()
                        await self._check_not_lost()
                    continue
            except LogError as exc:
                log.warning("%r cannot read its input (%s); retrying", self, exc)
                await asyncio.sleep(RETRY_S)
                continue
            await self.process(entries)

    async def _check_not_lost(self) -> None:
        done, epoch = await self.published_marks()
        if done < self.applied or epoch != self.epoch:
            raise StateLost(
                f"{self!r}: {self._done_key} is {done}, epoch {epoch} (loaded under {self.epoch}): "
                "Redis lost what this engine published"
            )

    async def process(self, entries: list[tuple[int, bytes]]) -> None:
        """Step, publish and answer one batch read from the input."""
        steps = [(offset, step_entry(self.shard, offset, payload)) for offset, payload in entries]
        keys, args, answers = self.script_call(self.applied, entries[-1][0], steps)
        await self._publish_batch(self.applied, entries[-1][0], keys, args)
        self.applied = entries[-1][0]
        self.stats.replies += answers
        self.stats.entries += len(entries)
        self.stats.batches += 1
        self._since_snapshot += len(entries)
        if self._since_snapshot >= self.snapshot_every:
            await self.try_snapshot()

    async def _publish_batch(
        self, expected: int, new: int, keys: list[str], args: list[int | bytes | str]
    ) -> None:
        """Publish a batch's outputs, forwards and answers with one script call (retried; see the module)."""
        retried = False
        while True:
            try:
                await self._call_publish(keys, args)
                return
            except ResponseError as exc:
                if str(exc).startswith("EPOCH"):  # the shard was rebuilt: this state is not its history
                    raise StateLost(f"{self!r}: {exc}: Redis lost what this engine published") from exc
                if not str(exc).startswith("FENCED"):
                    raise
                done = await self.published_up_to()
                if retried and done == new:
                    return  # our earlier attempt went through; only its answer was lost
                if done < expected:  # done never goes back, unless Redis lost its data
                    raise StateLost(f"{self!r}: {exc}: Redis lost what this engine published") from exc
                raise Fenced(f"{self!r}: {exc}") from exc
            except (RedisConnectionError, RedisTimeoutError) as exc:
                log.warning(
                    "%r: publishing offsets %d-%d failed (%s); retrying", self, expected + 1, new, exc
                )
                retried = True
                await asyncio.sleep(RETRY_S)

    def script_call(
        self, expected: int, new: int, steps: list[tuple[int, Step]]
    ) -> tuple[list[str], list[int | bytes | str], int]:
        """The publish script's keys and arguments for a batch (see ``_PUBLISH``), and its number of answers.

        Each step's events are encoded once: its output entry and its answer embed the same bytes.
        """
        outputs: list[bytes] = []
        forwards: dict[RedisLog, list[bytes]] = {}
        by_channel: dict[str, list[tuple[int, msgspec.Raw]]] = {}
        for offset, step in steps:
            published = bool(step.output) and step.published
            if published or step.reply_to:
                events = msgspec.Raw(ENCODER.encode(step.output))
                if published:
                    outputs.append(ENCODER.encode((offset, events)))  # an Output, array-like
                if step.reply_to:
                    by_channel.setdefault(step.reply_to, []).append((step.corr, events))  # a Reply
            for role, shard, envelope in step.forwards:
                forwards.setdefault(self._target_log(role, shard), []).append(ENCODER.encode(envelope))
        payloads = {self.output: outputs, **forwards} if outputs else forwards
        keys: list[str] = [self._done_key, self._epoch_key]
        args: list[int | bytes | str] = [expected, new, str(self.epoch)]
        for target, batch in payloads.items():
            keys += [target.stream_key, target.next_key]
            args += [len(batch), *batch]
        args.append(len(by_channel))
        for channel, replies in by_channel.items():
            args += [channel, ENCODER.encode(replies)]
        return keys, args, sum(map(len, by_channel.values()))

    async def _call_publish(self, keys: list[str], args: list[int | bytes | str]) -> None:
        if self._hot is None:
            await self._publish(keys=keys, args=args)
        else:
            await self._hot.evalsha(self._publish.sha, _PUBLISH, keys, args)

    async def published_up_to(self) -> int:
        """``done`` as Redis holds it, waiting out a lost connection."""
        while True:
            try:
                return int(await self.client.get(self._done_key) or 0)
            except (RedisConnectionError, RedisTimeoutError):
                await asyncio.sleep(RETRY_S)

    async def published_marks(self) -> tuple[int, int]:
        """``done`` and the input epoch in one round trip (``MGET``), waiting out a lost connection."""
        while True:
            try:
                done, epoch = await self.client.mget([self._done_key, self._epoch_key])
                return int(done or 0), parse_epoch(epoch)
            except (RedisConnectionError, RedisTimeoutError):
                await asyncio.sleep(RETRY_S)

    def _target_log(self, role: Role, shard: int, *, output: bool = False) -> RedisLog:
        key = (role, shard) if not output else (role, -1 - shard)
        found = self._targets.get(key)
        if found is None:
            prefix = (
                self.topology.output_prefix(role, shard)
                if output
                else self.topology.input_prefix(role, shard)
            )
            found = self._targets[key] = RedisLog(log_url(self.server_url, prefix))
        return found

    # ------------------------------------------------------------------ snapshots

    async def save_snapshot(self) -> None:
        """Snapshot the (published) state at ``applied``; trim the input behind the previous snapshot."""
        if self.applied == 0 or (self._snapshots and self._snapshots[-1] == self.applied):
            return
        await self.input.save_snapshot(self.applied, self.shard.snapshot())
        self._snapshots.append(self.applied)
        if len(self._snapshots) >= 2:
            await self.input.trim(self._snapshots[-2] + 1)
            self._snapshots = self._snapshots[-2:]
        self._since_snapshot = 0
        self.stats.snapshots += 1

    async def try_snapshot(self) -> None:
        """:meth:`save_snapshot`, where a failure does no harm: recovery replays from the previous
        snapshot, and the next batch (or the next start) tries again."""
        try:
            await self.save_snapshot()
        except LogError as exc:
            log.warning("%r: snapshot failed (%s)", self, exc)

    async def write_status(self) -> None:
        """Record ``applied`` and the state hash under ``<shard>:status`` (for operators and tests)."""
        status: dict[bytes | bytearray | memoryview[int] | str | int | float, bytes | str | int] = {
            "applied": self.applied,
            "state_hash": self.shard.state_hash(),
            "at_ms": time.time_ns() // 10**6,
        }
        key = f"{self.topology.input_prefix(self.role, self.shard_no)}:status"
        try:
            await self.client.hset(key, mapping=status)
        except (RedisConnectionError, RedisTimeoutError):  # a connection Redis dropped (a restart)
            await self.client.hset(key, mapping=status)  # redis-py reconnects: once more (idempotent)

    async def close(self) -> None:
        for target in self._targets.values():
            await target.close()
        await self.input.close()
        await self.client.aclose()
        if self._hot is not None:
            self._hot.close()


def decode_entry(offset: int, payload: bytes) -> Envelope | None:
    """An input entry's envelope; None for one that does not decode (skipped the same way on every replay)."""
    try:
        return ENVELOPE_DECODER.decode(payload)
    except msgspec.DecodeError as exc:
        log.error("input entry %d does not decode (%s): skipped", offset, exc)
        return None


def step_entry(shard: Shard, offset: int, payload: bytes) -> Step:
    """Step one input entry (see :func:`decode_entry`)."""
    envelope = decode_entry(offset, payload)
    return Step() if envelope is None else shard.step(envelope)
