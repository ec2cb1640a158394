"""The Redis Streams Log: the shared log of the distributed mode (``redis://host:port/db?prefix=name``).

Storage (every key starts with ``<prefix>``, default ``investo``)
----------------------------------------------------------------
* ``<prefix>:log``: a stream holding the entries. Each entry has the explicit stream id
  ``<offset>-0`` and one field ``p`` with the payload, so stream ids are log offsets.
* ``<prefix>:next``: the last offset assigned (absent = 0); the next append starts one
  above it. Only the append script writes it, and a trim never lowers it, so offsets
  are never reused, not even after trimming everything.
* ``<prefix>:first``: the oldest offset still held (absent = 1), written by trim. When
  the log holds nothing it equals ``next + 1``.
* ``<prefix>:snapshots``: a hash ``offset -> data`` holding the latest
  ``keep_snapshots`` by offset.

Every operation that touches more than one key is one Lua script (append,
append_unless_marked, trim, save_snapshot, latest_snapshot) or one MULTI/EXEC (read), so
it is atomic on the server: batches from any number of coroutines or processes get consecutive offsets and
never interleave, and a reader sees a batch whole or not at all. The scripts check
their preconditions before writing anything, so a refused call stores nothing. On a
Redis Cluster the keys must share a slot: use a hash-tagged prefix (``?prefix={name}``).

Server requirements: Redis 7.0 or later (script flags; ``XTRIM MINID`` needs 6.2), and
``maxmemory-policy noeviction``: an evicted ``<prefix>:next`` would make appends
refuse (the append script will not reuse offsets still in the stream), and an evicted
stream would lose entries.

Durability
----------
An append returns when Redis has executed the script; whether it survives a crash is
the server's configuration, not this client's. Only AOF with ``appendfsync always``
fsyncs before replying (Redis groups the fsync of every client served in the same
event-loop turn, so concurrent appenders share it); with ``everysec`` up to a second
of acknowledged appends can be lost, and a server without persistence loses
everything on restart. Redis writes a script's effects to the AOF and to replicas as
one MULTI/EXEC, so a batch is recovered whole or not at all. Replication is
asynchronous: a failover to a replica can lose acknowledged appends. As with every
Log, a failed or cancelled append (connection lost, timeout) means "status unknown":
the client never retries a command by itself, since a retried append could store the
batch twice.

Connections
-----------
``RedisLog(url)`` does not connect: the first operation does, and an unreachable
server surfaces there as :class:`LogError`. Each concurrent operation borrows a
connection from redis-py's pool. ``close`` waits for the operations already started,
then closes the pool.

Costs (n entries held, k per call, s snapshots kept, R = one round trip)
------------------------------------------------------------------------
* ``append``: O(k) on the server + R (+ the server's fsync under ``always``); the
  whole batch travels in one script call. ``append_unless_marked``: the same, plus one
  ``SET NX`` per marked entry in the same script.
* ``read``: O(log n + k) + R. ``last_offset`` / ``first_offset``: O(1) + R.
* ``trim``: O(k) for k entries dropped + R (exact ``XTRIM MINID``).
* ``save_snapshot``: O(s log s) + the data size + R; ``latest_snapshot``: O(s) + R.
* Memory: every entry held lives in the server's RAM; trim is what frees it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from investo.log.base import (
    DEFAULT_KEEP_SNAPSHOTS,
    Entry,
    Log,
    LogError,
    check_snapshot_offset,
    check_trim,
)
from investo.log.resp import hot_connection

DEFAULT_PREFIX = "investo"
_CONNECT_TIMEOUT_S = 5.0  # the URL may override (?socket_connect_timeout=...)
_SOCKET_TIMEOUT_S = 30.0  # ditto (?socket_timeout=...); a timed-out append is "status unknown"

# The ``#!lua`` line (Redis 7+) makes Redis refuse a writing script up front when it is
# out of memory, instead of failing one of its writes half-way.

# KEYS: log, next. ARGV: the payloads. Returns the first offset of the batch. Refuses
# (writing nothing) if the stream already holds offsets past ``next``, as it would if
# ``next`` were lost: appending then would reuse offsets.
# Offsets are formatted with %d: Lua's default number format switches to exponents at 1e14.
_LAST_OFFSET_CHECKED = """
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #top > 0 and tonumber(string.match(top[1][1], '^%d+')) > last then
    return redis.error_reply(
        'the stream ' .. KEYS[1] .. ' holds offsets past ' .. KEYS[2] .. ': refusing to reuse them')
end
"""
_APPEND = (
    "#!lua"
    + _LAST_OFFSET_CHECKED
    + """
for i = 1, #ARGV do
    redis.call('XADD', KEYS[1], string.format('%d-0', last + i), 'p', ARGV[i])
end
redis.call('SET', KEYS[2], string.format('%d', last + #ARGV))
return last + 1
"""
)

# KEYS: log, next, then the marks. ARGV: three per entry: the payload, its mark's index in
# KEYS (0: none), the mark's time to live in ms. An entry with a mark is appended only if
# ``SET mark 1 NX PX ttl`` sets it (the mark is new). Returns each entry's offset, 0 where
# refused. Checks ``next`` as _APPEND does, before writing anything.
_APPEND_UNLESS_MARKED = (
    "#!lua"
    + _LAST_OFFSET_CHECKED
    + """
local offset = last
local offsets = {}
for i = 1, #ARGV, 3 do
    local mark = tonumber(ARGV[i + 1])
    if mark == 0 or redis.call('SET', KEYS[mark], '1', 'NX', 'PX', ARGV[i + 2]) then
        offset = offset + 1
        redis.call('XADD', KEYS[1], string.format('%d-0', offset), 'p', ARGV[i])
        offsets[#offsets + 1] = offset
    else
        offsets[#offsets + 1] = 0
    end
end
if offset > last then
    redis.call('SET', KEYS[2], string.format('%d', offset))
end
return offsets
"""
)

# KEYS: log, next, first. ARGV: before. Returns {done (0/1), last offset}.
_TRIM = """#!lua
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local before = tonumber(ARGV[1])
if before > last + 1 then
    return {0, last}
end
local first = tonumber(redis.call('GET', KEYS[3]) or '1')
if before > first then
    redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-0', before))
    redis.call('SET', KEYS[3], string.format('%d', before))
end
return {1, last}
"""

# KEYS: next, snapshots. ARGV: offset, data, keep. Returns {done (0/1), last offset}.
_SAVE_SNAPSHOT = """#!lua
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local offset = tonumber(ARGV[1])
if offset > last then
    return {0, last}
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local offsets = redis.call('HKEYS', KEYS[2])
local keep = tonumber(ARGV[3])
if #offsets > keep then
    table.sort(offsets, function(a, b) return tonumber(a) > tonumber(b) end)
    for i = keep + 1, #offsets do
        redis.call('HDEL', KEYS[2], offsets[i])
    end
end
return {1, last}
"""

# KEYS: snapshots. Returns {} or {offset, data}.
_LATEST_SNAPSHOT = """#!lua flags=no-writes
local offsets = redis.call('HKEYS', KEYS[1])
if #offsets == 0 then
    return {}
end
local best = offsets[1]
for i = 2, #offsets do
    if tonumber(offsets[i]) > tonumber(best) then
        best = offsets[i]
    end
end
return {best, redis.call('HGET', KEYS[1], best)}
"""

T = TypeVar("T")
MarkedEntry = tuple[bytes, str | None, int]  # (payload, mark key or None, the mark's ttl in ms)


class RedisLog(Log):
    """A Log in one Redis stream plus three small keys; see the module docstring."""

    def __init__(self, url: str, *, keep_snapshots: int = DEFAULT_KEEP_SNAPSHOTS, lean: bool = False) -> None:
        """``lean``: the hot calls, :meth:`read_or_wait` (an engine's) and
        :meth:`append_unless_marked` (a gateway's), run on a lean connection of their own
        (:mod:`investo.log.resp`), for a process that makes them per batch or per request."""
        super().__init__(keep_snapshots=keep_snapshots)
        server_url, self.prefix = parse_redis_url(url)
        self._server = redacted(server_url)
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            server_url,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=_CONNECT_TIMEOUT_S,
            socket_timeout=_SOCKET_TIMEOUT_S,
        )
        # Stream replies as hiredis parses them ([[id, [field, value]], ...]): redis-py's
        # default callbacks build a dict per entry, which cost more than the rest of a read.
        for command in ("XRANGE", "XREAD"):
            self._client.set_response_callback(command, _raw)
        self._log_key = f"{self.prefix}:log"
        self._next_key = f"{self.prefix}:next"
        self._first_key = f"{self.prefix}:first"
        self._snapshots_key = f"{self.prefix}:snapshots"
        self._append_script = self._client.register_script(_APPEND)
        self._append_unless_marked_script = self._client.register_script(_APPEND_UNLESS_MARKED)
        self._trim_script = self._client.register_script(_TRIM)
        self._save_snapshot_script = self._client.register_script(_SAVE_SNAPSHOT)
        self._latest_snapshot_script = self._client.register_script(_LATEST_SNAPSHOT)
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        # The hot calls (read_or_wait, append_unless_marked) skip redis-py's layers where they can.
        self._hot = hot_connection(server_url, timeout_s=_SOCKET_TIMEOUT_S) if lean else None

    def __repr__(self) -> str:
        return f"<RedisLog {self._server} prefix={self.prefix!r}>"

    @property
    def stream_key(self) -> str:
        """The Redis stream holding the entries (stream id ``<offset>-0``, field ``p``)."""
        return self._log_key

    @property
    def next_key(self) -> str:
        """The key holding the last offset assigned (for scripts that append atomically)."""
        return self._next_key

    async def wait_for_entries(self, after: int, timeout_ms: int) -> bool:
        """Block until the log holds an entry past ``after`` or ``timeout_ms`` passes.

        One ``XREAD BLOCK`` round trip; returns whether an entry is there. Read it with
        :meth:`read`, which also reports a trimmed position.
        """
        self._check_open()
        found = await self._run(self._client.xread({self._log_key: f"{after}-0"}, count=1, block=timeout_ms))
        return bool(found)

    async def read_or_wait(self, after: int, limit: int, timeout_ms: int) -> list[Entry]:
        """Up to ``limit`` entries after ``after``, waiting at most ``timeout_ms`` for the first one.

        One ``XREAD BLOCK`` round trip, which returns at once when entries are there: a
        reader that keeps up costs one command per batch instead of a read and a wait.
        Returns ``[]`` on timeout; raises :class:`LogTrimmedError` as :meth:`read` does.
        """
        self._check_open()
        if after < 0 or limit < 1 or timeout_ms < 1:
            raise ValueError(f"need after >= 0, limit, timeout_ms >= 1; got {after}, {limit}, {timeout_ms}")
        key = self._log_key
        call: Awaitable[Any]
        if self._hot is not None:
            call = self._hot.call("XREAD", "COUNT", limit, "BLOCK", timeout_ms, "STREAMS", key, f"{after}-0")
        else:
            call = self._client.xread({key: f"{after}-0"}, count=limit, block=timeout_ms)
        found: Any = await self._run(call)
        if not found:
            return []
        # raw: RESP3 {stream: [[id, [b"p", payload]], ...]}, RESP2 [[stream, [...]]]
        entries = stream_entries(next(iter(found.values())) if isinstance(found, dict) else found[0][1])
        if entries[0][0] != after + 1:  # a gap: entries were trimmed; read() says so
            return await self.read(after, limit)
        return entries

    async def append_unless_marked(self, entries: Sequence[MarkedEntry]) -> list[int]:
        """Append each entry whose mark is new; return each one's offset, 0 where it was refused.

        An entry is ``(payload, mark, ttl_ms)``: with a ``mark`` (a Redis key), the entry is
        stored only if ``SET mark 1 NX PX ttl_ms`` sets it, in the same script: a request
        marked on any client of the server is stored once, in one round trip. ``mark`` None:
        stored as :meth:`append` would. The stored entries take consecutive offsets, in order.
        """
        self._check_open()
        keys = [self._log_key, self._next_key]
        args: list[bytes | str | int] = []
        for payload, mark, ttl_ms in entries:
            if not isinstance(payload, bytes):
                raise TypeError(f"a payload must be bytes, got {type(payload).__name__}")
            if mark is None:
                args += (payload, 0, 0)
            else:
                keys.append(mark)
                args += (payload, len(keys), max(ttl_ms, 1))
        if not args:
            return []
        script = self._append_unless_marked_script
        if self._hot is not None:
            call = self._hot.evalsha(script.sha, _APPEND_UNLESS_MARKED, keys, args)
        else:
            call = script(keys=keys, args=args)
        offsets: Any = await self._run(call)
        return [int(offset) for offset in offsets]

    async def _append(self, batch: list[bytes]) -> int:
        first = await self._run(self._append_script(keys=[self._log_key, self._next_key], args=batch))
        return int(first)

    async def _read(self, after: int, limit: int) -> tuple[int, list[Entry]]:
        rows: Any = await self._run(self._client.xrange(self._log_key, min=f"{after + 1}-0", count=limit))
        entries = stream_entries(rows)
        if entries and entries[0][0] == after + 1:
            return after + 1, entries  # starts where asked: nothing before it matters (one command)

        # Empty or a gap: read the first offset and the entries atomically to tell a trim apart.
        async def read() -> tuple[Any, Any]:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.get(self._first_key)
                pipe.xrange(self._log_key, min=f"{after + 1}-0", count=limit)
                first, rows = await pipe.execute()
                return first, rows

        first, rows = await self._run(read())
        return _int_or(first, 1), stream_entries(rows)

    async def _last_offset(self) -> int:
        return _int_or(await self._run(self._client.get(self._next_key)), 0)

    async def _first_offset(self) -> int:
        return _int_or(await self._run(self._client.get(self._first_key)), 1)

    async def _trim(self, before: int) -> None:
        keys = [self._log_key, self._next_key, self._first_key]
        done, last = await self._run(self._trim_script(keys=keys, args=[before]))
        if not done:
            check_trim(before, int(last))
            raise AssertionError("the trim script refused a valid trim")  # pragma: no cover

    async def _save_snapshot(self, offset: int, data: bytes) -> None:
        keys = [self._next_key, self._snapshots_key]
        args: list[bytes | int] = [offset, data, self._keep_snapshots]
        done, last = await self._run(self._save_snapshot_script(keys=keys, args=args))
        if not done:
            check_snapshot_offset(offset, int(last))
            raise AssertionError("the snapshot script refused a valid offset")  # pragma: no cover

    async def _latest_snapshot(self) -> tuple[int, bytes] | None:
        found = await self._run(self._latest_snapshot_script(keys=[self._snapshots_key]))
        if not found:
            return None
        offset, data = found
        return int(offset), bytes(data)

    async def _close(self) -> None:
        await self._idle.wait()
        if self._hot is not None:
            self._hot.close()
        try:
            await self._client.aclose()
        except RedisError as exc:
            raise LogError(f"closing the Redis log {self!r} failed: {exc}") from exc

    async def _run(self, operation: Awaitable[T]) -> T:
        """Await one server operation: count it for ``close``, map Redis errors to LogError."""
        self._in_flight += 1
        self._idle.clear()
        try:
            return await operation
        except RedisError as exc:
            raise LogError(f"Redis log operation failed on {self!r}: {exc}") from exc
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()


def parse_redis_url(url: str) -> tuple[str, str]:
    """Split ``redis://...?prefix=name`` into the URL for redis-py and the key prefix.

    Other query arguments (``socket_timeout``, ...) stay in the URL for redis-py.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"a Redis log URL starts with redis:// or rediss://, got {url!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefixes = [value for name, value in query if name == "prefix"]
    if len(prefixes) > 1:
        raise ValueError(f"a Redis log URL takes one prefix, got {prefixes} in {url!r}")
    prefix = prefixes[0] if prefixes else DEFAULT_PREFIX
    if not prefix:
        raise ValueError(f"the key prefix of a Redis log must not be empty in {url!r}")
    rest = urlencode([(name, value) for name, value in query if name != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


def redacted(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***`` (for logs and messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _raw(response: Any, **options: Any) -> Any:
    return response


def stream_entries(rows: list[Any] | None) -> list[Entry]:
    """``(offset, payload)`` from raw stream entries (``[b"<offset>-0", [b"p", payload]]``)."""
    if not rows:
        return []
    return [(int(entry_id[: entry_id.index(b"-")]), fields[1]) for entry_id, fields in rows]


def _int_or(value: bytes | str | int | None, default: int) -> int:
    return default if value is None else int(value)
