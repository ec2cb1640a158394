"""The initial history schema: users, keys, demo claims, orders, updates, trades, ledger, candles.

Revision ID: 0001
Revises:
Create Date: 2026-11-25

Portable: the same DDL on SQLite and Postgres. ``Id`` is an auto-numbered key
(``INTEGER PRIMARY KEY`` on SQLite, which only numbers a rowid alias; ``BIGINT``
elsewhere). ``AMOUNT`` is an exact integer that may outgrow 64 bits on Postgres
(``NUMERIC(38, 0)``); SQLite stores it as ``INTEGER``. See :mod:`investo.store.models`.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN_STATUS_SQL = "status IN ('NEW', 'PARTIALLY_FILLED')"


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _amount() -> sa.types.TypeEngine[Decimal]:
    return sa.Numeric(38, 0).with_variant(sa.BigInteger(), "sqlite")


def _big(name: str, nullable: bool = False) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", _id(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        _big("created_ms"),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(64), nullable=False),
        _big("user_id"),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        _big("created_ms"),
        _big("revoked_ms", nullable=True),
        sa.PrimaryKeyConstraint("key_id", name="pk_api_keys"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_api_keys_user_id_users"),
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])

    op.create_table(
        "demo_claims",
        sa.Column("id", _id(), primary_key=True, autoincrement=True),
        _big("user_id"),
        sa.Column("asset", sa.String(20), nullable=False),
        _big("amount"),
        _big("time_ms"),
        sa.PrimaryKeyConstraint("id", name="pk_demo_claims"),
    )
    op.create_index("ix_demo_claims_user_asset_time", "demo_claims", ["user_id", "asset", "time_ms"])

    op.create_table(
        "orders",
        sa.Column("order_id", sa.BigInteger(), autoincrement=False, nullable=False),
        _big("user_id"),
        sa.Column("symbol", sa.String(40), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("time_in_force", sa.String(3), nullable=False),
        _big("price_ticks"),
        _big("orig_qty_lots"),
        sa.Column("orig_quote_qty", _amount(), nullable=False),
        _big("executed_qty_lots"),
        sa.Column("cum_quote_qty", _amount(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("client_order_id", sa.String(64), nullable=False),
        sa.Column("stp_mode", sa.String(16), nullable=False),
        _big("time_ms"),
        _big("update_time_ms"),
        _big("working_time_ms", nullable=True),
        sa.PrimaryKeyConstraint("order_id", name="pk_orders"),
    )
    op.create_index("ix_orders_user_symbol_order", "orders", ["user_id", "symbol", "order_id"])
    op.create_index("ix_orders_user_symbol_client", "orders", ["user_id", "symbol", "client_order_id"])
    op.create_index(
        "ix_orders_open",
        "orders",
        ["user_id", "symbol"],
        sqlite_where=sa.text(OPEN_STATUS_SQL),
        postgresql_where=sa.text(OPEN_STATUS_SQL),
    )

    op.create_table(
        "order_updates",
        sa.Column("log_offset", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.Integer(), autoincrement=False, nullable=False),
        _big("order_id"),
        sa.Column("status", sa.String(20), nullable=False),
        _big("executed_qty_lots"),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        _big("time_ms"),
        sa.PrimaryKeyConstraint("log_offset", "idx", name="pk_order_updates"),
    )
    op.create_index("ix_order_updates_order_id", "order_updates", ["order_id"])

    op.create_table(
        "trades",
        sa.Column("symbol", sa.String(40), nullable=False),
        sa.Column("trade_id", sa.BigInteger(), autoincrement=False, nullable=False),
        _big("price_ticks"),
        _big("qty_lots"),
        _big("quote_qty"),
        _big("time_ms"),
        sa.Column("taker_side", sa.String(4), nullable=False),
        _big("maker_order_id"),
        _big("taker_order_id"),
        _big("maker_user"),
        _big("taker_user"),
        _big("maker_fee"),
        _big("taker_fee"),
        _big("log_offset"),
        sa.PrimaryKeyConstraint("symbol", "trade_id", name="pk_trades"),
    )
    op.create_index("ix_trades_maker_user_symbol", "trades", ["maker_user", "symbol", "trade_id"])
    op.create_index("ix_trades_taker_user_symbol", "trades", ["taker_user", "symbol", "trade_id"])
    op.create_index("ix_trades_symbol_time", "trades", ["symbol", "time_ms", "trade_id"])

    op.create_table(
        "ledger",
        sa.Column("log_offset", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.Integer(), autoincrement=False, nullable=False),
        _big("user_id"),
        sa.Column("asset", sa.String(20), nullable=False),
        _big("delta"),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("symbol", sa.String(40), nullable=True),
        _big("ref", nullable=True),
        _big("time_ms"),
        sa.PrimaryKeyConstraint("log_offset", "idx", name="pk_ledger"),
    )
    op.create_index("ix_ledger_user_asset", "ledger", ["user_id", "asset"])

    op.create_table(
        "candles",
        sa.Column("symbol", sa.String(40), nullable=False),
        sa.Column("interval", sa.String(3), nullable=False),
        sa.Column("open_time_ms", sa.BigInteger(), autoincrement=False, nullable=False),
        _big("open"),
        _big("high"),
        _big("low"),
        _big("close"),
        sa.Column("volume", _amount(), nullable=False),
        sa.Column("quote_volume", _amount(), nullable=False),
        _big("trades"),
        _big("close_time_ms"),
        sa.PrimaryKeyConstraint("symbol", "interval", "open_time_ms", name="pk_candles"),
    )

    op.create_table(
        "writer_progress",
        sa.Column("name", sa.String(64), nullable=False),
        _big("log_offset"),
        sa.PrimaryKeyConstraint("name", name="pk_writer_progress"),
    )


def downgrade() -> None:
    for index, table in (
        ("ix_ledger_user_asset", "ledger"),
        ("ix_trades_symbol_time", "trades"),
        ("ix_trades_taker_user_symbol", "trades"),
        ("ix_trades_maker_user_symbol", "trades"),
        ("ix_order_updates_order_id", "order_updates"),
        ("ix_orders_open", "orders"),
        ("ix_orders_user_symbol_client", "orders"),
        ("ix_orders_user_symbol_order", "orders"),
        ("ix_demo_claims_user_asset_time", "demo_claims"),
        ("ix_api_keys_user_id", "api_keys"),
    ):
        op.drop_index(index, table_name=table)
    for table in (
        "writer_progress",
        "candles",
        "ledger",
        "trades",
        "order_updates",
        "orders",
        "demo_claims",
        "api_keys",
        "users",
    ):
        op.drop_table(table)
