"""Engine watermarks and cluster configurations, for rebuilding a lost log from SQL.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07

* ``engine_seqs``: per writer (``name``, as in ``writer_progress``) and counter
  (``key``: ``accounts`` for an accounts shard's event seq, ``market:<symbol>`` for a
  market's matching seq), the highest value the committed events carry. Written in the
  same transaction as the rows.
* ``cluster_configs``: the distributed mode's configuration document per Redis
  namespace (markets, shard map), saved by the DB writer so that a cluster can be
  restored into an empty Redis.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "engine_seqs",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", "key", name="pk_engine_seqs"),
    )
    op.create_table(
        "cluster_configs",
        sa.Column("namespace", sa.String(200), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("namespace", name="pk_cluster_configs"),
    )


def downgrade() -> None:
    op.drop_table("cluster_configs")
    op.drop_table("engine_seqs")
