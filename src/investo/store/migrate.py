"""Bring a database to the latest schema with Alembic, programmatically (no alembic.ini).

Guarantees
----------
* :func:`upgrade` / :func:`upgrade_async` run ``alembic upgrade head`` (or to
  ``revision``) on ``sqlite:///path`` or ``postgresql://...`` URLs, or on an existing
  :class:`AsyncEngine` (needed for an in-memory SQLite database, which lives only as
  long as its engine). Running it on an up-to-date database changes nothing, so the
  exchange runs it at every start.
* The migration scripts ship inside the package (``investo/store/migrations``); the
  Alembic :class:`Config` is built in code by :func:`alembic_config`.
* :func:`upgrade` may be called with or without a running event loop: inside one it
  runs the migration on a helper thread's own loop and blocks until it is done (prefer
  ``await upgrade_async(...)`` there).
* On Postgres, processes that upgrade one database at the same time take turns (an
  advisory lock, see ``migrations/env.py``): one migrates, the others find it up to
  date. Within one process run one upgrade at a time (Alembic's ``context`` is global).

Cost: one connection and one read of ``alembic_version`` when up to date; a fresh
database gets the whole schema in one run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from investo.store.db import make_engine

log = logging.getLogger(__name__)

__all__ = ["MIGRATIONS_DIR", "alembic_config", "current_revision", "upgrade", "upgrade_async"]

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations (and at ``database_url``, if given)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if database_url is not None:
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def _upgrade_on(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def upgrade_async(target: str | AsyncEngine, revision: str = "head") -> None:
    """Run the migrations up to ``revision`` on a database URL or an engine."""
    engine = make_engine(target) if isinstance(target, str) else target
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade_on, revision)
    finally:
        if isinstance(target, str):
            await engine.dispose()


def upgrade(database_url: str, revision: str = "head") -> None:
    """Run the migrations up to ``revision``, blocking until done (see the module docstring)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(upgrade_async(database_url, revision))
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="investo-migrate") as pool:
        pool.submit(asyncio.run, upgrade_async(database_url, revision)).result()


async def open_migrated(database_url: str) -> AsyncEngine:
    """Migrate, then connect: a service's start-up. While the database cannot be reached (it may
    be starting too) it waits, saying so at most every 10 s."""
    warned = 0.0
    while True:
        try:
            await asyncio.to_thread(upgrade, database_url)
            return make_engine(database_url)
        except (OSError, OperationalError, InterfaceError) as exc:
            if time.monotonic() - warned > 10:
                log.warning("waiting for the database: %s", str(exc).splitlines()[0])
                warned = time.monotonic()
            await asyncio.sleep(1.0)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (None if it was never migrated)."""
    from alembic.runtime.migration import MigrationContext

    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(read)
