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

from collections.abc import Iterator
from pathlib import Path

import pytest

from postgres_fixtures import fresh_database

BACKENDS = ("sqlite", pytest.param("postgres", marks=pytest.mark.postgres))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: needs a real Postgres server (see tests/conftest.py)")
    config.addinivalue_line("markers", "distributed: an end-to-end test of `investo up --redis --database`")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a fresh, empty Postgres database, dropped after the test."""
    with fresh_database() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def history_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh history database: a SQLite file, or a Postgres database (see the module docstring)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.db'}"
    return str(request.getfixturevalue("postgres_url"))
