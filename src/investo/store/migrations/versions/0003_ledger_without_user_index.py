"""The ledger without its (user_id, asset) index: no query served by the API reads the ledger by user.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07

The ledger is read whole, aggregated, when a cluster is rebuilt from SQL (per accounts
shard, ``user_id % shards``: a scan whatever the indexes) and by
:func:`investo.store.queries.ledger_balances` (tests and audits: now a scan too). Every
ledger row cost Postgres an insertion into this index (random by user), about a tenth
of the history writer's database CPU per order.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_ledger_user_asset", table_name="ledger")


def downgrade() -> None:
    op.create_index("ix_ledger_user_asset", "ledger", ["user_id", "asset"])
