"""The SQL schema of the queryable history: SQLAlchemy 2 typed ORM models.

Guarantees
----------
* Portable: every type, key and index here exists on SQLite and on Postgres; the
  one dialect-specific feature is the partial index of open orders, declared for both
  (``sqlite_where`` / ``postgresql_where``). :mod:`investo.store.migrations` creates
  exactly this schema (a test compares them).
* Money is integers, as in the core: prices in ticks, quantities in lots, amounts in
  an asset's smallest unit. Columns that hold one balance change or one trade's
  value are ``BIGINT``: the accounts engine caps every asset's total supply below
  2^63 (``MAX_SUPPLY``), so a single leg, fee or notional always fits. Columns that
  *accumulate* without such a cap (an order's cumulative quote, a candle's volumes)
  are :class:`Amount`: ``NUMERIC(38, 0)`` on Postgres (exact to 10^38), ``INTEGER``
  on SQLite (exact to 2^63 - 1; SQLite has no wider exact integer, and a sum past
  that cannot be stored there). Python always sees ``int``.
* Times are milliseconds since the epoch (``BIGINT``), the ``ts`` of the command
  that caused the row, never the writer's clock.
* Enumerations are stored as Binance's names (``BUY``, ``LIMIT``, ``GTC``,
  ``PARTIALLY_FILLED``, ``EXPIRE_MAKER``) so the rows read the same as the API.
* History tables (orders, order_updates, trades, ledger, candles) carry user ids
  without a foreign key: they are derived from the engine's log, which knows user
  ids whether or not the ``users`` row exists (user 0 is the fee account and never
  has a row). ``api_keys`` does reference ``users``.
* The log offset columns are named ``log_offset`` (``OFFSET`` is an SQL keyword).

Costs: each history row is written once by the writer; the writer updates only
``orders`` (once per touched order per transaction), ``candles`` (upsert, once per
touched candle per transaction) and ``writer_progress`` (once per transaction).
Every index below serves a query in :mod:`investo.store.queries` (the ledger and
``order_updates`` have none but their keys: no request reads them, they are read
whole, aggregated or joined, by the rebuild from SQL, tests and audits; holdings add
the trades, read by the trades' user indexes or whole).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = [
    "INTERVALS",
    "OPEN_STATUSES",
    "OPEN_STATUS_SQL",
    "Amount",
    "ApiKey",
    "Base",
    "Candle",
    "ClusterConfig",
    "DemoClaim",
    "EngineSeq",
    "LedgerEntry",
    "Order",
    "OrderUpdate",
    "Trade",
    "User",
    "WriterProgress",
]

OPEN_STATUSES: Final = ("NEW", "PARTIALLY_FILLED")
OPEN_STATUS_SQL: Final = "status IN ('NEW', 'PARTIALLY_FILLED')"
"""The open-order predicate, spelled literally: SQLite uses a partial index only for a
query whose WHERE clause contains the index's condition with the same constants."""

NAMING: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Id = BigInteger().with_variant(Integer(), "sqlite")
"""An auto-numbered key: SQLite numbers only an ``INTEGER PRIMARY KEY`` (rowid alias)."""


class Amount(TypeDecorator[int]):
    """An exact integer that may outgrow 64 bits: NUMERIC(38, 0) on Postgres, INTEGER on SQLite."""

    impl = Numeric(38, 0)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(38, 0))

    def process_bind_param(self, value: int | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return int(value) if dialect.name == "sqlite" else Decimal(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else int(value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


# --------------------------------------------------------------------------------
# Users and keys (written by the API)
# --------------------------------------------------------------------------------


class User(Base):
    """A registered user. Ids start at 1; 0 is the exchange's fee account and has no row."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_ms: Mapped[int] = mapped_column(BigInteger)


class ApiKey(Base):
    """An Ed25519 public key a user signs requests with; ``key_id`` is the ``X-MBX-APIKEY``."""

    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_user_id", "user_id"),)

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"))
    public_key: Mapped[str] = mapped_column(Text)
    label: Mapped[str] = mapped_column(String(100), default="")
    created_ms: Mapped[int] = mapped_column(BigInteger)
    revoked_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class DemoClaim(Base):
    """A demo-funds deposit the API made for a user (the log's ``Deposit`` has no reason)."""

    __tablename__ = "demo_claims"
    __table_args__ = (Index("ix_demo_claims_user_asset_time", "user_id", "asset", "time_ms"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    asset: Mapped[str] = mapped_column(String(20))
    amount: Mapped[int] = mapped_column(BigInteger)
    time_ms: Mapped[int] = mapped_column(BigInteger)


# --------------------------------------------------------------------------------
# History (written by the HistoryWriter from applied commands)
# --------------------------------------------------------------------------------


class Order(Base):
    """Every accepted order and its current state (Binance's order fields, in integer units).

    ``orig_quote_qty`` is the quote a MARKET BUY by quote amount may spend (0 otherwise);
    ``cum_quote_qty`` is the quote traded so far, fees excluded (Binance's
    ``cummulativeQuoteQty``). ``time_in_force`` is what the engine applied (IOC for
    MARKET, GTC for LIMIT_MAKER).
    """

    __tablename__ = "orders"
    __table_args__ = (
        Index("ix_orders_user_symbol_order", "user_id", "symbol", "order_id"),
        Index("ix_orders_user_symbol_client", "user_id", "symbol", "client_order_id"),
        Index(
            "ix_orders_open",
            "user_id",
            "symbol",
            sqlite_where=text(OPEN_STATUS_SQL),
            postgresql_where=text(OPEN_STATUS_SQL),
        ),
    )

    order_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(BigInteger)
    symbol: Mapped[str] = mapped_column(String(40))
    side: Mapped[str] = mapped_column(String(4))
    type: Mapped[str] = mapped_column(String(16))
    time_in_force: Mapped[str] = mapped_column(String(3))
    price_ticks: Mapped[int] = mapped_column(BigInteger)
    orig_qty_lots: Mapped[int] = mapped_column(BigInteger)
    orig_quote_qty: Mapped[int] = mapped_column(Amount)
    executed_qty_lots: Mapped[int] = mapped_column(BigInteger)
    cum_quote_qty: Mapped[int] = mapped_column(Amount)
    status: Mapped[str] = mapped_column(String(20))
    client_order_id: Mapped[str] = mapped_column(String(64))
    stp_mode: Mapped[str] = mapped_column(String(16))
    time_ms: Mapped[int] = mapped_column(BigInteger)
    update_time_ms: Mapped[int] = mapped_column(BigInteger)
    working_time_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class OrderUpdate(Base):
    """One state change of one order (``kind`` is the event's name), in log order."""

    __tablename__ = "order_updates"
    # No index by order id: no API query reads these rows, and one cost Postgres about 1.3 ms
    # of CPU per 1,000 commands (migration 0005).

    log_offset: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    order_id: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(20))
    executed_qty_lots: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    time_ms: Mapped[int] = mapped_column(BigInteger)


class Trade(Base):
    """One match, at the maker's price. Trade ids count per symbol from 1, without gaps."""

    __tablename__ = "trades"
    __table_args__ = (
        Index("ix_trades_maker_user_symbol", "maker_user", "symbol", "trade_id"),
        Index("ix_trades_taker_user_symbol", "taker_user", "symbol", "trade_id"),
        Index("ix_trades_symbol_time", "symbol", "time_ms", "trade_id"),
    )

    symbol: Mapped[str] = mapped_column(String(40), primary_key=True)
    trade_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    price_ticks: Mapped[int] = mapped_column(BigInteger)
    qty_lots: Mapped[int] = mapped_column(BigInteger)
    quote_qty: Mapped[int] = mapped_column(BigInteger)
    time_ms: Mapped[int] = mapped_column(BigInteger)
    taker_side: Mapped[str] = mapped_column(String(4))
    maker_order_id: Mapped[int] = mapped_column(BigInteger)
    taker_order_id: Mapped[int] = mapped_column(BigInteger)
    maker_user: Mapped[int] = mapped_column(BigInteger)
    taker_user: Mapped[int] = mapped_column(BigInteger)
    maker_fee: Mapped[int] = mapped_column(BigInteger)
    taker_fee: Mapped[int] = mapped_column(BigInteger)
    log_offset: Mapped[int] = mapped_column(BigInteger)


class LedgerEntry(Base):
    """One change of a user's total (available + reserved) holding of one asset that no trade explains.

    ``reason``: ``deposit`` or ``withdraw`` (``symbol`` and ``ref`` NULL). What trades move
    is not here: it follows from the ``trades`` rows (each side's base and quote, fees
    included, and the fee account's credit) and the markets' units, and every reader of
    holdings adds it (:func:`investo.store.queries.trade_moves`). Up to migration 0003 the
    writer also wrote each trade's legs here (``trade``, ``fee``, naming the trade by
    ``symbol`` and ``ref``); 0004 deletes them so nothing counts twice.
    """

    __tablename__ = "ledger"
    # No index by user: no API query reads the ledger by user, and one cost Postgres about a
    # tenth of the history writer's database CPU per order (migration 0003).

    log_offset: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(BigInteger)
    asset: Mapped[str] = mapped_column(String(20))
    delta: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(16))
    symbol: Mapped[str | None] = mapped_column(String(40), nullable=True)
    ref: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    time_ms: Mapped[int] = mapped_column(BigInteger)


class Candle(Base):
    """OHLCV of one interval that had trades (empty intervals are filled at query time)."""

    __tablename__ = "candles"

    symbol: Mapped[str] = mapped_column(String(40), primary_key=True)
    interval: Mapped[str] = mapped_column(String(3), primary_key=True)
    open_time_ms: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    open: Mapped[int] = mapped_column(BigInteger)
    high: Mapped[int] = mapped_column(BigInteger)
    low: Mapped[int] = mapped_column(BigInteger)
    close: Mapped[int] = mapped_column(BigInteger)
    volume: Mapped[int] = mapped_column(Amount)
    quote_volume: Mapped[int] = mapped_column(Amount)
    trades: Mapped[int] = mapped_column(BigInteger)
    close_time_ms: Mapped[int] = mapped_column(BigInteger)


class WriterProgress(Base):
    """The last log offset a writer has committed: everything at or below it is stored."""

    __tablename__ = "writer_progress"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    log_offset: Mapped[int] = mapped_column(BigInteger)


class EngineSeq(Base):
    """The highest event seq (``key``: ``accounts`` or ``market:<symbol>``) a writer's committed rows carry.

    Written in the same transaction as the rows and ``writer_progress``, so it
    describes exactly the committed history: what an engine rebuilt from SQL numbers on from.
    """

    __tablename__ = "engine_seqs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class ClusterConfig(Base):
    """A distributed cluster's configuration document (markets, shard map) per Redis namespace."""

    __tablename__ = "cluster_configs"

    namespace: Mapped[str] = mapped_column(String(200), primary_key=True)
    config: Mapped[str] = mapped_column(Text)
    updated_ms: Mapped[int] = mapped_column(BigInteger)


INTERVALS: Final = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}
"""The candle intervals stored, in milliseconds. Each is a whole number of minutes and
its candles open at multiples of it since the epoch (so ``1d`` candles open at 00:00 UTC)."""
