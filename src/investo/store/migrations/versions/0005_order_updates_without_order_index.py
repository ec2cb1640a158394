"""``order_updates`` without its index by order id: no query served by the API reads it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

``order_updates`` takes a row per order event (about 1.7 per command of the benchmark
flow, the most of any table once the ledger lost its trade legs in 0004), and each
row cost Postgres an insertion into ``ix_order_updates_order_id``: about 1.3 ms of
server CPU per 1,000 commands, of 19-23 in all (a COPY of the flow's rows with and
without the index, the least of five runs). Its readers do without: the rebuild from
SQL reads the ``OrderAccepted`` rows of open orders once (a hash join over one scan),
and :func:`investo.store.queries.order_updates` serves tests and audits (a scan, as
:func:`~investo.store.queries.ledger_balances` since 0003).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_order_updates_order_id", table_name="order_updates")


def downgrade() -> None:
    op.create_index("ix_order_updates_order_id", "order_updates", ["order_id"])
