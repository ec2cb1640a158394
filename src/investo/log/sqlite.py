"""The SQLite Log: the durable log of the embedded default (``sqlite:///path/to/file.db``).

Storage (schema version 1)
--------------------------
* ``schema_version(version)``: one row. A file with another version, or with tables
  but no ``schema_version``, is refused with :class:`LogError`.
* ``meta(key, value)``: ``last_offset`` is the highest offset ever assigned. Appends
  continue from it, so a trim (even of everything) never lets an offset be reused.
* ``log("offset" INTEGER PRIMARY KEY, payload BLOB NOT NULL)``: offsets are the rowid,
  assigned by the log, ``last_offset + 1`` onwards, contiguous within and across
  appends.
* ``snapshots("offset" INTEGER PRIMARY KEY, data BLOB NOT NULL)``: the latest
  ``keep_snapshots`` by offset.

Durability
----------
WAL journal with ``synchronous=FULL``: a commit returns only after the WAL is fsynced,
so an acknowledged append survives ``kill -9`` and power loss (``fullfsync`` is on for
macOS, where plain fsync does not flush the drive; elsewhere it is a no-op). A batch
is one SAVEPOINT inside a write transaction: it is stored whole or not at all. If the
storage itself fails at commit (I/O error, disk full) the append raises
:class:`LogError`, and, as with any database, the batch may or may not be found after
a restart: the caller must answer "status unknown", never "rejected".

Threading and group commit
--------------------------
Each log owns one dedicated worker thread, the only user of its ``sqlite3``
connection. Coroutines put jobs on a queue and await an asyncio future the worker
resolves with ``call_soon_threadsafe``; no thread is created per call and the event
loop never blocks on the disk. Jobs run in FIFO order, so a read issued after an
awaited append sees it. Each time the worker wakes it takes everything queued and
commits consecutive appends in ONE transaction (one fsync); a lone appender pays one
fsync per batch, N concurrent appenders share them (group commit). Opening the log
runs on the worker too, but ``SqliteLog(...)`` waits for it (a few milliseconds) so
that a bad path fails at once.

Costs (n entries held, k per call, F = one fsync of the WAL)
-----------------------------------------------------------
* ``append``: O(k log n) + F, F shared by every append waiting at the same moment.
* ``read``: O(log n + k); ``last_offset`` / ``first_offset`` / ``latest_snapshot``:
  O(log n). No fsync. They queue behind appends already submitted.
* ``trim``: O(k log n) for k entries dropped, + F. ``save_snapshot``: the data size, + F.
* SQLite checkpoints the WAL into the database every ~1000 pages (one extra fsync of
  the database file). Trimmed pages are reused by later appends; the file does not
  shrink.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import queue
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from investo.log.base import (
    DEFAULT_KEEP_SNAPSHOTS,
    Entry,
    Log,
    LogClosedError,
    LogError,
    check_snapshot_offset,
    check_trim,
)

SCHEMA_VERSION = 1

_SCHEMA = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    f"INSERT INTO schema_version (version) VALUES ({SCHEMA_VERSION})",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT INTO meta (key, value) VALUES ('last_offset', 0)",
    'CREATE TABLE log ("offset" INTEGER PRIMARY KEY, payload BLOB NOT NULL)',
    'CREATE TABLE snapshots ("offset" INTEGER PRIMARY KEY, data BLOB NOT NULL)',
)

_GET_LAST = "SELECT value FROM meta WHERE key = 'last_offset'"
_SET_LAST = "UPDATE meta SET value = ? WHERE key = 'last_offset'"
_GET_FIRST = 'SELECT min("offset") FROM log'
_INSERT = 'INSERT INTO log ("offset", payload) VALUES (?, ?)'
_SELECT = 'SELECT "offset", payload FROM log WHERE "offset" > ? ORDER BY "offset" LIMIT ?'
_TRIM = 'DELETE FROM log WHERE "offset" < ?'
_PUT_SNAPSHOT = 'INSERT OR REPLACE INTO snapshots ("offset", data) VALUES (?, ?)'
_PRUNE_SNAPSHOTS = (
    'DELETE FROM snapshots WHERE "offset" NOT IN '
    '(SELECT "offset" FROM snapshots ORDER BY "offset" DESC LIMIT ?)'
)
_LATEST_SNAPSHOT = 'SELECT "offset", data FROM snapshots ORDER BY "offset" DESC LIMIT 1'

_BUSY_TIMEOUT_S = 5.0  # another process holding the write lock (we expect none)
_MAX_JOBS_PER_ROUND = 1024  # bounds one group commit

T = TypeVar("T")


class SqliteLog(Log):
    """A durable Log in one SQLite file; see the module docstring."""

    def __init__(self, path: str | os.PathLike[str], *, keep_snapshots: int = DEFAULT_KEEP_SNAPSHOTS) -> None:
        super().__init__(keep_snapshots=keep_snapshots)
        self.path = os.fspath(path)
        self._worker = _Worker(self.path)
        # A log dropped without close() still stops its thread when collected.
        self._finalizer = weakref.finalize(self, self._worker.jobs.put, _StopJob(None, None))

    def __repr__(self) -> str:
        return f"<SqliteLog {self.path!r}>"

    async def _append(self, batch: list[bytes]) -> int:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._worker.jobs.put(_AppendJob(loop, future, batch))
        return await future

    async def _read(self, after: int, limit: int) -> tuple[int, list[Entry]]:
        def read(conn: sqlite3.Connection) -> tuple[int, list[Entry]]:
            with _transaction(conn, "BEGIN"):
                entries: list[Entry] = conn.execute(_SELECT, (after, limit)).fetchall()
                return _first_offset(conn), entries

        return await self._call(read)

    async def _last_offset(self) -> int:
        return await self._call(_last_offset)

    async def _first_offset(self) -> int:
        def first(conn: sqlite3.Connection) -> int:
            with _transaction(conn, "BEGIN"):
                return _first_offset(conn)

        return await self._call(first)

    async def _trim(self, before: int) -> None:
        def trim(conn: sqlite3.Connection) -> None:
            with _transaction(conn, "BEGIN IMMEDIATE"):
                check_trim(before, _last_offset(conn))
                conn.execute(_TRIM, (before,))

        await self._call(trim)

    async def _save_snapshot(self, offset: int, data: bytes) -> None:
        keep = self._keep_snapshots

        def save(conn: sqlite3.Connection) -> None:
            with _transaction(conn, "BEGIN IMMEDIATE"):
                check_snapshot_offset(offset, _last_offset(conn))
                conn.execute(_PUT_SNAPSHOT, (offset, data))
                conn.execute(_PRUNE_SNAPSHOTS, (keep,))

        await self._call(save)

    async def _latest_snapshot(self) -> tuple[int, bytes] | None:
        def latest(conn: sqlite3.Connection) -> tuple[int, bytes] | None:
            row: tuple[int, bytes] | None = conn.execute(_LATEST_SNAPSHOT).fetchone()
            return row

        return await self._call(latest)

    async def _close(self) -> None:
        self._finalizer.detach()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._worker.jobs.put(_StopJob(loop, future))
        await future

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._worker.jobs.put(_CallJob(loop, future, fn))
        return await future


# --------------------------------------------------------------------------------
# The worker thread and its jobs.
# --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Job:
    loop: asyncio.AbstractEventLoop | None
    future: asyncio.Future[Any] | None

    def resolve(self, result: object = None, error: BaseException | None = None) -> None:
        """Hand the outcome to the awaiting coroutine, if it still waits."""
        if self.loop is None or self.future is None:
            return
        with contextlib.suppress(RuntimeError):  # its event loop is closed: nobody waits
            self.loop.call_soon_threadsafe(_settle, self.future, result, error)


@dataclass(slots=True)
class _AppendJob(_Job):
    batch: list[bytes]


@dataclass(slots=True)
class _CallJob(_Job):
    fn: Callable[[sqlite3.Connection], Any]


@dataclass(slots=True)
class _StopJob(_Job):
    pass


def _settle(future: asyncio.Future[Any], result: object, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class _Worker:
    """The thread that owns the connection. It holds no reference to the SqliteLog."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        opened: concurrent.futures.Future[sqlite3.Connection] = concurrent.futures.Future()
        thread = threading.Thread(
            target=self._run, args=(opened,), name=f"investo-log-sqlite {path}", daemon=True
        )
        thread.start()
        opened.result()

    def _run(self, opened: concurrent.futures.Future[sqlite3.Connection]) -> None:
        try:
            conn = _connect(self.path)
        except BaseException as exc:
            opened.set_exception(exc)
            return
        opened.set_result(conn)
        stop: _Job | None = None
        try:
            while stop is None:
                stop = self._run_round(conn, self._take())
        finally:
            conn.close()
            if stop is not None:
                stop.resolve()

    def _take(self) -> list[_Job]:
        jobs = [self.jobs.get()]
        while len(jobs) < _MAX_JOBS_PER_ROUND:
            try:
                jobs.append(self.jobs.get_nowait())
            except queue.Empty:
                break
        return jobs

    def _run_round(self, conn: sqlite3.Connection, jobs: list[_Job]) -> _Job | None:
        """Run the jobs in order, consecutive appends as one commit; return a stop job."""
        appends: list[_AppendJob] = []
        for index, job in enumerate(jobs):
            if isinstance(job, _AppendJob):
                appends.append(job)
                continue
            if appends:
                _commit_appends(conn, appends)
                appends = []
            if isinstance(job, _CallJob):
                _run_call(conn, job)
            else:
                for late in jobs[index + 1 :]:
                    late.resolve(error=LogClosedError(f"the SQLite log {self.path!r} is closed"))
                return job
        if appends:
            _commit_appends(conn, appends)
        return None


def _run_call(conn: sqlite3.Connection, job: _CallJob) -> None:
    try:
        result = job.fn(conn)
    except sqlite3.Error as exc:
        job.resolve(error=_storage_error(exc))
    except Exception as exc:  # ValueError from a check, or a bug: the caller sees it
        job.resolve(error=exc)
    else:
        job.resolve(result)


def _commit_appends(conn: sqlite3.Connection, jobs: list[_AppendJob]) -> None:
    """One write transaction, one SAVEPOINT per batch, one fsync for all of them."""
    outcomes: list[int | BaseException] = []
    try:
        conn.execute("BEGIN IMMEDIATE")
        last = _last_offset(conn)
        for job in jobs:
            first = last + 1
            conn.execute("SAVEPOINT batch")
            try:
                conn.executemany(_INSERT, zip(range(first, first + len(job.batch)), job.batch, strict=True))
            except sqlite3.Error as exc:  # this batch alone is rolled back
                conn.execute("ROLLBACK TO batch")
                outcomes.append(_storage_error(exc))
            else:
                outcomes.append(first)
                last += len(job.batch)
            conn.execute("RELEASE batch")
        conn.execute(_SET_LAST, (last,))
        conn.execute("COMMIT")
    except Exception as exc:  # the whole transaction is gone: every batch failed
        _rollback(conn)
        outcomes = [_storage_error(exc) for _ in jobs]
    for job, outcome in zip(jobs, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            job.resolve(error=outcome)
        else:
            job.resolve(outcome)


# --------------------------------------------------------------------------------
# Connection, schema and helpers (all run on the worker thread).
# --------------------------------------------------------------------------------


def _connect(path: str) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        raise LogError(f"cannot open the SQLite log {path!r}: {exc}") from exc
    try:
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(mode).lower() != "wal":
            raise LogError(f"the SQLite log {path!r} cannot use WAL (journal mode is {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA fullfsync = ON")
        conn.execute("PRAGMA checkpoint_fullfsync = ON")
        _ensure_schema(conn, path)
    except BaseException as exc:
        conn.close()
        if isinstance(exc, sqlite3.Error):
            raise LogError(f"cannot open the SQLite log {path!r}: {exc}") from exc
        raise
    return conn


def _ensure_schema(conn: sqlite3.Connection, path: str) -> None:
    with _transaction(conn, "BEGIN IMMEDIATE"):
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "schema_version" in tables:
            (version,) = conn.execute("SELECT version FROM schema_version").fetchone()
            if version != SCHEMA_VERSION:
                raise LogError(
                    f"the SQLite log {path!r} has schema version {version}; "
                    f"this Investo reads version {SCHEMA_VERSION}"
                )
        elif tables:
            raise LogError(f"{path!r} is a SQLite database but not an Investo log (tables: {sorted(tables)})")
        else:
            for statement in _SCHEMA:
                conn.execute(statement)


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, begin: str) -> Iterator[None]:
    conn.execute(begin)
    try:
        yield
    except BaseException:
        _rollback(conn)
        raise
    conn.execute("COMMIT")


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _last_offset(conn: sqlite3.Connection) -> int:
    (last,) = conn.execute(_GET_LAST).fetchone()
    return int(last)


def _first_offset(conn: sqlite3.Connection) -> int:
    (first,) = conn.execute(_GET_FIRST).fetchone()
    return int(first) if first is not None else _last_offset(conn) + 1


def _storage_error(exc: BaseException) -> LogError:
    error = LogError(f"SQLite log operation failed: {exc}")
    error.__cause__ = exc
    return error
