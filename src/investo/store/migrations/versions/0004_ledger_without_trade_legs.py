"""The ledger without trade legs: the trades table is the record of what trades moved.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

Up to 0003 the history writer wrote, per trade, up to five ledger rows (reason
``trade``: each side's base leg and quote leg with its fee; ``fee``: the fee account's
credit), about 45 % of all history rows, though each follows from the trade's row
and the market's units. From 0004 on the ledger holds only deposits and withdrawals,
and every reader adds what the trades moved
(:func:`investo.store.queries.trade_moves`). A database written before would then
count every trade twice, so the upgrade deletes the old ``trade`` and ``fee`` rows
(one pass over the ledger; the ``trades`` rows carry the same amounts).

Upgrade with every writer of the old version stopped (one still running would add
legs after the delete). The downgrade cannot write the legs back (the markets' units
are not in the database): it refuses when any trade is stored, so an old version
never reads balances without their trades; an empty history downgrades. (On SQLite
the driver commits DDL at once: a refused downgrade from a later revision keeps what
the later steps' downgrades did, e.g. 0005's index, while the revision stays.)
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(sa.text("DELETE FROM ledger WHERE reason IN ('trade', 'fee')"))


def downgrade() -> None:
    if op.get_bind().scalar(sa.text("SELECT count(*) FROM (SELECT 1 FROM trades LIMIT 1) AS any_trade")):
        raise RuntimeError(
            "cannot downgrade below 0004 with trades stored: the ledger no longer holds their legs, "
            "and the markets' units needed to write them back are not in the database"
        )
