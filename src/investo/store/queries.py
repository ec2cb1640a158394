"""The reads (and the few writes) the REST API makes on the SQL history.

Every function takes the :class:`AsyncEngine` and returns frozen msgspec Structs in
integer units (ticks, lots, an asset's smallest units, milliseconds); the API layer
formats decimals. Enumerations are Binance's names (``BUY``, ``FILLED``, ...).

Guarantees
----------
* Users and keys: names are unique (:class:`NameTaken`); user ids start at 1 (0 is the
  fee account) and rise, but may skip values on Postgres (a refused registration uses
  up a sequence value); a key id is 32 random URL-safe characters; a revoked key is
  never returned by :func:`key_lookup` / :func:`active_keys`.
* The same answers on SQLite and Postgres: every number is a Python ``int`` (Postgres
  returns ``NUMERIC`` amounts and ``SUM`` of ``BIGINT`` as ``Decimal``; they are
  converted exactly, never through ``float``); rows are ordered by integer columns,
  and the only string orderings (keys) are done in Python, bytewise, whatever the
  database's collation.
* Orders and trades are what the :class:`~investo.store.writer.HistoryWriter` has
  committed: wait for it (``writer.wait_for(offset)``) to read your own writes.
* Holdings are the ledger's sum (deposits, withdrawals) plus what the user's trades
  moved (:func:`trade_moves`): the ledger holds no trade legs (migration 0004).
* Paging follows Binance: with ``fromId`` / ``orderId`` or ``startTime`` the oldest
  matching rows come first; with neither, the most recent ``limit`` rows (still
  returned oldest first).
* Time filters on trades are turned into trade-id ranges (trade ids and times rise
  together within a symbol, because the host never stamps a later command with an
  earlier ``ts``), so every trade query walks an index by id.
* :func:`klines` fills intervals without trades with the previous close (open = high =
  low = close, volume 0, trades 0), from the first interval in range that has a candle
  at or before it, up to ``min(end, now)``; a market's history before its first trade
  is skipped, not filled.

Costs (n = rows returned)
-------------------------
* key and user functions: one indexed statement; :func:`active_keys`: one scan of keys.
* order_updates: a scan of ``order_updates`` (no index by order id; not used to serve
  requests).
* get_order: one index probe. open_orders: one partial-index range. all_orders: one
  index range over the user's orders in the symbol (time filters scan it).
* my_trades / recent_trades: O(n) by index, plus up to two probes to turn times into ids.
* agg_trades: O(trades in the n aggregates), read in pages.
* klines: two probes and one range of at most ``limit`` candles; filling is O(n).
* ticker_24h: one range of at most 1,440 1m candles, two ranges of trades (the partial
  minutes at both ends of the window) and two probes.
* trade_moves: two grouped statements over the selected users' trades (a scan unless the
  filter is one user: then the trades' user indexes).
* ledger_balances: a scan of the ledger (deposits and withdrawals only; no index by user)
  plus :func:`trade_moves` of one user; the fee account's adds a scan of the trades. Not
  used to serve requests.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

import msgspec
from sqlalchemy import ColumnElement, Select, Table, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from investo.core.markets import Market
from investo.store.models import (
    INTERVALS,
    OPEN_STATUS_SQL,
    ApiKey,
    Candle,
    DemoClaim,
    LedgerEntry,
    Order,
    OrderUpdate,
    Trade,
    User,
)

__all__ = [
    "AggTrade",
    "KeyRow",
    "Kline",
    "MyTrade",
    "NameTaken",
    "OrderRow",
    "OrderUpdateRow",
    "Ticker24h",
    "TradeMoves",
    "TradeRow",
    "UnknownUser",
    "UserRow",
    "active_keys",
    "add_key",
    "agg_trades",
    "all_orders",
    "demo_claimed_today",
    "get_order",
    "get_user",
    "key_lookup",
    "klines",
    "ledger_balances",
    "list_keys",
    "my_trades",
    "open_orders",
    "order_updates",
    "recent_trades",
    "record_demo_claim",
    "register_user",
    "revoke_key",
    "ticker_24h",
    "trade_id_range",
    "trade_moves",
    "user_by_name",
]

DAY_MS: Final = 86_400_000
MINUTE_MS: Final = 60_000
_PAGE_MIN: Final = 200

_users = cast(Table, User.__table__)
_keys = cast(Table, ApiKey.__table__)
_claims = cast(Table, DemoClaim.__table__)
_orders = cast(Table, Order.__table__)
_updates = cast(Table, OrderUpdate.__table__)
_trades = cast(Table, Trade.__table__)
_ledger = cast(Table, LedgerEntry.__table__)
_candles = cast(Table, Candle.__table__)


class NameTaken(ValueError):
    """A user with this name exists."""


class UnknownUser(LookupError):
    """No user has this id."""


_ROW = {"frozen": True, "gc": False}


class UserRow(msgspec.Struct, **_ROW):
    id: int
    name: str
    created_ms: int


class KeyRow(msgspec.Struct, **_ROW):
    key_id: str
    user_id: int
    public_key: str
    label: str
    created_ms: int
    revoked_ms: int | None


class OrderRow(msgspec.Struct, **_ROW):
    """An order as stored (see :class:`investo.store.models.Order`)."""

    order_id: int
    user_id: int
    symbol: str
    side: str
    type: str
    time_in_force: str
    price_ticks: int
    orig_qty_lots: int
    orig_quote_qty: int
    executed_qty_lots: int
    cum_quote_qty: int
    status: str
    client_order_id: str
    stp_mode: str
    time_ms: int
    update_time_ms: int
    working_time_ms: int | None


class OrderUpdateRow(msgspec.Struct, **_ROW):
    log_offset: int
    idx: int
    order_id: int
    status: str
    executed_qty_lots: int
    kind: str
    reason: str | None
    time_ms: int


class TradeRow(msgspec.Struct, **_ROW):
    """A public trade; the buyer was the maker iff ``taker_side == "SELL"``."""

    trade_id: int
    price_ticks: int
    qty_lots: int
    quote_qty: int
    time_ms: int
    taker_side: str


class MyTrade(msgspec.Struct, **_ROW):
    """One trade from one user's side. ``commission`` is that side's fee, in the market's quote asset."""

    symbol: str
    trade_id: int
    order_id: int
    price_ticks: int
    qty_lots: int
    quote_qty: int
    commission: int
    time_ms: int
    is_buyer: bool
    is_maker: bool


class AggTrade(msgspec.Struct, **_ROW):
    """Consecutive fills of one taker order at one price; ``agg_id`` is its first trade id."""

    agg_id: int
    price_ticks: int
    qty_lots: int
    first_trade_id: int
    last_trade_id: int
    time_ms: int
    is_buyer_maker: bool


class Kline(msgspec.Struct, **_ROW):
    open_time_ms: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    close_time_ms: int
    quote_volume: int
    trades: int


class Ticker24h(msgspec.Struct, **_ROW):
    """Statistics of the window ``[open_time_ms, close_time_ms]`` (the last 24 hours).

    Without trades in the window the prices are the last trade's (0 if the market never
    traded), volumes and ``count`` are 0 and ``first_id`` = ``last_id`` = -1.
    ``prev_close_price`` is the last price before the window (0 if none).
    """

    symbol: str
    open_price: int
    high_price: int
    low_price: int
    last_price: int
    last_qty: int
    prev_close_price: int
    volume: int
    quote_volume: int
    count: int
    first_id: int
    last_id: int
    open_time_ms: int
    close_time_ms: int


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# --------------------------------------------------------------------------------
# Users and keys
# --------------------------------------------------------------------------------


def new_key_id() -> str:
    """32 random URL-safe characters (192 bits)."""
    return secrets.token_urlsafe(24)


async def register_user(
    engine: AsyncEngine, name: str, public_key_pem: str, label: str = "default", *, now_ms: int | None = None
) -> tuple[int, str]:
    """Create user ``name`` with its first key; return ``(user_id, key_id)`` (NameTaken if taken)."""
    now = _now_ms() if now_ms is None else now_ms
    key_id = new_key_id()
    try:
        async with engine.begin() as conn:
            result = await conn.execute(insert(_users).values(name=name, created_ms=now))
            inserted = result.inserted_primary_key
            assert inserted is not None
            user_id = int(inserted[0])
            await conn.execute(
                insert(_keys).values(
                    key_id=key_id, user_id=user_id, public_key=public_key_pem, label=label, created_ms=now
                )
            )
    except IntegrityError:
        if await user_by_name(engine, name) is not None:
            raise NameTaken(f"the name {name!r} is taken") from None
        raise
    return user_id, key_id


async def get_user(engine: AsyncEngine, user_id: int) -> UserRow | None:
    async with engine.connect() as conn:
        row = (await conn.execute(_user_select().where(_users.c.id == user_id))).first()
    return None if row is None else UserRow(*row)


async def user_by_name(engine: AsyncEngine, name: str) -> UserRow | None:
    async with engine.connect() as conn:
        row = (await conn.execute(_user_select().where(_users.c.name == name))).first()
    return None if row is None else UserRow(*row)


def _user_select() -> Select[Any]:
    c = _users.c
    return select(c.id, c.name, c.created_ms)


async def add_key(
    engine: AsyncEngine,
    user_id: int,
    public_key_pem: str,
    label: str = "default",
    *,
    now_ms: int | None = None,
) -> str:
    """Register another public key for ``user_id``; return its key id (UnknownUser if no such user)."""
    now = _now_ms() if now_ms is None else now_ms
    key_id = new_key_id()
    async with engine.begin() as conn:
        if await conn.scalar(select(_users.c.id).where(_users.c.id == user_id)) is None:
            raise UnknownUser(f"no user {user_id}")
        await conn.execute(
            insert(_keys).values(
                key_id=key_id, user_id=user_id, public_key=public_key_pem, label=label, created_ms=now
            )
        )
    return key_id


async def list_keys(engine: AsyncEngine, user_id: int) -> list[KeyRow]:
    """Every key of ``user_id``, revoked ones included, oldest first (then by key id, bytewise)."""
    c = _keys.c
    query = select(c.key_id, c.user_id, c.public_key, c.label, c.created_ms, c.revoked_ms).where(
        c.user_id == user_id
    )
    async with engine.connect() as conn:
        rows = [KeyRow(*row) for row in await conn.execute(query)]
    # sorted here, not by ORDER BY: a Postgres database's collation may not order key ids bytewise
    return sorted(rows, key=lambda k: (k.created_ms, k.key_id))


async def revoke_key(engine: AsyncEngine, user_id: int, key_id: str, *, now_ms: int | None = None) -> bool:
    """Revoke ``user_id``'s active key ``key_id``; False if it has no such active key."""
    now = _now_ms() if now_ms is None else now_ms
    c = _keys.c
    async with engine.begin() as conn:
        result = await conn.execute(
            update(_keys)
            .where(c.key_id == key_id, c.user_id == user_id, c.revoked_ms.is_(None))
            .values(revoked_ms=now)
        )
    return bool(result.rowcount == 1)


async def key_lookup(engine: AsyncEngine, key_id: str) -> tuple[int, str] | None:
    """``(user_id, public_key_pem)`` of an active key, or None (unknown or revoked)."""
    c = _keys.c
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(c.user_id, c.public_key).where(c.key_id == key_id, c.revoked_ms.is_(None))
            )
        ).first()
    return None if row is None else (int(row[0]), str(row[1]))


async def keys_revoked_since(engine: AsyncEngine, since_ms: int) -> list[str]:
    """The ids of keys revoked at or after ``since_ms`` (gateways forget them)."""
    c = _keys.c
    async with engine.connect() as conn:
        rows = await conn.execute(select(c.key_id).where(c.revoked_ms >= since_ms))
        return [str(key_id) for (key_id,) in rows]


async def active_keys(engine: AsyncEngine) -> list[tuple[str, int, str]]:
    """Every active key as ``(key_id, user_id, public_key_pem)`` (to warm a cache at start)."""
    c = _keys.c
    async with engine.connect() as conn:
        rows = await conn.execute(select(c.key_id, c.user_id, c.public_key).where(c.revoked_ms.is_(None)))
        return sorted((str(k), int(u), str(p)) for k, u, p in rows)


# --------------------------------------------------------------------------------
# Demo funds
# --------------------------------------------------------------------------------


DEMO_LOCK_CLASS: Final = 0x64656D6F  # b"demo": the first key of the two-int advisory lock per user


@contextlib.asynccontextmanager
async def demo_claim_lock(engine: AsyncEngine, user_id: int) -> AsyncIterator[None]:
    """Serialise one user's demo claims across processes: on Postgres a transaction-level
    advisory lock (held by one pooled connection until the block ends, released by the
    server if that connection dies); on SQLite nothing (one process owns the file)."""
    if engine.dialect.name != "postgresql":
        yield
        return
    async with engine.begin() as conn:
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(:c, :k)"), {"c": DEMO_LOCK_CLASS, "k": user_id % 2**31}
        )
        yield


async def record_demo_claim(engine: AsyncEngine, user_id: int, asset: str, amount: int, time_ms: int) -> None:
    """Remember that a demo deposit of ``amount`` was acknowledged at ``time_ms``."""
    async with engine.begin() as conn:
        await conn.execute(
            insert(_claims).values(user_id=user_id, asset=asset, amount=amount, time_ms=time_ms)
        )


async def demo_claimed_today(engine: AsyncEngine, user_id: int, asset: str, day_start_ms: int) -> int:
    """The demo funds of ``asset`` claimed by ``user_id`` since ``day_start_ms``."""
    c = _claims.c
    async with engine.connect() as conn:
        total = await conn.scalar(
            select(func.coalesce(func.sum(c.amount), 0)).where(
                c.user_id == user_id, c.asset == asset, c.time_ms >= day_start_ms
            )
        )
    return int(total or 0)


# --------------------------------------------------------------------------------
# Orders
# --------------------------------------------------------------------------------


def _order_select() -> Select[Any]:
    c = _orders.c
    return select(
        c.order_id, c.user_id, c.symbol, c.side, c.type, c.time_in_force, c.price_ticks, c.orig_qty_lots,
        c.orig_quote_qty, c.executed_qty_lots, c.cum_quote_qty, c.status, c.client_order_id, c.stp_mode,
        c.time_ms, c.update_time_ms, c.working_time_ms,
    )  # fmt: skip


async def get_order(
    engine: AsyncEngine,
    user_id: int,
    symbol: str,
    order_id: int | None = None,
    client_order_id: str | None = None,
) -> OrderRow | None:
    """One of the user's orders by id or else by client order id (the latest one using it)."""
    c = _orders.c
    query = _order_select().where(c.user_id == user_id, c.symbol == symbol)
    if order_id is not None:
        query = query.where(c.order_id == order_id)
    elif client_order_id:
        query = query.where(c.client_order_id == client_order_id).order_by(c.order_id.desc()).limit(1)
    else:
        raise ValueError("get_order needs order_id or client_order_id")
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
    return None if row is None else OrderRow(*row)


async def all_orders(
    engine: AsyncEngine,
    user_id: int,
    symbol: str,
    order_id_from: int | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    limit: int = 500,
) -> list[OrderRow]:
    """The user's orders in ``symbol``, oldest first (see the module docstring for paging)."""
    c = _orders.c
    query = _order_select().where(c.user_id == user_id, c.symbol == symbol)
    if order_id_from is not None:
        query = query.where(c.order_id >= order_id_from)
    if start_ms is not None:
        query = query.where(c.time_ms >= start_ms)
    if end_ms is not None:
        query = query.where(c.time_ms <= end_ms)
    oldest_first = order_id_from is not None or start_ms is not None
    query = query.order_by(c.order_id if oldest_first else c.order_id.desc()).limit(limit)
    async with engine.connect() as conn:
        rows = [OrderRow(*row) for row in await conn.execute(query)]
    return rows if oldest_first else rows[::-1]


async def open_orders(engine: AsyncEngine, user_id: int, symbol: str | None = None) -> list[OrderRow]:
    """The user's NEW and PARTIALLY_FILLED orders (in ``symbol``, or all), by order id."""
    c = _orders.c
    query = _order_select().where(c.user_id == user_id, text(OPEN_STATUS_SQL))
    if symbol is not None:
        query = query.where(c.symbol == symbol)
    async with engine.connect() as conn:
        return [OrderRow(*row) for row in await conn.execute(query.order_by(c.order_id))]


async def order_updates(engine: AsyncEngine, order_id: int) -> list[OrderUpdateRow]:
    """Every state change of one order, in log order: a scan (for tests and audits, not requests)."""
    c = _updates.c
    query = (
        select(c.log_offset, c.idx, c.order_id, c.status, c.executed_qty_lots, c.kind, c.reason, c.time_ms)
        .where(c.order_id == order_id)
        .order_by(c.log_offset, c.idx)
    )
    async with engine.connect() as conn:
        return [OrderUpdateRow(*row) for row in await conn.execute(query)]


# --------------------------------------------------------------------------------
# Trades
# --------------------------------------------------------------------------------


async def _id_range(
    conn: AsyncConnection, symbol: str, start_ms: int | None, end_ms: int | None
) -> tuple[int, int | None] | None:
    """Trade ids of ``symbol`` within ``[start_ms, end_ms]`` as ``(low, high or None)``; None if none."""
    c = _trades.c
    low, high = 0, None
    if start_ms is not None:
        found = await conn.scalar(
            select(c.trade_id)
            .where(c.symbol == symbol, c.time_ms >= start_ms)
            .order_by(c.time_ms, c.trade_id)
            .limit(1)
        )
        if found is None:
            return None
        low = int(found)
    if end_ms is not None:
        found = await conn.scalar(
            select(c.trade_id)
            .where(c.symbol == symbol, c.time_ms <= end_ms)
            .order_by(c.time_ms.desc(), c.trade_id.desc())
            .limit(1)
        )
        if found is None or found < low:
            return None
        high = int(found)
    return low, high


def _id_bounds(column: Any, low: int, high: int | None) -> list[ColumnElement[bool]]:
    bounds: list[ColumnElement[bool]] = [column >= low] if low else []
    if high is not None:
        bounds.append(column <= high)
    return bounds


async def recent_trades(engine: AsyncEngine, symbol: str, limit: int = 500) -> list[TradeRow]:
    """The last ``limit`` trades of ``symbol``, oldest first."""
    c = _trades.c
    query = (
        select(c.trade_id, c.price_ticks, c.qty_lots, c.quote_qty, c.time_ms, c.taker_side)
        .where(c.symbol == symbol)
        .order_by(c.trade_id.desc())
        .limit(limit)
    )
    async with engine.connect() as conn:
        rows = [TradeRow(*row) for row in await conn.execute(query)]
    return rows[::-1]


async def my_trades(
    engine: AsyncEngine,
    user_id: int,
    symbol: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    from_id: int | None = None,
    limit: int = 500,
    order_id: int | None = None,
) -> list[MyTrade]:
    """The user's trades in ``symbol`` from its side, oldest first (a self-trade gives two rows).

    With ``order_id``, only that order's trades (filtered before ``limit`` applies).
    """
    c = _trades.c
    async with engine.connect() as conn:
        found = await _id_range(conn, symbol, start_ms, end_ms)
        if found is None:
            return []
        low, high = found
        if from_id is not None:
            low = max(low, from_id)
        oldest_first = from_id is not None or start_ms is not None
        rows: list[MyTrade] = []
        for is_maker in (True, False):
            user_col = c.maker_user if is_maker else c.taker_user
            order_col = c.maker_order_id if is_maker else c.taker_order_id
            of_order = () if order_id is None else (order_col == order_id,)
            query = (
                select(
                    c.trade_id,
                    c.maker_order_id if is_maker else c.taker_order_id,
                    c.price_ticks,
                    c.qty_lots,
                    c.quote_qty,
                    c.maker_fee if is_maker else c.taker_fee,
                    c.time_ms,
                    c.taker_side,
                )
                .where(user_col == user_id, c.symbol == symbol, *of_order, *_id_bounds(c.trade_id, low, high))
                .order_by(c.trade_id if oldest_first else c.trade_id.desc())
                .limit(limit)
            )
            for trade_id, its_order, price, qty, quote, fee, ts, taker_side in await conn.execute(query):
                is_buyer = (taker_side == "SELL") if is_maker else (taker_side == "BUY")
                rows.append(
                    MyTrade(symbol, trade_id, its_order, price, qty, quote, fee, ts, is_buyer, is_maker)
                )
    rows.sort(key=lambda t: (t.trade_id, not t.is_maker))
    return rows[:limit] if oldest_first else rows[-limit:]


class _Run:
    """An aggregate trade being collected (mutable)."""

    __slots__ = ("buyer_maker", "first", "key", "last", "qty", "time")

    def __init__(
        self, trade_id: int, key: tuple[int, int], qty: int, time_ms: int, buyer_maker: bool
    ) -> None:
        self.first = self.last = trade_id
        self.key = key
        self.qty = qty
        self.time = time_ms
        self.buyer_maker = buyer_maker

    def done(self) -> AggTrade:
        return AggTrade(self.first, self.key[1], self.qty, self.first, self.last, self.time, self.buyer_maker)


def _trade_page(symbol: str) -> Select[Any]:
    c = _trades.c
    return select(c.trade_id, c.taker_order_id, c.price_ticks, c.qty_lots, c.time_ms, c.taker_side).where(
        c.symbol == symbol
    )


async def agg_trades(
    engine: AsyncEngine,
    symbol: str,
    from_id: int | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    limit: int = 500,
) -> list[AggTrade]:
    """Aggregate trades, oldest first: runs of consecutive trades of one taker order at one price.

    An aggregate's id is its first trade id, so ``from_id`` starts at the aggregate with
    that id (trades continuing an aggregate that began before it are skipped).
    """
    async with engine.connect() as conn:
        found = await _id_range(conn, symbol, start_ms, end_ms)
        if found is None:
            return []
        low, high = found
        if from_id is not None or start_ms is not None:
            return await _agg_forward(conn, symbol, max(low, from_id or 0), high, limit)
        return await _agg_backward(conn, symbol, high, limit)


async def _agg_forward(
    conn: AsyncConnection, symbol: str, low: int, high: int | None, limit: int
) -> list[AggTrade]:
    c = _trades.c
    page = max(2 * limit, _PAGE_MIN)
    skip: tuple[int, int] | None = None
    if low > 1:
        before = (
            await conn.execute(
                select(c.taker_order_id, c.price_ticks).where(c.symbol == symbol, c.trade_id == low - 1)
            )
        ).first()
        skip = None if before is None else (before[0], before[1])
    runs: list[AggTrade] = []
    run: _Run | None = None
    after = low - 1
    while True:
        query = _trade_page(symbol).where(c.trade_id > after, *_id_bounds(c.trade_id, 0, high))
        rows = (await conn.execute(query.order_by(c.trade_id).limit(page))).all()
        for trade_id, taker_order_id, price, qty, ts, taker_side in rows:
            key = (taker_order_id, price)
            if skip is not None:
                if key == skip:
                    continue
                skip = None
            if run is not None and run.key == key:
                run.last = trade_id
                run.qty += qty
                continue
            if run is not None:
                runs.append(run.done())
                if len(runs) == limit:
                    return runs
            run = _Run(trade_id, key, qty, ts, taker_side == "SELL")
        if len(rows) < page:
            break
        after = rows[-1][0]
    if run is not None:
        runs.append(run.done())
    return runs[:limit]


async def _agg_backward(conn: AsyncConnection, symbol: str, high: int | None, limit: int) -> list[AggTrade]:
    c = _trades.c
    page = max(2 * limit, _PAGE_MIN)
    runs: list[AggTrade] = []
    run: _Run | None = None
    before = high
    while True:
        query = _trade_page(symbol)
        if before is not None:
            query = query.where(c.trade_id <= before)
        rows = (await conn.execute(query.order_by(c.trade_id.desc()).limit(page))).all()
        for trade_id, taker_order_id, price, qty, ts, taker_side in rows:
            key = (taker_order_id, price)
            if run is not None and run.key == key:
                run.first = trade_id
                run.qty += qty
                run.time = ts
                continue
            if run is not None:
                runs.append(run.done())
                if len(runs) == limit:
                    return runs[::-1]
            run = _Run(trade_id, key, qty, ts, taker_side == "SELL")
        if len(rows) < page:
            break
        before = rows[-1][0] - 1
    if run is not None:
        runs.append(run.done())
    return runs[:limit][::-1]


# --------------------------------------------------------------------------------
# Candles and statistics
# --------------------------------------------------------------------------------


async def klines(
    engine: AsyncEngine,
    symbol: str,
    interval: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    limit: int = 500,
    now_ms: int | None = None,
) -> list[Kline]:
    """Candles of ``interval`` oldest first, gaps filled with the previous close (module docstring).

    Without ``start_ms``: the last ``limit`` intervals up to ``min(end_ms, now_ms)``; with
    it: the first ``limit`` intervals opening at or after it. ValueError for an unknown
    interval.
    """
    length = INTERVALS.get(interval)
    if length is None:
        raise ValueError(f"unknown interval {interval!r} (one of {', '.join(INTERVALS)})")
    if limit <= 0:
        return []
    now = _now_ms() if now_ms is None else now_ms
    top = now if end_ms is None else min(end_ms, now)
    last_open = top - top % length
    first_open = -(-start_ms // length) * length if start_ms is not None else last_open - (limit - 1) * length
    if first_open > last_open:
        return []
    c = _candles.c
    mine = (c.symbol == symbol, c.interval == interval)
    async with engine.connect() as conn:
        seed = await conn.scalar(
            select(c.close).where(*mine, c.open_time_ms < first_open).order_by(c.open_time_ms.desc()).limit(1)
        )
        if seed is None:  # nothing traded before: start at the first candle
            first = await conn.scalar(
                select(func.min(c.open_time_ms)).where(
                    *mine, c.open_time_ms >= first_open, c.open_time_ms <= last_open
                )
            )
            if first is None:
                return []
            first_open = int(first)
        stop = min(last_open, first_open + (limit - 1) * length)
        query = (
            select(
                c.open_time_ms,
                c.open,
                c.high,
                c.low,
                c.close,
                c.volume,
                c.close_time_ms,
                c.quote_volume,
                c.trades,
            )
            .where(*mine, c.open_time_ms >= first_open, c.open_time_ms <= stop)
            .order_by(c.open_time_ms)
        )
        stored = {row[0]: Kline(*row) for row in await conn.execute(query)}
    out: list[Kline] = []
    close = None if seed is None else int(seed)
    for open_time in range(first_open, stop + 1, length):
        candle = stored.get(open_time)
        if candle is None:
            assert close is not None  # the range starts at a candle or after the seed
            candle = Kline(open_time, close, close, close, close, 0, open_time + length - 1, 0, 0)
        out.append(candle)
        close = candle.close
    return out


async def trade_id_range(
    engine: AsyncEngine, symbol: str, start_ms: int, end_ms: int
) -> tuple[int, int] | None:
    """The first and last trade ids of ``symbol`` in ``[start_ms, end_ms]``, or None if none traded."""
    t = _trades.c
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(func.min(t.trade_id), func.max(t.trade_id)).where(
                    t.symbol == symbol, t.time_ms >= start_ms, t.time_ms <= end_ms
                )
            )
        ).first()
    if row is None or row[0] is None:
        return None
    return int(row[0]), int(row[1])


async def ticker_24h(engine: AsyncEngine, symbol: str, now_ms: int | None = None) -> Ticker24h:
    """Statistics of the 24 hours up to ``now_ms``: whole minutes from 1m candles, the rest from trades."""
    now = _now_ms() if now_ms is None else now_ms
    start = now - DAY_MS
    first_minute = -(-start // MINUTE_MS) * MINUTE_MS
    last_minute = now - now % MINUTE_MS  # candles before it are complete and within the window
    t, k = _trades.c, _candles.c
    async with engine.connect() as conn:
        last = (
            await conn.execute(
                select(t.trade_id, t.price_ticks, t.qty_lots, t.time_ms)
                .where(t.symbol == symbol, t.time_ms <= now)
                .order_by(t.time_ms.desc(), t.trade_id.desc())
                .limit(1)
            )
        ).first()
        prev = await conn.scalar(
            select(t.price_ticks)
            .where(t.symbol == symbol, t.time_ms < start)
            .order_by(t.time_ms.desc(), t.trade_id.desc())
            .limit(1)
        )
        prev_close = 0 if prev is None else int(prev)
        if last is None or last[3] < start:
            price = 0 if last is None else int(last[1])
            qty = 0 if last is None else int(last[2])
            return Ticker24h(symbol, price, price, price, price, qty, prev_close, 0, 0, 0, -1, -1, start, now)
        first = (
            await conn.execute(
                select(t.trade_id, t.price_ticks)
                .where(t.symbol == symbol, t.time_ms >= start)
                .order_by(t.time_ms, t.trade_id)
                .limit(1)
            )
        ).first()
        assert first is not None
        parts = [
            await conn.execute(
                select(func.max(k.high), func.min(k.low), func.sum(k.volume), func.sum(k.quote_volume)).where(
                    k.symbol == symbol,
                    k.interval == "1m",
                    k.open_time_ms >= first_minute,
                    k.open_time_ms < last_minute,
                )
            )
        ]
        for low, high in ((start, first_minute - 1), (last_minute, now)):
            parts.append(
                await conn.execute(
                    select(
                        func.max(t.price_ticks),
                        func.min(t.price_ticks),
                        func.sum(t.qty_lots),
                        func.sum(t.quote_qty),
                    ).where(t.symbol == symbol, t.time_ms >= low, t.time_ms <= high)
                )
            )
        highs, lows, volume, quote_volume = [], [], 0, 0
        for part in parts:
            high, low, vol, quote = part.one()
            if high is not None:
                highs.append(int(high))
                lows.append(int(low))
                volume += int(vol)
                quote_volume += int(quote)
    first_id, last_id = int(first[0]), int(last[0])
    return Ticker24h(
        symbol,
        open_price=int(first[1]),
        high_price=max(highs),
        low_price=min(lows),
        last_price=int(last[1]),
        last_qty=int(last[2]),
        prev_close_price=prev_close,
        volume=volume,
        quote_volume=quote_volume,
        count=last_id - first_id + 1,
        first_id=first_id,
        last_id=last_id,
        open_time_ms=start,
        close_time_ms=now,
    )


# --------------------------------------------------------------------------------
# Holdings: the ledger (deposits, withdrawals) plus what the trades moved
# --------------------------------------------------------------------------------

UserFilter = Callable[[ColumnElement[int]], ColumnElement[bool]]
"""Which users' trades to aggregate, given the trade's user column (maker or taker)."""

_SIDES: Final = (
    (_trades.c.maker_user, _trades.c.maker_fee, "SELL"),
    (_trades.c.taker_user, _trades.c.taker_fee, "BUY"),
)
"""Each side of a trade (its user and fee columns), with the ``taker_side`` for which that user buys."""


@dataclass
class TradeMoves:
    """What trades moved, per (user, asset) and, as the fee account's credit, per quote asset."""

    holdings: dict[tuple[int, str], int] = field(default_factory=dict)  # net change, fees paid included
    fees: dict[str, int] = field(default_factory=dict)  # quote asset -> fees these users paid


async def trade_moves(
    conn: AsyncConnection, markets: Mapping[str, Market], users: UserFilter | None = None
) -> TradeMoves:
    """The holdings the trades of ``users`` (all, if None) moved: aggregated in SQL, mapped here.

    Per trade, the buyer gets ``qty × lot_units`` base and pays ``notional + its fee`` quote;
    the seller gives the base and gets ``notional − its fee``; the fee account gets both fees
    (a self-trade thus nets to −fees, as the accounts engine does). SQL sums lots, notional
    and fees per (user, symbol, side) for each of the trade's two sides (two grouped
    queries); Python maps symbols to assets with ``markets`` (a trade in a market not in
    ``markets`` raises ``KeyError``). Exact: Postgres sums ``BIGINT`` as ``NUMERIC``; on
    SQLite a sum past 2^63 − 1 (a user's lifetime volume in one market and side, in the
    asset's smallest units) raises instead of rounding.
    """
    t = _trades.c
    moves = TradeMoves()
    holdings, fees = moves.holdings, moves.fees
    for user, fee, buyer_when in _SIDES:
        sums = (func.sum(t.qty_lots), func.sum(t.quote_qty), func.sum(fee))
        query = select(user, t.symbol, t.taker_side, *sums)
        if users is not None:
            query = query.where(users(user))
        for user_id, symbol, taker_side, lots, notional, paid in await conn.execute(
            query.group_by(user, t.symbol, t.taker_side)
        ):
            market = markets[symbol]
            key_base, key_quote = (int(user_id), market.base), (int(user_id), market.quote)
            base, quote, paid = int(lots) * market.lot_units, int(notional), int(paid)
            if taker_side != buyer_when:  # this side sold
                base, quote = -base, -quote
            holdings[key_base] = holdings.get(key_base, 0) + base
            holdings[key_quote] = holdings.get(key_quote, 0) - quote - paid
            fees[market.quote] = fees.get(market.quote, 0) + paid
    return moves


async def ledger_balances(
    engine: AsyncEngine, user_id: int, markets: Mapping[str, Market], fee_account: int = 0
) -> dict[str, int]:
    """The user's total holding per asset (available + reserved) by the history, non-zero only.

    The ledger's sum (deposits and withdrawals: a scan, it has no index by user) plus what
    the user's trades moved (:func:`trade_moves`, by the trades' user indexes); the fee
    account also gets every trade's fees (a scan of the trades). For tests and audits, not
    for serving requests.
    """
    c = _ledger.c
    query = select(c.asset, func.sum(c.delta)).where(c.user_id == user_id).group_by(c.asset)
    totals: dict[str, int] = {}
    async with engine.connect() as conn:
        for asset, total in await conn.execute(query):
            totals[str(asset)] = int(total)
        moves = await trade_moves(conn, markets, lambda user: user == user_id)
        for (_, asset), moved in moves.holdings.items():
            totals[asset] = totals.get(asset, 0) + moved
        if user_id == fee_account:
            for asset, paid in (await trade_moves(conn, markets)).fees.items():
                totals[asset] = totals.get(asset, 0) + paid
    return {asset: total for asset, total in sorted(totals.items()) if total}
