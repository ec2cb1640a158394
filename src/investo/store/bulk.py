"""How the history writer's rows reach SQL: one transaction per write, rows as tuples.

The history writer (:mod:`investo.store.writer`) builds every row as a plain tuple in
the layout declared here (``*_COLUMNS``), and hands a :class:`Tables` to a store:

* :class:`PostgresStore` owns one asyncpg connection (SQLAlchemy stays out of the hot
  path: no pool checkout, no pre-ping, no per-row parameter processing). Inserts go
  as binary ``COPY``; order changes as one ``UPDATE ... FROM unnest(<column arrays>)``
  (one statement for all: about a sixth less server CPU than a statement per row, of
  which the non-HOT updates' index insertions take the most); candle and seq upserts as one
  pipelined ``executemany`` each, with the SQL that SQLAlchemy compiles for the same
  statements on SQLite (one source for both).
* :class:`SqliteStore` runs the same statements through the engine's driver with the
  tuples as they are (sqlite3 takes ints, strs and None unchanged).

Invariants
----------
* **All or nothing.** A write is one transaction: the watermark's compare-and-set
  first, then every table. If the watermark is not where the writer last left it,
  nothing is written and :class:`WriterConflict` is raised. Any other failure rolls
  the transaction back and raises; the Postgres store then drops its connection (its
  state is unknown) and opens a new one on the next call.
* Amounts (``NUMERIC(38, 0)`` on Postgres) travel as Python ints both ways; asyncpg
  encodes them exactly, and the orders read back are converted to int.

Costs (Postgres, n rows, one round trip R each): BEGIN + watermark UPDATE + one COPY
per non-empty insert table (2R) + one statement (order changes) or executemany (upserts)
per non-empty update table (R) + COMMIT: about ten round trips per transaction,
whatever its size; building a COPY buffer is about 0.3 µs per column value. Loading the
committed state of orders is one ``SELECT ... = ANY($1)`` round trip for any number of ids.
"""

from __future__ import annotations

import abc
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, cast

from sqlalchemy import Dialect, Table, bindparam, case, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.dml import Insert, Update

from investo.store.models import (
    Amount,
    Candle,
    EngineSeq,
    LedgerEntry,
    Order,
    OrderUpdate,
    Trade,
    WriterProgress,
)

__all__ = [
    "CANDLE_COLUMNS",
    "LEDGER_COLUMNS",
    "ORDER_CHANGE_FIELDS",
    "ORDER_COLUMNS",
    "TRADE_COLUMNS",
    "UPDATE_COLUMNS",
    "OrderRow",
    "PostgresStore",
    "SqlStore",
    "SqliteStore",
    "Tables",
    "WriterConflict",
    "make_store",
]

Row = tuple[Any, ...]
OrderRow = tuple[int, str, int, int, int]
"""An order's committed state: (order id, status, executed lots, cumulative quote, update time)."""

ORDERS: Final = cast(Table, Order.__table__)
ORDER_UPDATES: Final = cast(Table, OrderUpdate.__table__)
TRADES: Final = cast(Table, Trade.__table__)
LEDGER: Final = cast(Table, LedgerEntry.__table__)
CANDLES: Final = cast(Table, Candle.__table__)
PROGRESS: Final = cast(Table, WriterProgress.__table__)
SEQS: Final = cast(Table, EngineSeq.__table__)

# The tuple layouts the history writer builds (tests check they name every column).
ORDER_COLUMNS: Final = (
    "order_id", "user_id", "symbol", "side", "type", "time_in_force", "price_ticks", "orig_qty_lots",
    "orig_quote_qty", "executed_qty_lots", "cum_quote_qty", "status", "client_order_id", "stp_mode",
    "time_ms", "update_time_ms", "working_time_ms",
)  # fmt: skip
UPDATE_COLUMNS: Final = (
    "log_offset", "idx", "order_id", "status", "executed_qty_lots", "kind", "reason", "time_ms",
)  # fmt: skip
TRADE_COLUMNS: Final = (
    "symbol", "trade_id", "price_ticks", "qty_lots", "quote_qty", "time_ms", "taker_side",
    "maker_order_id", "taker_order_id", "maker_user", "taker_user", "maker_fee", "taker_fee", "log_offset",
)  # fmt: skip
LEDGER_COLUMNS: Final = (
    "log_offset", "idx", "user_id", "asset", "delta", "reason", "symbol", "ref", "time_ms",
)  # fmt: skip
CANDLE_COLUMNS: Final = (
    "symbol", "interval", "open_time_ms", "open", "high", "low", "close", "volume", "quote_volume",
    "trades", "close_time_ms",
)  # fmt: skip
SEQ_COLUMNS: Final = ("name", "key", "value")
ORDER_CHANGE_FIELDS: Final = ("b_order_id", "b_status", "b_executed", "b_cum_quote", "b_update_time")


class WriterConflict(RuntimeError):
    """Another writer with the same name advanced the watermark first."""


@dataclass
class Tables:
    """One transaction's rows, each a tuple in its table's layout above."""

    orders: list[Row] = field(default_factory=list)  # inserted (ORDER_COLUMNS)
    order_changes: list[Row] = field(default_factory=list)  # orders of earlier writes (ORDER_CHANGE_FIELDS)
    order_updates: list[Row] = field(default_factory=list)
    trades: list[Row] = field(default_factory=list)
    ledger: list[Row] = field(default_factory=list)
    candles: list[Row] = field(default_factory=list)  # merged into stored candles (upsert)
    seqs: list[Row] = field(default_factory=list)  # engine seqs, raised to the new value (SEQ_COLUMNS)

    def count(self) -> int:
        return sum(map(len, self.in_order()))

    def in_order(self) -> tuple[list[Row], ...]:
        """The row lists in the order they are written (the order of :data:`_STATEMENTS`)."""
        return (
            self.orders, self.order_changes, self.order_updates, self.trades, self.ledger, self.candles,
            self.seqs,
        )  # fmt: skip


def _order_change() -> Update:
    return (
        update(ORDERS)
        .where(ORDERS.c.order_id == bindparam("b_order_id"))
        .values(
            status=bindparam("b_status"),
            executed_qty_lots=bindparam("b_executed"),
            cum_quote_qty=bindparam("b_cum_quote", type_=Amount()),
            update_time_ms=bindparam("b_update_time"),
        )
    )


def _candle_upsert(dialect: str) -> Insert:
    from sqlalchemy.dialects import postgresql, sqlite

    stmt: sqlite.Insert | postgresql.Insert
    if dialect == "sqlite":
        stmt = sqlite.insert(CANDLES)
    elif dialect == "postgresql":
        stmt = postgresql.insert(CANDLES)
    else:
        raise ValueError(f"the history writer supports sqlite and postgresql, not {dialect}")
    t = CANDLES.c
    new = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[t.symbol, t.interval, t.open_time_ms],
        set_={
            "high": case((new.high > t.high, new.high), else_=t.high),
            "low": case((new.low < t.low, new.low), else_=t.low),
            "close": new.close,
            "volume": t.volume + new.volume,
            "quote_volume": t.quote_volume + new.quote_volume,
            "trades": t.trades + new.trades,
        },
    )


def _seq_upsert(dialect: str) -> Insert:
    """Raise an engine seq to the new value (never lower it: a replayed batch changes nothing)."""
    from sqlalchemy.dialects import postgresql, sqlite

    stmt: sqlite.Insert | postgresql.Insert
    stmt = sqlite.insert(SEQS) if dialect == "sqlite" else postgresql.insert(SEQS)
    t = SEQS.c
    new = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[t.name, t.key], set_={"value": case((new.value > t.value, new.value), else_=t.value)}
    )


@dataclass(frozen=True)
class _Statement:
    """A statement compiled once for a dialect, and how to turn a layout tuple into its parameters.

    ``copy_table`` names the table when the statement is a plain insert (Postgres sends
    those as COPY with ``columns``, taking the tuples as they are).
    """

    sql: str
    parameters: Callable[[Row], Row]
    columns: tuple[str, ...]
    copy_table: str | None
    by_arrays: str | None = None  # Postgres: the same change as one statement over column arrays


def _compile(
    statement: Insert | Update, layout: Sequence[str], dialect: Dialect, *, plain: bool
) -> _Statement:
    compiled = statement.compile(dialect=dialect, column_keys=list(layout) if plain else None)
    names = list(compiled.positiontup or [])
    if sorted(names) != sorted(layout):
        raise AssertionError(f"{statement} takes {names}, the rows are {list(layout)}")
    indices = [list(layout).index(name) for name in names]
    identity = indices == list(range(len(layout)))
    parameters: Callable[[Row], Row] = (lambda row: row) if identity else _picker(indices)
    table = statement.table.name if plain and isinstance(statement.table, Table) else None
    return _Statement(compiled.string, parameters, tuple(layout), table)


def _picker(indices: list[int]) -> Callable[[Row], Row]:
    if len(indices) == 1:
        index = indices[0]
        return lambda row: (row[index],)
    return cast(Callable[[Row], Row], operator.itemgetter(*indices))


_ORDER_CHANGES_BY_ARRAYS: Final = (
    "UPDATE orders SET status = c.status, executed_qty_lots = c.executed, cum_quote_qty = c.cum_quote, "
    "update_time_ms = c.update_time "
    "FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::numeric[], $5::bigint[]) "
    "AS c(order_id, status, executed, cum_quote, update_time) WHERE orders.order_id = c.order_id"
)
""":func:`_order_change` for a whole transaction's rows at once (Postgres): one column array
per field of ORDER_CHANGE_FIELDS. Order ids are unique within a transaction's changes."""


def _statements(dialect: Dialect) -> tuple[_Statement, ...]:
    """The statements writing :meth:`Tables.in_order`, compiled for ``dialect``."""
    order_changes = _compile(_order_change(), ORDER_CHANGE_FIELDS, dialect, plain=False)
    if dialect.name == "postgresql":
        order_changes = replace(order_changes, by_arrays=_ORDER_CHANGES_BY_ARRAYS)
    return (
        _compile(insert(ORDERS), ORDER_COLUMNS, dialect, plain=True),
        order_changes,
        _compile(insert(ORDER_UPDATES), UPDATE_COLUMNS, dialect, plain=True),
        _compile(insert(TRADES), TRADE_COLUMNS, dialect, plain=True),
        _compile(insert(LEDGER), LEDGER_COLUMNS, dialect, plain=True),
        _compile(_candle_upsert(dialect.name), CANDLE_COLUMNS, dialect, plain=False),
        _compile(_seq_upsert(dialect.name), SEQ_COLUMNS, dialect, plain=False),
    )


class SqlStore(abc.ABC):
    """Writes a transaction's tables and moves the watermark; reads orders' committed state."""

    @abc.abstractmethod
    async def load_orders(self, order_ids: Iterable[int]) -> list[OrderRow]:
        """The committed state of those of ``order_ids`` that are stored."""

    @abc.abstractmethod
    async def write(self, name: str, expected: int, last: int, tables: Tables) -> None:
        """In one transaction: move ``name``'s watermark from ``expected`` to ``last``, write ``tables``."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the store's connection, if it holds one (the next call opens one again)."""


class SqliteStore(SqlStore):
    """Through the engine's pool and driver (the SQLite path; any SQLAlchemy engine would do)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._statements = _statements(engine.dialect)

    async def load_orders(self, order_ids: Iterable[int]) -> list[OrderRow]:
        ids = sorted(order_ids)
        c = ORDERS.c
        found: list[OrderRow] = []
        async with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                result = await conn.execute(
                    select(
                        c.order_id, c.status, c.executed_qty_lots, c.cum_quote_qty, c.update_time_ms
                    ).where(c.order_id.in_(ids[start : start + 500]))
                )
                found += [cast(OrderRow, tuple(row)) for row in result]
        return found

    async def write(self, name: str, expected: int, last: int, tables: Tables) -> None:
        async with self.engine.begin() as conn:
            moved = await conn.execute(
                update(PROGRESS)
                .where(PROGRESS.c.name == name, PROGRESS.c.log_offset == expected)
                .values(log_offset=last)
            )
            if moved.rowcount != 1:
                raise WriterConflict(f"the watermark of {name!r} is no longer {expected}")
            for statement, rows in zip(self._statements, tables.in_order(), strict=True):
                if rows:
                    await conn.exec_driver_sql(statement.sql, list(map(statement.parameters, rows)))

    async def close(self) -> None:
        """Nothing to release: connections go back to the engine's pool after each call."""


class PostgresStore(SqlStore):
    """One asyncpg connection of its own, opened on first use and after any failure."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._statements = _statements(engine.dialect)
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        self._connect_args: tuple[list[Any], dict[str, Any]] = (list(args), dict(kwargs))
        self._connection: Any = None  # asyncpg.Connection
        self._advance = "UPDATE writer_progress SET log_offset = $1 WHERE name = $2 AND log_offset = $3"
        self._load = (
            "SELECT order_id, status, executed_qty_lots, cum_quote_qty, update_time_ms FROM orders "
            "WHERE order_id = ANY($1::bigint[])"
        )

    async def _connect(self) -> Any:
        if self._connection is None or self._connection.is_closed():
            import asyncpg

            args, kwargs = self._connect_args
            self._connection = await asyncpg.connect(*args, **kwargs)
        return self._connection

    async def load_orders(self, order_ids: Iterable[int]) -> list[OrderRow]:
        ids = list(order_ids)
        if not ids:
            return []
        connection = await self._connect()
        try:
            rows = await connection.fetch(self._load, ids)
        except BaseException:
            self._drop()
            raise
        return [(r[0], r[1], r[2], int(r[3]), r[4]) for r in rows]

    async def write(self, name: str, expected: int, last: int, tables: Tables) -> None:
        connection = await self._connect()
        try:
            async with connection.transaction():
                if await connection.execute(self._advance, last, name, expected) != "UPDATE 1":
                    raise WriterConflict(f"the watermark of {name!r} is no longer {expected}")
                for statement, rows in zip(self._statements, tables.in_order(), strict=True):
                    if not rows:
                        continue
                    if statement.copy_table is not None:
                        await connection.copy_records_to_table(
                            statement.copy_table, records=rows, columns=statement.columns
                        )
                    elif statement.by_arrays is not None:
                        await connection.execute(statement.by_arrays, *map(list, zip(*rows, strict=True)))
                    else:
                        await connection.executemany(statement.sql, list(map(statement.parameters, rows)))
        except WriterConflict:
            raise
        except BaseException:
            self._drop()
            raise

    def _drop(self) -> None:
        """Forget the connection after a failure: its transaction state is unknown."""
        if self._connection is not None:
            self._connection.terminate()
            self._connection = None

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.close(timeout=5)
            except Exception:
                connection.terminate()


def make_store(engine: AsyncEngine) -> SqlStore:
    """The store for ``engine``'s dialect (Postgres or SQLite)."""
    name = engine.dialect.name
    if name == "postgresql":
        return PostgresStore(engine)
    if name == "sqlite":
        return SqliteStore(engine)
    raise ValueError(f"the history writer supports sqlite and postgresql, not {name}")
