"""Alembic environment of Investo's history database (see :mod:`investo.store.migrate`).

Online runs use the connection that :func:`investo.store.migrate.upgrade_async` puts in
``config.attributes["connection"]``; without one (the ``alembic`` command line with a
``sqlalchemy.url``) it opens its own async engine with :func:`investo.store.db.make_engine`.
Offline runs (``--sql``) print the SQL. SQLite runs in batch mode so that later
migrations can alter tables there too.

On Postgres a run first takes a transaction-level advisory lock (:data:`MIGRATION_LOCK`),
so processes that start together against one database migrate it one after the other
(the later ones then find it up to date) instead of failing on each other's
``CREATE TABLE``. (SQLite has no such lock: there one process owns a data dir.)
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from investo.store.db import make_engine
from investo.store.models import Base

config = context.config
target_metadata = Base.metadata
MIGRATION_LOCK = 29_676_327_341_880_431  # int.from_bytes(b"investo"): pg_advisory_xact_lock's key


def _run(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":  # held until the migration's transaction ends
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine(url: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


def run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database: set sqlalchemy.url or pass a connection in config.attributes")
    asyncio.run(_run_with_own_engine(url))


if context.is_offline_mode():
    run_offline()
else:
    run_online()
