"""Database URLs to async engines: SQLite (aiosqlite) for the embedded mode, Postgres (asyncpg).

Guarantees
----------
* ``sqlite:///path`` (or ``sqlite+aiosqlite:///path``) opens the file with aiosqlite.
  Every new connection runs ``journal_mode=WAL``, ``synchronous=<synchronous>``
  (``NORMAL`` by default), ``busy_timeout=<busy_timeout_ms>`` (writers wait for each
  other instead of failing with "database is locked") and ``foreign_keys=ON`` (as
  Postgres always enforces them).
* ``sqlite://`` / ``sqlite:///:memory:`` is one in-memory database shared by every
  session of the engine (a single connection, ``StaticPool``): for tests.
* ``postgresql://``, ``postgres://`` and ``postgresql+<any driver>://`` use asyncpg (a
  dependency of Investo). What the URL leaves out (user, password, host, port,
  database) asyncpg takes from libpq's environment variables (``PGUSER``,
  ``PGPASSWORD``, ...) and ``~/.pgpass``, as ``psql`` does; without a user it is the
  operating system's user name. libpq's ``sslmode=`` query parameter is passed on as
  asyncpg's ``ssl=`` (same values: ``disable``, ``prefer``, ``require``,
  ``verify-ca``, ``verify-full``); other query parameters go to ``asyncpg.connect``
  as they are. Connections are pooled and pinged before use (``pool_pre_ping``), so
  a restarted database server costs a reconnect, not an error.
* Any other scheme is refused with :class:`ValueError`.

Durability trade-off: with ``synchronous=NORMAL`` in WAL mode a commit survives a crash
of the process but not necessarily of the machine (power loss, kernel panic): the
last commits before it may be lost. The history is regenerated from the command log
(see :mod:`investo.store.writer`), so only the commits after the host's last snapshot
can be replayed; pass ``synchronous="FULL"`` when the history must survive power loss.

Cost: creating an engine opens nothing; each pooled connection runs four PRAGMAs once.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

__all__ = ["async_url", "is_sqlite", "make_engine", "redacted_url"]

_SYNCHRONOUS: Final = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})


def async_url(database_url: str | URL) -> URL:
    """``database_url`` with the async driver Investo uses for its dialect."""
    url = make_url(database_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        return url.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+asyncpg")
        sslmode = url.query.get("sslmode")
        if sslmode is not None:  # libpq's name; asyncpg calls it ssl
            url = url.difference_update_query(["sslmode"]).update_query_dict({"ssl": sslmode})
        return url
    raise ValueError(f"unsupported database URL scheme {url.drivername!r} (use sqlite:/// or postgresql://)")


def redacted_url(database_url: str | URL) -> str:
    """``database_url`` with its password hidden, for logs and start-up lines."""
    return make_url(database_url).render_as_string(hide_password=True)


def is_sqlite(database_url: str | URL) -> bool:
    return make_url(database_url).get_backend_name() == "sqlite"


def make_engine(
    database_url: str | URL,
    *,
    synchronous: str = "NORMAL",
    busy_timeout_ms: int = 10_000,
    echo: bool = False,
) -> AsyncEngine:
    """An :class:`AsyncEngine` for ``database_url``; see the module docstring."""
    url = async_url(database_url)
    if url.get_backend_name() != "sqlite":
        return create_async_engine(url, echo=echo, pool_pre_ping=True)
    mode = synchronous.upper()
    if mode not in _SYNCHRONOUS:
        raise ValueError(f"synchronous must be one of {sorted(_SYNCHRONOUS)}, got {synchronous!r}")
    memory = url.database in (None, "", ":memory:")
    options: dict[str, Any] = {"echo": echo}
    if memory:
        options.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    engine = create_async_engine(url, **options)
    pragmas = [
        "PRAGMA journal_mode=WAL",
        f"PRAGMA synchronous={mode}",
        f"PRAGMA busy_timeout={int(busy_timeout_ms)}",
        "PRAGMA foreign_keys=ON",
    ]

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            for pragma in pragmas:
                cursor.execute(pragma)
        finally:
            cursor.close()

    return engine
