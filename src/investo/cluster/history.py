"""What the SQL history holds of a cluster: its configuration, and each shard's state in it.

The DB writer (:mod:`investo.cluster.dbwriter`) writes every shard's output stream to
SQL, naming each stream's watermark after the stream (``<ns>:<role>:<shard>:out``) and
keeping, in the same transaction, the highest event seq per counter (``engine_seqs``).
It also saves the cluster's configuration document (``cluster_configs``). From these
a shard's state is read back as of the committed history:

* matching shard: per market, the open orders (status ``NEW`` / ``PARTIALLY_FILLED``,
  lots left = original − executed) in the order they arrived (the log offset of their
  ``OrderAccepted`` row), the market's last seq and last trade id;
* accounts shard: per user and asset of the shard the total holding: the ledger's sum
  (deposits and withdrawals) plus what the user's trades moved (summed by SQL per user,
  symbol and side, mapped to assets with the markets' units:
  :func:`investo.store.queries.trade_moves`); the fee account's copy on this shard (the
  fees its users paid, from the same sums); deposits and withdrawals per asset; the
  shard's open orders; the event seq; the next order number (after the highest order id
  the shard gave).

Invariants: every read is of committed rows only, in one transaction per shard
(a repeatable snapshot on Postgres), so the parts agree with each other.

Costs: one pass over the ledger (deposits and withdrawals only) and two over the trades
(maker side, taker side; aggregated by the database, no index needed: ``user % shards``
selects by a scan anyway), plus its open orders, joined with their ``OrderAccepted``
rows (one scan of ``order_updates``, which has no index by order id). Run while nothing
writes (Redis lost: no stream feeds the writer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import Table, and_, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from investo.cluster.topology import STREAMS_PER_OFFSET, Role, Topology
from investo.core.messages import OrderType, Side
from investo.core.rebuild import RestingOrder
from investo.store.bulk import LEDGER, ORDER_UPDATES, ORDERS, PROGRESS, SEQS, TRADES
from investo.store.models import OPEN_STATUSES, ClusterConfig
from investo.store.queries import trade_moves

CONFIGS: Table = ClusterConfig.__table__  # type: ignore[assignment]


@dataclass
class ShardHistory:
    """One shard's state as the committed history holds it (see the module docstring)."""

    role: Role
    shard: int
    written: int  # the output stream's last offset committed to SQL (0: nothing)
    seq: int = 0  # accounts: the shard's event seq
    next_local: int = 1  # accounts: the next order number
    holdings: dict[tuple[int, str], int] = field(default_factory=dict)
    deposited: dict[str, int] = field(default_factory=dict)
    withdrawn: dict[str, int] = field(default_factory=dict)
    orders: list[RestingOrder] = field(default_factory=list)  # open orders, in arrival order
    market_seqs: dict[str, tuple[int, int]] = field(default_factory=dict)  # symbol -> (seq, last trade id)


async def save_config(db: AsyncEngine, topology: Topology) -> None:
    """Save (or replace) the cluster's configuration document under its namespace."""
    stmt = (postgresql.insert if db.dialect.name == "postgresql" else sqlite.insert)(CONFIGS)
    values = {"namespace": topology.namespace, "config": topology.encode().decode(), "updated_ms": _now_ms()}
    upsert = stmt.values(**values).on_conflict_do_update(
        index_elements=[CONFIGS.c.namespace],
        set_={"config": values["config"], "updated_ms": values["updated_ms"]},
    )
    async with db.begin() as conn:
        await conn.execute(upsert)


async def load_config(db: AsyncEngine, namespace: str) -> Topology | None:
    """The configuration saved for ``namespace``, or None."""
    async with db.connect() as conn:
        found = await conn.scalar(select(CONFIGS.c.config).where(CONFIGS.c.namespace == namespace))
    return None if found is None else Topology.decode(namespace, found)


async def written_offset(db: AsyncEngine, topology: Topology, role: Role, shard: int) -> int:
    """The last offset of the shard's output stream committed to SQL (0: none)."""
    async with db.connect() as conn:
        return await _written(conn, topology.output_prefix(role, shard))


async def _written(conn: AsyncConnection, name: str) -> int:
    found = await conn.scalar(select(PROGRESS.c.log_offset).where(PROGRESS.c.name == name))
    return 0 if found is None else int(found) // STREAMS_PER_OFFSET


async def _seqs(conn: AsyncConnection, name: str) -> dict[str, int]:
    rows = await conn.execute(select(SEQS.c.key, SEQS.c.value).where(SEQS.c.name == name))
    return {key: int(value) for key, value in rows}


async def read_shard(db: AsyncEngine, topology: Topology, role: Role, shard: int) -> ShardHistory:
    """Shard ``shard`` of ``role`` as the committed history holds it."""
    async with db.connect() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        name = topology.output_prefix(role, shard)
        history = ShardHistory(role, shard, await _written(conn, name))
        if role == "matching":
            await _read_matching(conn, topology, shard, history)
        else:
            await _read_accounts(conn, topology, shard, history)
        await conn.rollback()
    return history


async def _open_orders(conn: AsyncConnection, where: object) -> list[RestingOrder]:
    o, u = ORDERS.c, ORDER_UPDATES.c
    query = (
        select(
            o.order_id, o.user_id, o.symbol, o.side, o.type, o.price_ticks,
            o.orig_qty_lots - o.executed_qty_lots, o.client_order_id,
        )
        .select_from(ORDERS.join(ORDER_UPDATES, and_(u.order_id == o.order_id, u.kind == "OrderAccepted")))
        .where(o.status.in_(OPEN_STATUSES), where)  # type: ignore[arg-type]
        .order_by(u.log_offset, u.idx)
    )  # fmt: skip
    return [
        RestingOrder(oid, user, symbol, Side[side], OrderType[type_], price, left, cid)
        for oid, user, symbol, side, type_, price, left, cid in await conn.execute(query)
    ]


async def _read_matching(conn: AsyncConnection, topology: Topology, shard: int, out: ShardHistory) -> None:
    markets = topology.markets_of(shard)
    seqs = await _seqs(conn, topology.output_prefix("matching", shard))
    t = TRADES.c
    last_trades = dict(
        (symbol, int(last))
        for symbol, last in await conn.execute(
            select(t.symbol, func.max(t.trade_id)).where(t.symbol.in_(markets)).group_by(t.symbol)
        )
    )
    out.market_seqs = {s: (seqs.get(f"market:{s}", 0), last_trades.get(s, 0)) for s in markets}
    out.orders = await _open_orders(conn, ORDERS.c.symbol.in_(markets))


async def _read_accounts(conn: AsyncConnection, topology: Topology, shard: int, out: ShardHistory) -> None:
    n = topology.accounts_shards
    seqs = await _seqs(conn, topology.output_prefix("accounts", shard))
    out.seq = seqs.get("accounts", 0)
    o = ORDERS.c
    top = await conn.scalar(select(func.max(o.order_id)).where(o.order_id % n == shard))
    out.next_local = (int(top) // n + 1) if top else 1
    out.orders = await _open_orders(conn, o.user_id % n == shard)
    lg = LEDGER.c
    mine = and_(lg.user_id % n == shard, lg.user_id != 0)
    for user, asset, total in await conn.execute(
        select(lg.user_id, lg.asset, func.sum(lg.delta)).where(mine).group_by(lg.user_id, lg.asset)
    ):
        out.holdings[int(user), asset] = int(total)
    # What the trades moved; the fee account (user 0) is kept per shard: each shard credits
    # the fees of its own users.
    markets = {symbol: spec.core for symbol, spec in topology.markets.items()}
    moves = await trade_moves(conn, markets, lambda user: user % n == shard)
    for (user, asset), moved in moves.holdings.items():
        if user != 0:
            out.holdings[user, asset] = out.holdings.get((user, asset), 0) + moved
    flows = (
        select(lg.reason, lg.asset, func.sum(lg.delta))
        .where(lg.user_id % n == shard, lg.reason.in_(("deposit", "withdraw")))
        .group_by(lg.reason, lg.asset)
    )
    for reason, asset, total in await conn.execute(flows):
        if reason == "deposit":
            out.deposited[asset] = int(total)
        else:
            out.withdrawn[asset] = -int(total)
    fees = dict(moves.fees)
    if shard == 0:  # the fee account's own deposits and withdrawals, if any, are shard 0's
        for asset, total in await conn.execute(
            select(lg.asset, func.sum(lg.delta))
            .where(lg.user_id == 0, lg.reason.in_(("deposit", "withdraw")))
            .group_by(lg.asset)
        ):
            fees[asset] = fees.get(asset, 0) + int(total)
    for asset, total in fees.items():
        if total:
            out.holdings[0, asset] = total


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
