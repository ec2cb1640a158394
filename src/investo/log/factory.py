"""``open_log(url)``: pick a Log implementation by URL.

* ``memory://`` -> a fresh, empty :class:`MemoryLog` (every call gives a new one).
* ``sqlite:///relative/file.db``, ``sqlite:////absolute/file.db`` (SQLAlchemy's
  convention: the path is what follows ``sqlite:///``) or a plain file path ->
  :class:`SqliteLog`, created if missing. Its directory must exist.
* ``redis://host:port/db?prefix=name`` (or ``rediss://`` for TLS) -> :class:`RedisLog`,
  its keys under ``name`` (default ``investo``). It connects on first use.

Opening a SQLite log blocks for a few milliseconds (the file is opened and its schema
checked before this returns), so call it at start-up, not on a hot path.
"""

from __future__ import annotations

from investo.log.base import DEFAULT_KEEP_SNAPSHOTS, Log
from investo.log.memory import MemoryLog
from investo.log.redis import RedisLog
from investo.log.sqlite import SqliteLog

SUPPORTED_URLS = (
    "memory://, sqlite:///path/to/file.db, a plain file path, or redis://host:port/db?prefix=name"
)


def open_log(url: str, *, keep_snapshots: int = DEFAULT_KEEP_SNAPSHOTS) -> Log:
    """Open the log at ``url``; raise ValueError for a URL no implementation takes."""
    if url == "memory://":
        return MemoryLog(keep_snapshots=keep_snapshots)
    if url.startswith("memory://"):
        raise ValueError(f"unsupported log URL {url!r}: memory:// takes no name (each open is a fresh log)")
    if url.startswith(("redis://", "rediss://")):
        return RedisLog(url, keep_snapshots=keep_snapshots)
    if url.startswith("sqlite:"):
        return SqliteLog(_sqlite_path(url), keep_snapshots=keep_snapshots)
    scheme, sep, _ = url.partition("://")
    if sep:
        raise ValueError(f"unsupported log URL scheme '{scheme}://' in {url!r}; supported: {SUPPORTED_URLS}")
    if not url:
        raise ValueError(f"empty log URL; supported: {SUPPORTED_URLS}")
    return SqliteLog(url, keep_snapshots=keep_snapshots)


def _sqlite_path(url: str) -> str:
    path = url.removeprefix("sqlite:///")
    if path == url or not path or path == ":memory:":
        raise ValueError(
            f"a SQLite log URL needs a file path, as in sqlite:///relative.db or sqlite:////abs/path.db, "
            f"got {url!r} (for a log in memory use memory://)"
        )
    return path
