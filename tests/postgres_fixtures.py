"""The test Postgres server: fresh databases on the server named by ``INVESTO_TEST_POSTGRES``.

(see tests/conftest.py for the ``postgres_url`` fixture.) ``fresh_database()`` is a context
manager giving the URL of a new empty database, dropped afterwards; ``require_postgres()``
skips the test (fails it in CI) when the server cannot be used.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from sqlalchemy.engine import make_url

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
POSTGRES_ADMIN_URL = os.environ.get("INVESTO_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
T = TypeVar("T")
_unreachable: list[str] = []  # the reason Postgres cannot be used, once found (per session)
_checked: list[bool] = []


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on its own event loop in a helper thread (leaves the test's loop alone)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-postgres") as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _admin_dsn() -> str:
    """The admin URL as asyncpg takes it (plain ``postgresql://``, no SQLAlchemy driver name)."""
    return make_url(POSTGRES_ADMIN_URL).set(drivername="postgresql").render_as_string(hide_password=False)


async def _probe() -> None:
    import asyncpg

    connection = await asyncpg.connect(_admin_dsn(), timeout=5)
    await connection.close()


async def _create(name: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(_admin_dsn(), timeout=10)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def _drop(name: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(_admin_dsn(), timeout=10)
    try:  # a connection a failed test left open must not keep the database alive
        await connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await connection.close()


def require_postgres() -> None:
    """Skip (or, in CI, fail) unless asyncpg is installed and the server answers."""
    if not _checked:
        _checked.append(True)
        try:
            import asyncpg  # noqa: F401
        except ImportError:
            _unreachable.append("asyncpg is not installed (pip install -e '.[dev]' -c constraints.txt)")
        else:
            try:
                _run(_probe())
            except Exception as error:
                where = make_url(POSTGRES_ADMIN_URL).render_as_string(hide_password=True)
                _unreachable.append(
                    f"Postgres is unreachable at {where} ({type(error).__name__}: {error}); "
                    "set INVESTO_TEST_POSTGRES to the URL of a database on a server where "
                    "this user may CREATE DATABASE"
                )
    if _unreachable:
        if IN_CI:
            pytest.fail(f"Postgres tests must run in CI: {_unreachable[0]}", pytrace=False)
        pytest.skip(_unreachable[0])


@contextlib.contextmanager
def fresh_database(prefix: str = "investo_test") -> Iterator[str]:
    """The URL of a fresh, empty database, dropped on exit."""
    require_postgres()
    name = f"{prefix}_{uuid.uuid4().hex[:20]}"
    _run(_create(name))
    try:
        yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        _run(_drop(name))
