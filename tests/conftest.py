"""Fixtures shared by every suite: the databases the SQL history is tested on.

* ``postgres_url``: a fresh, empty Postgres database for one test, created on the server
  named by ``INVESTO_TEST_POSTGRES`` (a URL of an existing database to connect to for
  ``CREATE DATABASE``; default ``postgresql://postgres@127.0.0.1:5432/test``) under a
  unique name, and dropped after the test. Without a reachable server (or without
  asyncpg) the test is skipped with the reason, except in CI (``CI=true``), where it
  fails: CI must run the Postgres tests.
* ``history_url``: parametrised ``sqlite`` / ``postgres`` (ids ``[sqlite]``, ``[postgres]``;
  the Postgres ones also carry the ``postgres`` marker): the URL of a fresh SQLite file or
  of a fresh Postgres database, so one test's assertions run on both.

Select one backend with ``-k sqlite`` / ``-k postgres`` or ``-m postgres`` / ``-m "not postgres"``.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy.engine import make_url

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
POSTGRES_ADMIN_URL = os.environ.get("INVESTO_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", pytest.param("postgres", marks=pytest.mark.postgres))

T = TypeVar("T")
_unreachable: list[str] = []  # the reason Postgres cannot be used, once found (per session)
_checked: list[bool] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: needs a real Postgres server (see tests/conftest.py)")


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


def _require_postgres() -> None:
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


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a fresh, empty Postgres database, dropped after the test."""
    _require_postgres()
    name = f"investo_test_{uuid.uuid4().hex[:20]}"
    _run(_create(name))
    try:
        yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        _run(_drop(name))


@pytest.fixture(params=BACKENDS)
def history_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh history database: a SQLite file, or a Postgres database (see the module docstring)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.db'}"
    return str(request.getfixturevalue("postgres_url"))
