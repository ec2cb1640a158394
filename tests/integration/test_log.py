"""One suite for every Log implementation, run against each backend URL.

To add a backend, add an entry to ``BACKENDS``: a function from ``tmp_path`` to a
:class:`Backend`, or ``None`` to skip (e.g. no server configured).
Tests that close and reopen a log run only on durable backends. Tests that need a
backend's internals sit at the end, named after it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

import redis_fixtures
from investo.log import (
    Log,
    LogClosedError,
    LogError,
    LogTrimmedError,
    MemoryLog,
    RedisLog,
    SqliteLog,
    open_log,
)


@dataclass(frozen=True)
class Backend:
    name: str
    url: str
    durable: bool  # what was appended is still there after close() and open_log(url)
    cleanup: Callable[[], None] | None = None  # run after the test (e.g. delete server keys)

    def open(self) -> Log:
        return open_log(self.url)


# The Redis that sessions and CI start before the tests (no persistence: the suite's
# "durable" means "survives close and reopen", which the same server gives).
REDIS_HOST, REDIS_PORT, REDIS_DB = redis_fixtures.HOST, redis_fixtures.PORT, redis_fixtures.DB


def _redis_backend(tmp: Path) -> Backend:
    redis_fixtures.require_redis()
    prefix = f"investo-test-{uuid.uuid4().hex}"

    def delete_keys() -> None:
        redis_fixtures.delete_namespace(prefix)

    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}?prefix={prefix}"
    return Backend("redis", url, durable=True, cleanup=delete_keys)


BACKENDS: dict[str, Callable[[Path], Backend | None]] = {
    "memory": lambda tmp: Backend("memory", "memory://", durable=False),
    "sqlite": lambda tmp: Backend("sqlite", f"sqlite:///{tmp}/log.db", durable=True),
    "redis": _redis_backend,
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    found = BACKENDS[request.param](tmp_path)
    if found is None:
        pytest.skip(f"the {request.param} backend is not configured")
    yield found
    if found.cleanup is not None:
        found.cleanup()


@pytest.fixture
async def log(backend: Backend) -> AsyncIterator[Log]:
    opened = backend.open()
    yield opened
    await opened.close()


def durable_only(backend: Backend) -> None:
    if not backend.durable:
        pytest.skip(f"{backend.name} keeps nothing across close and reopen")


async def read_all(log: Log, after: int = 0, page: int = 1000) -> list[tuple[int, bytes]]:
    entries: list[tuple[int, bytes]] = []
    while chunk := await log.read(after, page):
        entries.extend(chunk)
        after = chunk[-1][0]
    return entries


# --------------------------------------------------------------------------------
# Appending and reading
# --------------------------------------------------------------------------------


async def test_empty_log(log: Log) -> None:
    assert await log.last_offset() == 0
    assert await log.first_offset() == 1
    assert await log.read(0, 10) == []
    assert await log.latest_snapshot() is None
    assert await log.append([]) == []
    assert await log.last_offset() == 0


async def test_offsets_start_at_one_and_are_contiguous_across_batches(log: Log) -> None:
    assert await log.append([b"a"]) == [1]
    assert await log.append([b"b", b"c", b"d"]) == [2, 3, 4]
    assert await log.append([b"e", b"f"]) == [5, 6]
    assert await log.last_offset() == 6
    assert await log.first_offset() == 1


async def test_read_returns_payloads_in_append_order(log: Log) -> None:
    payloads = [b"", b"\x00\xff" * 3, b"x" * 1_000_000, *(f"p{i}".encode() for i in range(20))]
    await log.append(payloads[:2])
    await log.append(payloads[2:])
    assert await log.read(0, 1000) == list(enumerate(payloads, start=1))


async def test_read_pages_by_limit(log: Log) -> None:
    await log.append([f"p{i}".encode() for i in range(1, 26)])
    pages: list[list[int]] = []
    after = 0
    while page := await log.read(after, 7):
        pages.append([offset for offset, _ in page])
        after = page[-1][0]
    assert [len(page) for page in pages] == [7, 7, 7, 4]
    assert [offset for page in pages for offset in page] == list(range(1, 26))
    assert await log.read(10, 3) == [(11, b"p11"), (12, b"p12"), (13, b"p13")]
    assert await log.read(25, 10) == []
    assert await log.read(1000, 10) == []


async def test_rejected_batch_stores_nothing(log: Log) -> None:
    with pytest.raises(TypeError, match="payload 1 must be bytes"):
        await log.append([b"ok", "not bytes", b"ok too"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not a single bytes"):
        await log.append(b"one payload, not a batch")  # type: ignore[arg-type]
    assert await log.last_offset() == 0
    assert await log.append([b"first"]) == [1]
    assert await log.read(0, 10) == [(1, b"first")]


async def test_invalid_arguments_are_rejected(log: Log) -> None:
    await log.append([b"a"])
    with pytest.raises(ValueError, match="after"):
        await log.read(-1, 10)
    with pytest.raises(ValueError, match="limit"):
        await log.read(0, 0)
    with pytest.raises(ValueError, match="before"):
        await log.trim(-1)


# --------------------------------------------------------------------------------
# Trimming
# --------------------------------------------------------------------------------


async def test_trim_drops_a_prefix(log: Log) -> None:
    await log.append([f"p{i}".encode() for i in range(1, 11)])
    await log.trim(5)
    assert await log.first_offset() == 5
    assert await log.last_offset() == 10
    assert await log.read(4, 100) == [(i, f"p{i}".encode()) for i in range(5, 11)]
    assert await log.read(7, 2) == [(8, b"p8"), (9, b"p9")]
    await log.trim(3)  # already gone: nothing happens
    assert await log.first_offset() == 5


async def test_read_from_a_trimmed_position_raises(log: Log) -> None:
    await log.append([b"a", b"b", b"c", b"d"])
    await log.trim(3)
    with pytest.raises(LogTrimmedError) as caught:
        await log.read(0, 10)
    assert caught.value.first_offset == 3
    with pytest.raises(LogTrimmedError):
        await log.read(1, 10)
    assert await log.read(2, 10) == [(3, b"c"), (4, b"d")]


async def test_trim_everything_then_append_continues_the_offsets(log: Log) -> None:
    await log.append([b"a", b"b", b"c"])
    await log.trim(4)
    assert await log.first_offset() == 4
    assert await log.last_offset() == 3
    assert await log.read(3, 10) == []
    with pytest.raises(LogTrimmedError):
        await log.read(2, 10)
    assert await log.append([b"d", b"e"]) == [4, 5]
    assert await log.read(3, 10) == [(4, b"d"), (5, b"e")]


async def test_trim_past_the_end_is_refused(log: Log) -> None:
    await log.append([b"a", b"b"])
    with pytest.raises(ValueError, match="cannot trim"):
        await log.trim(4)
    assert await log.read(0, 10) == [(1, b"a"), (2, b"b")]


async def test_offsets_are_not_reused_after_trim_and_reopen(backend: Backend) -> None:
    durable_only(backend)
    async with backend.open() as log:
        await log.append([f"p{i}".encode() for i in range(1, 11)])
        await log.trim(11)
    async with backend.open() as log:
        assert await log.last_offset() == 10
        assert await log.first_offset() == 11
        assert await log.read(10, 10) == []
        assert await log.append([b"next"]) == [11]
    async with backend.open() as log:
        assert await log.read(10, 10) == [(11, b"next")]


async def test_entries_and_snapshots_survive_reopen(backend: Backend) -> None:
    durable_only(backend)
    async with backend.open() as log:
        await log.append([b"a", b"b"])
        await log.append([b"c"])
        await log.save_snapshot(2, b"state@2")
        await log.trim(2)
    async with backend.open() as log:
        assert await log.read(1, 10) == [(2, b"b"), (3, b"c")]
        assert await log.latest_snapshot() == (2, b"state@2")
        assert await log.append([b"d"]) == [4]


# --------------------------------------------------------------------------------
# Snapshots
# --------------------------------------------------------------------------------


async def test_latest_snapshot_is_the_highest_offset(log: Log) -> None:
    await log.append([b"x"] * 10)
    await log.save_snapshot(0, b"")
    assert await log.latest_snapshot() == (0, b"")
    await log.save_snapshot(4, b"state@4")
    await log.save_snapshot(9, b"state@9")
    await log.save_snapshot(6, b"state@6")  # older than the latest: kept aside, not latest
    assert await log.latest_snapshot() == (9, b"state@9")
    await log.save_snapshot(9, b"state@9 again")
    assert await log.latest_snapshot() == (9, b"state@9 again")


async def test_many_snapshots_keep_the_latest(log: Log) -> None:
    await log.append([b"x"] * 100)
    for offset in range(1, 101):
        await log.save_snapshot(offset, f"state@{offset}".encode())
    assert await log.latest_snapshot() == (100, b"state@100")


async def test_invalid_snapshots_are_rejected(log: Log) -> None:
    await log.append([b"a", b"b"])
    with pytest.raises(ValueError, match="cannot snapshot"):
        await log.save_snapshot(3, b"from the future")
    with pytest.raises(ValueError, match="offset"):
        await log.save_snapshot(-1, b"")
    with pytest.raises(TypeError, match="bytes"):
        await log.save_snapshot(1, "text")  # type: ignore[arg-type]
    assert await log.latest_snapshot() is None


# --------------------------------------------------------------------------------
# Concurrency
# --------------------------------------------------------------------------------


def _batch(producer: int, seq: int) -> list[bytes]:
    size = 1 + (producer * 7 + seq * 3) % 9
    return [f"{producer}:{seq}:{i}/{size}".encode() for i in range(size)]


async def test_concurrent_appends_get_distinct_contiguous_offsets(log: Log) -> None:
    producers, batches_each = 50, 4
    tails: list[bytes] = []

    async def produce(producer: int) -> list[tuple[list[int], list[bytes]]]:
        done = []
        for seq in range(batches_each):
            batch = _batch(producer, seq)
            done.append((await log.append(batch), batch))
        return done

    async def tail() -> None:  # every read ends at a batch boundary: no half batch is ever visible
        while len(tails) < 20:
            entries = await log.read(0, 100_000)
            if entries:
                tails.append(entries[-1][1])
            await asyncio.sleep(0)

    results, _ = await asyncio.gather(
        asyncio.gather(*(produce(p) for p in range(producers))), asyncio.wait_for(tail(), 10)
    )
    expected: dict[int, bytes] = {}
    for offsets, batch in (item for done in results for item in done):
        assert offsets == list(range(offsets[0], offsets[0] + len(batch)))
        assert not expected.keys() & set(offsets)
        expected.update(zip(offsets, batch, strict=True))
    total = sum(len(_batch(p, s)) for p in range(producers) for s in range(batches_each))
    assert sorted(expected) == list(range(1, total + 1))
    entries = await read_all(log, page=97)
    assert entries == sorted(expected.items())
    assert len({payload for _, payload in entries}) == total
    for payload in tails:
        index, size = payload.decode().rsplit(":", 1)[1].split("/")
        assert int(index) == int(size) - 1


# --------------------------------------------------------------------------------
# Opening and closing
# --------------------------------------------------------------------------------


async def test_closed_log_refuses_every_call(backend: Backend) -> None:
    log = backend.open()
    await log.append([b"a"])
    await log.close()
    await log.close()  # idempotent
    assert log.closed
    with pytest.raises(LogClosedError):
        await log.append([b"b"])
    with pytest.raises(LogClosedError):
        await log.read(0, 1)
    with pytest.raises(LogClosedError):
        await log.last_offset()


async def test_close_waits_for_appends_already_started(backend: Backend) -> None:
    log = backend.open()
    pending = [asyncio.ensure_future(log.append([f"p{i}".encode()])) for i in range(20)]
    await asyncio.sleep(0)  # let them start
    await log.close()
    done = await asyncio.gather(*pending)
    assert sorted(offset for offsets in done for offset in offsets) == list(range(1, 21))
    if not backend.durable:
        return
    async with backend.open() as reopened:
        assert await reopened.last_offset() == 20


def test_open_log_picks_the_implementation_by_url(tmp_path: Path) -> None:
    assert isinstance(open_log("memory://"), MemoryLog)
    assert open_log("memory://") is not open_log("memory://")
    for url in (f"sqlite:///{tmp_path}/a.db", str(tmp_path / "b.db")):
        log = open_log(url)
        assert isinstance(log, SqliteLog)
        asyncio.run(log.close())
    assert (tmp_path / "a.db").exists()
    assert (tmp_path / "b.db").exists()
    for url, prefix in (("redis://localhost:6379/0", "investo"), ("rediss://h:1/2?prefix=node-a", "node-a")):
        log = open_log(url)  # connects on first use, not here
        assert isinstance(log, RedisLog)
        assert log.prefix == prefix
        asyncio.run(log.close())


UNSUPPORTED = [
    "postgres://db/x",
    "memory://named",
    "sqlite://",
    "sqlite:///:memory:",
    "",
]


@pytest.mark.parametrize("url", UNSUPPORTED)
def test_open_log_rejects_unsupported_urls(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        open_log(url)
    message = str(caught.value)
    assert "memory://" in message
    if url.startswith(("redis", "postgres")):
        assert "sqlite:///" in message and url.split(":")[0] in message


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("redis://localhost/0?prefix=", "must not be empty"),
        ("redis://localhost/0?prefix=a&prefix=b", "one prefix"),
    ],
)
def test_open_log_rejects_bad_redis_urls(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        open_log(url)


# --------------------------------------------------------------------------------
# SQLite internals
# --------------------------------------------------------------------------------


def _sqlite(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


async def test_sqlite_file_layout(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    async with open_log(str(path), keep_snapshots=3) as log:
        await log.append([b"a", b"b", b"c", b"d", b"e"])
        for offset in range(1, 6):
            await log.save_snapshot(offset, f"s{offset}".encode())
        await log.trim(5)
        conn = _sqlite(path)
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
            assert conn.execute("SELECT value FROM meta WHERE key = 'last_offset'").fetchone() == (5,)
            assert conn.execute('SELECT "offset", payload FROM log').fetchall() == [(5, b"e")]
            assert conn.execute('SELECT "offset" FROM snapshots ORDER BY 1').fetchall() == [(3,), (4,), (5,)]
        finally:
            conn.close()


async def test_sqlite_failed_batch_rolls_back_alone(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    await open_log(str(path)).close()
    conn = _sqlite(path)
    conn.execute(
        "CREATE TRIGGER poison BEFORE INSERT ON log WHEN NEW.payload = x'dead' "
        "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
    )
    conn.close()
    async with open_log(str(path)) as log:
        with pytest.raises(LogError, match="injected failure"):
            await log.append([b"a", b"\xde\xad", b"c"])
        assert await log.last_offset() == 0
        # Queued together, these share one transaction; the poisoned batch fails alone.
        outcomes = await asyncio.gather(
            log.append([b"g1", b"g2"]),
            log.append([b"x", b"\xde\xad"]),
            log.append([b"g3"]),
            return_exceptions=True,
        )
        assert outcomes[0] == [1, 2]
        assert isinstance(outcomes[1], LogError)
        assert outcomes[2] == [3]
        assert await log.read(0, 10) == [(1, b"g1"), (2, b"g2"), (3, b"g3")]
        assert await log.append([b"g4"]) == [4]


def test_sqlite_refuses_foreign_files(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    conn = _sqlite(other)
    conn.execute("CREATE TABLE users (id INTEGER)")
    conn.close()
    with pytest.raises(LogError, match="not an Investo log"):
        open_log(str(other))

    newer = tmp_path / "newer.db"
    asyncio.run(open_log(str(newer)).close())
    conn = _sqlite(newer)
    conn.execute("UPDATE schema_version SET version = 99")
    conn.close()
    with pytest.raises(LogError, match="schema version 99"):
        open_log(str(newer))

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LogError, match="cannot open"):
        open_log(str(garbage))

    with pytest.raises(LogError, match="cannot open"):
        open_log(str(tmp_path / "missing-dir" / "log.db"))


# --------------------------------------------------------------------------------
# Redis internals
# --------------------------------------------------------------------------------


@pytest.fixture
def redis_backend(tmp_path: Path) -> Iterator[Backend]:
    found = _redis_backend(tmp_path)
    yield found
    assert found.cleanup is not None
    found.cleanup()


async def test_redis_key_layout(redis_backend: Backend) -> None:
    async with open_log(redis_backend.url, keep_snapshots=3) as log:
        assert isinstance(log, RedisLog)
        await log.append([b"a", b"b", b"c", b"d", b"e"])
        for offset in range(1, 6):
            await log.save_snapshot(offset, f"s{offset}".encode())
        await log.trim(5)
        prefix = log.prefix
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    try:
        assert client.xrange(f"{prefix}:log") == [(b"5-0", {b"p": b"e"})]
        assert client.get(f"{prefix}:next") == b"5"
        assert client.get(f"{prefix}:first") == b"5"
        assert client.hgetall(f"{prefix}:snapshots") == {b"3": b"s3", b"4": b"s4", b"5": b"s5"}
    finally:
        client.close()


async def test_redis_clients_sharing_a_prefix_share_one_log(redis_backend: Backend) -> None:
    # Two processes (here: two clients) appending to one log still get contiguous batches.
    async with redis_backend.open() as one, redis_backend.open() as two:
        results = await asyncio.gather(
            *(log.append(_batch(p, 0)) for p in range(20) for log in (one, two)),
        )
        total = sum(len(offsets) for offsets in results)
        assert sorted(o for offsets in results for o in offsets) == list(range(1, total + 1))
        for offsets in results:
            assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))
        assert await one.read(0, 1000) == await two.read(0, 1000)


async def test_redis_unreachable_server_raises_log_error() -> None:
    async with open_log("redis://127.0.0.1:1/0?prefix=nowhere") as log:
        with pytest.raises(LogError, match="Redis log operation failed"):
            await log.append([b"a"])
        with pytest.raises(LogError):
            await log.read(0, 10)


async def test_redis_append_refuses_to_reuse_offsets_if_the_counter_is_lost(redis_backend: Backend) -> None:
    async with redis_backend.open() as log:
        assert isinstance(log, RedisLog)
        await log.append([b"a", b"b"])
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
        try:
            client.delete(f"{log.prefix}:next")  # e.g. evicted by a misconfigured server
        finally:
            client.close()
        with pytest.raises(LogError, match="refusing to reuse"):
            await log.append([b"c", b"d"])
        assert await log.read(0, 10) == [(1, b"a"), (2, b"b")]


@pytest.mark.parametrize("lean", [False, True], ids=["redis-py", "lean connection"])
async def test_redis_append_unless_marked_stores_a_marked_entry_once(
    redis_backend: Backend, lean: bool
) -> None:
    async with RedisLog(redis_backend.url, lean=lean) as one, redis_backend.open() as two:
        assert isinstance(one, RedisLog) and isinstance(two, RedisLog)
        assert (one._hot is not None) == lean
        mark, other = f"{one.prefix}:seen:x", f"{one.prefix}:seen:y"
        assert await one.append_unless_marked([(b"a", mark, 60_000), (b"b", None, 0)]) == [1, 2]
        # the same mark again, from another client and within one batch: refused, the rest stored
        assert await two.append_unless_marked([(b"c", mark, 60_000), (b"d", other, 60_000)]) == [0, 3]
        assert await one.append_unless_marked([(b"e", other, 60_000), (b"f", None, 0)]) == [0, 4]
        assert await one.append_unless_marked([(b"g", mark, 60_000)]) == [0]
        assert await one.read(0, 10) == [(1, b"a"), (2, b"b"), (3, b"d"), (4, b"f")]
        assert await one.last_offset() == 4
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
        try:
            assert 0 < client.pttl(mark) <= 60_000  # the mark expires
            client.delete(f"{one.prefix}:next")  # the counter lost: refused before any mark is set
            with pytest.raises(LogError, match="refusing to reuse"):
                await one.append_unless_marked([(b"h", f"{one.prefix}:seen:z", 60_000)])
            assert client.exists(f"{one.prefix}:seen:z") == 0
        finally:
            client.close()


@pytest.mark.parametrize("lean", [False, True], ids=["redis-py", "lean connection"])
async def test_redis_read_or_wait_returns_waiting_entries_at_once_and_new_ones_when_they_come(
    redis_backend: Backend, lean: bool
) -> None:
    async with RedisLog(redis_backend.url, lean=lean) as log, redis_backend.open() as writer:
        assert isinstance(log, RedisLog)
        await writer.append([b"a", b"b", b"c"])
        began = asyncio.get_running_loop().time()
        assert await log.read_or_wait(0, 2, 5_000) == [(1, b"a"), (2, b"b")]
        assert await log.read_or_wait(2, 10, 5_000) == [(3, b"c")]
        assert asyncio.get_running_loop().time() - began < 2  # did not wait: entries were there
        assert await log.read_or_wait(3, 10, 50) == []  # nothing new within 50 ms
        waiting = asyncio.create_task(log.read_or_wait(3, 10, 5_000))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await writer.append([b"d", b"e"])
        assert await asyncio.wait_for(waiting, 5) == [(4, b"d"), (5, b"e")]


@pytest.mark.parametrize("lean", [False, True], ids=["redis-py", "lean connection"])
async def test_redis_read_or_wait_reports_a_trimmed_position(redis_backend: Backend, lean: bool) -> None:
    async with RedisLog(redis_backend.url, lean=lean) as log:
        assert isinstance(log, RedisLog)
        await log.append([b"a", b"b", b"c", b"d"])
        await log.save_snapshot(2, b"state")
        await log.trim(3)
        with pytest.raises(LogTrimmedError):
            await log.read_or_wait(1, 10, 50)  # entry 2 is gone: the reader needs the snapshot
        assert await log.read_or_wait(2, 10, 50) == [(3, b"c"), (4, b"d")]
        with pytest.raises(ValueError):
            await log.read_or_wait(0, 0, 50)
