"""The queryable history in SQL: schema, migrations, the history writer and the API's queries.

* :mod:`investo.store.models` — the tables (SQLAlchemy 2 typed ORM models).
* :mod:`investo.store.migrate` — ``upgrade(url)``: Alembic migrations, run at every start.
* :mod:`investo.store.db` — ``make_engine(url)``: SQLite (aiosqlite) or Postgres (asyncpg).
* :mod:`investo.store.writer` — :class:`HistoryWriter`, the host listener that writes rows.
* :mod:`investo.store.queries` — the reads (and user/key writes) of the REST API.
"""
