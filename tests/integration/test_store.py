"""The SQL history: migrations, the HistoryWriter fed by a real Exchange, and the API's queries.

A scripted session (deposits, resting limits, a cross, a cancel, market orders by
quantity and by quote amount, a self-trade-prevention expiry, rejections, a
withdrawal, a quiet gap of several minutes) runs through
:class:`investo.core.exchange.Exchange`; its ``Applied`` batches are fed to the writer
exactly as the host would, and the rows are checked against the engine's own state.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import get_args

import msgspec
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, func, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from investo.core.exchange import Exchange
from investo.core.messages import (
    CancelOrder,
    Command,
    Deposit,
    Event,
    OrderAccepted,
    OrderPartiallyFilled,
    OrderType,
    PlaceOrder,
    Side,
    StpMode,
    TimeInForce,
    TradeExecuted,
    Withdraw,
)
from investo.host import Applied
from investo.markets import MarketSpec, load_markets
from investo.store import bulk, queries
from investo.store.db import async_url, make_engine
from investo.store.migrate import alembic_config, current_revision, upgrade, upgrade_async
from investo.store.models import INTERVALS, OPEN_STATUS_SQL, Base, LedgerEntry, Order, OrderUpdate, Trade
from investo.store.rebuild import rebuild_candles
from investo.store.writer import HistoryWriter, WriterStopped

SYMBOL = "TATAINR"
T0 = 1_700_000_040_000  # a minute boundary (1_700_000_040_000 % 60_000 == 0)
MIN = 60_000
BUY, SELL = Side.BUY, Side.SELL
LIMIT, MARKET, LIMIT_MAKER = OrderType.LIMIT, OrderType.MARKET, OrderType.LIMIT_MAKER
GTC, IOC = TimeInForce.GTC, TimeInForce.IOC
PEM = (
    "-----BEGIN PUBLIC KEY-----\n"
    "MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n"
    "-----END PUBLIC KEY-----\n"
)

ALICE, BOB, CAROL, DAVE = 1, 2, 3, 4
MARKETS = {symbol: spec.core for symbol, spec in load_markets(None).items()}
USERS = (0, ALICE, BOB, CAROL, DAVE)


@dataclass
class Session:
    """Runs commands through a real Exchange and keeps the Applied records the host would emit."""

    markets: dict[str, MarketSpec]
    exchange: Exchange = field(init=False)
    applied: list[Applied] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.exchange = Exchange({s: spec.core for s, spec in self.markets.items()})

    def run(self, command: Command) -> Applied:
        applied = Applied(len(self.applied) + 1, command, self.exchange.apply(command))
        self.applied.append(applied)
        return applied

    def place(
        self,
        ts: int,
        user: int,
        side: Side,
        price: int,
        qty: int,
        *,
        type: OrderType = LIMIT,
        tif: TimeInForce = GTC,
        quote_qty: int = 0,
        client_id: str = "",
        stp: StpMode = StpMode.EXPIRE_MAKER,
    ) -> int:
        """Place an order; return its id (0 if the accounts engine refused it)."""
        command = PlaceOrder(ts, user, SYMBOL, side, type, tif, price, qty, quote_qty, client_id, stp)
        applied = self.run(command)
        return next((e.order_id for e in applied.events if isinstance(e, OrderAccepted)), 0)


@dataclass
class Script:
    session: Session
    ids: dict[str, int]


def scripted_session() -> Script:
    """The session every test reads (prices in ticks of 0.05 INR; INR in paise)."""
    s = Session(load_markets(None))
    ids: dict[str, int] = {}
    s.run(Deposit(T0, ALICE, "INR", 10_000_000))  # 100,000.00 INR
    s.run(Deposit(T0, BOB, "TATA", 100))
    s.run(Deposit(T0, BOB, "INR", 1_000_000))
    s.run(Deposit(T0, CAROL, "INR", 1_000_000))
    s.run(Deposit(T0, DAVE, "TATA", 50))
    # minute 0: two asks rest, Alice's bid crosses both (two trades, one taker, two prices)
    ids["ask1"] = s.place(T0 + 1_000, BOB, SELL, 19_000, 10, client_id="s1")  # 950.00
    ids["ask2"] = s.place(T0 + 2_000, BOB, SELL, 19_020, 5, client_id="s2")  # 951.00
    ids["cross"] = s.place(T0 + 3_000, ALICE, BUY, 19_020, 12)
    # Carol's bid rests, then is canceled
    ids["carol_bid"] = s.place(T0 + 4_000, CAROL, BUY, 18_800, 3, client_id="c1")
    s.run(CancelOrder(T0 + 5_000, CAROL, SYMBOL, ids["carol_bid"]))
    # minute 1: a market buy by quantity takes 2 of ask2 (left: 1)
    ids["mkt_qty"] = s.place(T0 + MIN + 1_000, ALICE, BUY, 0, 2, type=MARKET, tif=IOC)
    # minute 4 (quiet minutes 2 and 3): Dave's two asks at one price, one taker takes both
    ids["dave1"] = s.place(T0 + 4 * MIN + 1_000, DAVE, SELL, 19_100, 2)
    ids["dave2"] = s.place(T0 + 4 * MIN + 2_000, DAVE, SELL, 19_100, 3)
    # Carol's market buy by quote amount: ask2's last lot at 951.00, then 5 at 955.00, then out of liquidity
    ids["mkt_quote"] = s.place(
        T0 + 4 * MIN + 3_000, CAROL, BUY, 0, 0, type=MARKET, tif=IOC, quote_qty=900_000
    )
    # self-trade prevention: Bob's resting bid is expired by his own sell (EXPIRE_MAKER); the sell rests
    ids["bob_bid"] = s.place(T0 + 4 * MIN + 4_000, BOB, BUY, 18_000, 1)
    ids["bob_ask"] = s.place(T0 + 4 * MIN + 5_000, BOB, SELL, 18_000, 1)
    # rejections: unfunded (no id, no row); LIMIT_MAKER that would take (id, REJECTED row)
    ids["unfunded"] = s.place(T0 + 4 * MIN + 6_000, CAROL, SELL, 19_000, 1_000)
    ids["maker_taking"] = s.place(T0 + 4 * MIN + 7_000, ALICE, BUY, 18_000, 1, type=LIMIT_MAKER)
    # Alice reuses a finished order's client id ("s1" was Bob's; "a1" is hers twice)
    ids["a1_first"] = s.place(T0 + 4 * MIN + 8_000, ALICE, BUY, 17_000, 1, client_id="a1")
    s.run(CancelOrder(T0 + 4 * MIN + 9_000, ALICE, SYMBOL, 0, "a1"))
    ids["a1_second"] = s.place(T0 + 4 * MIN + 10_000, ALICE, BUY, 17_100, 1, client_id="a1")
    s.run(Withdraw(T0 + 4 * MIN + 11_000, ALICE, "INR", 100_000))
    s.exchange.check_invariants()
    return Script(s, ids)


def batches(applied: list[Applied], size: int) -> list[list[Applied]]:
    return [applied[i : i + size] for i in range(0, len(applied), size)]


@pytest.fixture
async def engine(history_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated, empty history database: a SQLite file or a Postgres database (tests/conftest.py)."""
    await upgrade_async(history_url)
    db = make_engine(history_url)
    yield db
    await db.dispose()


@pytest.fixture
def script() -> Script:
    return scripted_session()


async def write_all(engine: AsyncEngine, applied: list[Applied], size: int = 4) -> HistoryWriter:
    writer = HistoryWriter(engine, load_markets(None))
    await writer.load_progress()
    writer.start()
    for batch in batches(applied, size):
        writer.on_applied(batch)
    await writer.wait_for(applied[-1].offset)
    await writer.stop()
    return writer


@pytest.fixture
async def written(engine: AsyncEngine, script: Script) -> Script:
    await write_all(engine, script.session.applied)
    return script


async def count(engine: AsyncEngine, model: type[Base]) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(model)) or 0)


# --------------------------------------------------------------------------------
# Migrations and engines
# --------------------------------------------------------------------------------


async def test_migrations_create_exactly_the_models(engine: AsyncEngine) -> None:
    def diff(conn: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []
    assert await current_revision(engine) == "0005"


async def test_upgrade_is_idempotent_and_works_inside_a_running_loop(history_url: str) -> None:
    upgrade(history_url)  # from inside this test's event loop: runs on a helper thread
    upgrade(history_url)
    db = make_engine(history_url)
    try:
        assert await current_revision(db) == "0005"
        async with db.connect() as conn:
            if db.dialect.name == "sqlite":
                assert await conn.scalar(text("PRAGMA journal_mode")) == "wal"
                assert await conn.scalar(text("PRAGMA synchronous")) == 1  # NORMAL
                assert await conn.scalar(text("PRAGMA foreign_keys")) == 1
            else:
                assert db.dialect.name == "postgresql" and db.dialect.driver == "asyncpg"
                assert await conn.scalar(text("SELECT count(*) FROM alembic_version")) == 1
    finally:
        await db.dispose()


async def test_upgrading_a_history_with_trade_legs_deletes_them_once(history_url: str) -> None:
    """Migration 0004: the ledger's old ``trade`` and ``fee`` rows go (the trades rows carry them)."""
    legs = [
        (1, 0, ALICE, "INR", 10_000, "deposit", None, None, T0),
        (2, 0, ALICE, "TATA", 10, "trade", SYMBOL, 1, T0),
        (2, 1, ALICE, "INR", -9_510, "trade", SYMBOL, 1, T0),
        (2, 2, BOB, "TATA", -10, "trade", SYMBOL, 1, T0),
        (2, 3, BOB, "INR", 9_490, "trade", SYMBOL, 1, T0),
        (2, 4, 0, "INR", 20, "fee", SYMBOL, 1, T0),
        (3, 0, BOB, "INR", -100, "withdraw", None, None, T0),
    ]
    await upgrade_async(history_url, "0003")
    db = make_engine(history_url)
    try:
        async with db.begin() as conn:
            rows = [dict(zip(bulk.LEDGER_COLUMNS, row, strict=True)) for row in legs]
            await conn.execute(bulk.LEDGER.insert(), rows)
        await upgrade_async(db)
        assert await current_revision(db) == "0005"
        async with db.connect() as conn:
            left = (await conn.execute(select(LedgerEntry.log_offset, LedgerEntry.reason))).all()
        assert sorted(tuple(r) for r in left) == [(1, "deposit"), (3, "withdraw")]
    finally:
        await db.dispose()


async def test_downgrading_below_0004_with_trades_stored_is_refused(
    engine: AsyncEngine, written: Script
) -> None:
    def downgrade(conn: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = conn
        command.downgrade(config, "0003")

    def diff(conn: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))

    with pytest.raises(RuntimeError, match="cannot downgrade below 0004"):
        async with engine.begin() as conn:
            await conn.run_sync(downgrade)
    assert await current_revision(engine) == "0005"
    if engine.dialect.name == "postgresql":  # transactional DDL: 0005's downgrade is rolled back too
        async with engine.connect() as conn:  # (pysqlite commits DDL at once: SQLite keeps the index)
            assert await conn.run_sync(diff) == []


async def test_downgrade_drops_everything_and_upgrade_recreates_it(history_url: str) -> None:
    def downgrade(conn: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = conn
        command.downgrade(config, "base")

    def tables(conn: Connection) -> set[str]:
        return set(inspect(conn).get_table_names())

    history = set(Base.metadata.tables)
    await upgrade_async(history_url)
    db = make_engine(history_url)
    try:
        async with db.connect() as conn:
            assert await conn.run_sync(tables) == history | {"alembic_version"}
        async with db.begin() as conn:
            await conn.run_sync(downgrade)
        async with db.connect() as conn:
            assert await conn.run_sync(tables) <= {"alembic_version"}
        assert await current_revision(db) is None
        await upgrade_async(db)
        assert await current_revision(db) == "0005"
        user_id, _ = await queries.register_user(db, "again", PEM)
        assert user_id == 1
    finally:
        await db.dispose()


def test_postgres_urls_use_asyncpg() -> None:
    assert async_url("postgresql://u@h:5433/db").drivername == "postgresql+asyncpg"
    assert async_url("postgres://h/db").drivername == "postgresql+asyncpg"
    assert async_url("postgresql+psycopg://h/db").drivername == "postgresql+asyncpg"
    ssl = async_url("postgresql://h/db?sslmode=verify-full&application_name=x")
    assert dict(ssl.query) == {"ssl": "verify-full", "application_name": "x"}  # libpq's name -> asyncpg's


async def test_in_memory_database_migrates_through_its_engine() -> None:
    db = make_engine("sqlite://")
    try:
        await upgrade_async(db)
        user_id, _ = await queries.register_user(db, "mem", PEM)
        assert user_id == 1
    finally:
        await db.dispose()


def test_unsupported_url_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        make_engine("mysql://x@y/z")


# --------------------------------------------------------------------------------
# The writer: orders, trades, ledger
# --------------------------------------------------------------------------------


async def test_orders_have_their_final_status_and_quantities(engine: AsyncEngine, written: Script) -> None:
    ids = written.ids

    async def order(name: str, user: int) -> queries.OrderRow:
        row = await queries.get_order(engine, user, SYMBOL, ids[name])
        assert row is not None, name
        return row

    expect = {  # name: (user, status, executed lots, cum quote in paise)
        "ask1": (BOB, "FILLED", 10, 10 * 19_000 * 5),
        "ask2": (BOB, "FILLED", 5, 5 * 19_020 * 5),
        "cross": (ALICE, "FILLED", 12, 10 * 19_000 * 5 + 2 * 19_020 * 5),
        "carol_bid": (CAROL, "CANCELED", 0, 0),
        "mkt_qty": (ALICE, "FILLED", 2, 2 * 19_020 * 5),
        "dave1": (DAVE, "FILLED", 2, 2 * 19_100 * 5),
        "dave2": (DAVE, "FILLED", 3, 3 * 19_100 * 5),
        "mkt_quote": (CAROL, "EXPIRED", 6, 1 * 19_020 * 5 + 5 * 19_100 * 5),
        "bob_bid": (BOB, "EXPIRED_IN_MATCH", 0, 0),
        "bob_ask": (BOB, "NEW", 0, 0),
        "maker_taking": (ALICE, "REJECTED", 0, 0),
        "a1_first": (ALICE, "CANCELED", 0, 0),
        "a1_second": (ALICE, "NEW", 0, 0),
    }
    for name, (user, status, executed, cum_quote) in expect.items():
        row = await order(name, user)
        assert (row.user_id, row.status, row.executed_qty_lots, row.cum_quote_qty) == (
            user,
            status,
            executed,
            cum_quote,
        ), name
    quote_buy = await order("mkt_quote", CAROL)
    assert (quote_buy.type, quote_buy.orig_qty_lots, quote_buy.orig_quote_qty) == ("MARKET", 0, 900_000)
    assert (quote_buy.time_in_force, quote_buy.side, quote_buy.price_ticks) == ("IOC", "BUY", 0)
    ask1 = await order("ask1", BOB)
    assert (ask1.client_order_id, ask1.time_ms, ask1.update_time_ms) == ("s1", T0 + 1_000, T0 + 3_000)
    assert ask1.working_time_ms == T0 + 1_000 and ask1.stp_mode == "EXPIRE_MAKER"
    # the unfunded order got no id and has no row; every accepted order has one
    assert written.ids["unfunded"] == 0
    accepted = sum(isinstance(e, OrderAccepted) for a in written.session.applied for e in a.events)
    assert await count(engine, Order) == accepted


async def test_order_updates_record_every_state_change(engine: AsyncEngine, written: Script) -> None:
    updates = await queries.order_updates(engine, written.ids["ask2"])
    assert [(u.kind, u.status, u.executed_qty_lots) for u in updates] == [
        ("OrderAccepted", "NEW", 0),
        ("OrderRested", "NEW", 0),
        ("OrderPartiallyFilled", "PARTIALLY_FILLED", 2),
        ("OrderPartiallyFilled", "PARTIALLY_FILLED", 4),
        ("OrderFilled", "FILLED", 5),
    ]
    expired = await queries.order_updates(engine, written.ids["bob_bid"])
    assert [(u.kind, u.status, u.reason) for u in expired][-1] == (
        "OrderExpired",
        "EXPIRED_IN_MATCH",
        "SELF_TRADE",
    )


async def test_trades_match_the_engine(engine: AsyncEngine, written: Script) -> None:
    trades = await queries.recent_trades(engine, SYMBOL, 100)
    assert [(t.trade_id, t.price_ticks, t.qty_lots, t.taker_side) for t in trades] == [
        (1, 19_000, 10, "BUY"),
        (2, 19_020, 2, "BUY"),
        (3, 19_020, 2, "BUY"),
        (4, 19_020, 1, "BUY"),
        (5, 19_100, 2, "BUY"),
        (6, 19_100, 3, "BUY"),
    ]
    assert all(t.quote_qty == t.price_ticks * t.qty_lots * 5 for t in trades)
    assert [t.trade_id for t in await queries.recent_trades(engine, SYMBOL, 2)] == [5, 6]
    assert await queries.recent_trades(engine, "ZOMATOINR", 10) == []


async def test_ledger_and_trades_agree_with_the_accounts_engine(engine: AsyncEngine, written: Script) -> None:
    accounts = written.session.exchange.accounts
    for user in USERS:
        engine_totals = {asset: a + r for asset, (a, r) in accounts.balances(user).items() if a + r}
        assert await queries.ledger_balances(engine, user, MARKETS) == engine_totals, f"user {user}"
    fee_inr = (await queries.ledger_balances(engine, 0, MARKETS))["INR"]
    assert fee_inr > 0 and fee_inr == accounts.balance(0, "INR")[0]
    async with engine.connect() as conn:
        by_reason = select(LedgerEntry.reason, func.count()).group_by(LedgerEntry.reason)
        reasons = dict((await conn.execute(by_reason)).all())
        total = await conn.scalar(select(func.sum(LedgerEntry.delta)).where(LedgerEntry.reason != "withdraw"))
    assert reasons == {"deposit": 5, "withdraw": 1}  # the trades' legs are in their trades rows only
    assert total == 10_000_000 + 100 + 1_000_000 + 1_000_000 + 50


async def test_a_self_trade_moves_only_its_fees(engine: AsyncEngine) -> None:
    """Buyer and seller are one user: no base and no notional move, both fees are paid (STP off)."""
    s = Session(load_markets(None))
    s.run(Deposit(T0, ALICE, "INR", 1_000_000))
    s.run(Deposit(T0, ALICE, "TATA", 10))
    s.place(T0 + 1, ALICE, SELL, 19_000, 4, stp=StpMode.NONE)
    s.place(T0 + 2, ALICE, BUY, 19_000, 3, stp=StpMode.NONE)
    trades = [e for a in s.applied for e in a.events if isinstance(e, TradeExecuted)]
    assert len(trades) == 1 and trades[0].maker_user == trades[0].taker_user == ALICE
    fees = trades[0].maker_fee + trades[0].taker_fee
    assert fees > 0
    await write_all(engine, s.applied)
    totals = {a: av + r for a, (av, r) in s.exchange.accounts.balances(ALICE).items() if av + r}
    assert (
        await queries.ledger_balances(engine, ALICE, MARKETS)
        == totals
        == {
            "INR": 1_000_000 - fees,
            "TATA": 10,
        }
    )
    assert await queries.ledger_balances(engine, 0, MARKETS) == {"INR": fees}


async def test_my_trades_are_from_the_users_side(engine: AsyncEngine, written: Script) -> None:
    alice = await queries.my_trades(engine, ALICE, SYMBOL)
    assert [(t.trade_id, t.order_id, t.is_buyer, t.is_maker) for t in alice] == [
        (1, written.ids["cross"], True, False),
        (2, written.ids["cross"], True, False),
        (3, written.ids["mkt_qty"], True, False),
    ]
    assert alice[0].commission == 10 * 19_000 * 5 * 20 // 10_000  # taker fee, 20 bps
    bob = await queries.my_trades(engine, BOB, SYMBOL)
    assert [(t.trade_id, t.is_buyer, t.is_maker) for t in bob] == [
        (1, False, True),
        (2, False, True),
        (3, False, True),
        (4, False, True),
    ]
    assert bob[0].commission == 10 * 19_000 * 5 * 10 // 10_000  # maker fee, 10 bps
    # paging: from an id, by time, most recent
    assert [t.trade_id for t in await queries.my_trades(engine, BOB, SYMBOL, from_id=3)] == [3, 4]
    assert [t.trade_id for t in await queries.my_trades(engine, BOB, SYMBOL, limit=2)] == [3, 4]
    assert [t.trade_id for t in await queries.my_trades(engine, BOB, SYMBOL, from_id=1, limit=2)] == [1, 2]
    later = await queries.my_trades(engine, BOB, SYMBOL, start_ms=T0 + MIN)
    assert [t.trade_id for t in later] == [3, 4]
    early = await queries.my_trades(engine, BOB, SYMBOL, start_ms=T0, end_ms=T0 + MIN - 1)
    assert [t.trade_id for t in early] == [1, 2]
    assert await queries.my_trades(engine, BOB, SYMBOL, start_ms=T0 + 10 * MIN) == []


async def test_agg_trades_join_fills_of_one_taker_at_one_price(engine: AsyncEngine, written: Script) -> None:
    aggs = await queries.agg_trades(engine, SYMBOL)
    assert [(a.agg_id, a.price_ticks, a.qty_lots, a.first_trade_id, a.last_trade_id) for a in aggs] == [
        (1, 19_000, 10, 1, 1),
        (2, 19_020, 2, 2, 2),  # same price as trade 3, but another taker
        (3, 19_020, 2, 3, 3),
        (4, 19_020, 1, 4, 4),
        (5, 19_100, 5, 5, 6),  # Carol's market buy took Dave's two asks at 955.00
    ]
    assert not any(a.is_buyer_maker for a in aggs)
    assert aggs[-1].time_ms == T0 + 4 * MIN + 3_000
    assert [a.agg_id for a in await queries.agg_trades(engine, SYMBOL, limit=2)] == [4, 5]
    assert [a.agg_id for a in await queries.agg_trades(engine, SYMBOL, from_id=2, limit=2)] == [2, 3]
    assert [a.agg_id for a in await queries.agg_trades(engine, SYMBOL, from_id=6)] == []  # inside aggregate 5
    by_time = await queries.agg_trades(engine, SYMBOL, start_ms=T0 + MIN, end_ms=T0 + 4 * MIN + 3_000)
    assert [a.agg_id for a in by_time] == [3, 4, 5]


async def test_klines_fill_quiet_intervals_with_the_previous_close(
    engine: AsyncEngine, written: Script
) -> None:
    now = T0 + 6 * MIN + 30_000
    rows = await queries.klines(engine, SYMBOL, "1m", T0, None, 500, now)
    assert [(k.open_time_ms - T0) // MIN for k in rows] == [0, 1, 2, 3, 4, 5, 6]
    assert [(k.open, k.high, k.low, k.close, k.volume, k.trades) for k in rows] == [
        (19_000, 19_020, 19_000, 19_020, 12, 2),
        (19_020, 19_020, 19_020, 19_020, 2, 1),
        (19_020, 19_020, 19_020, 19_020, 0, 0),  # filled
        (19_020, 19_020, 19_020, 19_020, 0, 0),  # filled
        (19_020, 19_100, 19_020, 19_100, 6, 3),
        (19_100, 19_100, 19_100, 19_100, 0, 0),  # filled up to now
        (19_100, 19_100, 19_100, 19_100, 0, 0),
    ]
    assert rows[0].quote_volume == (10 * 19_000 + 2 * 19_020) * 5
    assert rows[0].close_time_ms == T0 + MIN - 1
    # the most recent intervals, ending at end_ms; a window inside a quiet spell is filled from its seed
    recent = await queries.klines(engine, SYMBOL, "1m", None, T0 + 3 * MIN, 2, now)
    assert [((k.open_time_ms - T0) // MIN, k.close, k.volume) for k in recent] == [
        (2, 19_020, 0),
        (3, 19_020, 0),
    ]
    # before the first trade nothing is invented; higher intervals merge the minutes
    assert await queries.klines(engine, SYMBOL, "1m", T0 - 10 * MIN, T0 - MIN, 500, now) == []
    first_hour = await queries.klines(engine, SYMBOL, "1h", T0 - 59 * MIN, None, 1, now)
    assert [(k.open, k.high, k.low, k.close, k.volume, k.trades) for k in first_hour] == [
        (19_000, 19_100, 19_000, 19_100, 20, 6)
    ]
    assert await queries.klines(engine, "ZOMATOINR", "1m", None, None, 10, now) == []
    with pytest.raises(ValueError, match="interval"):
        await queries.klines(engine, SYMBOL, "2m", None, None, 10, now)


async def test_ticker_24h(engine: AsyncEngine, written: Script) -> None:
    now = T0 + 4 * MIN + 30_000
    t = await queries.ticker_24h(engine, SYMBOL, now)
    assert (t.open_price, t.high_price, t.low_price, t.last_price, t.last_qty) == (
        19_000,
        19_100,
        19_000,
        19_100,
        3,
    )
    assert (t.volume, t.count, t.first_id, t.last_id) == (20, 6, 1, 6)
    assert t.quote_volume == sum(x.quote_qty for x in await queries.recent_trades(engine, SYMBOL, 100))
    assert (t.open_time_ms, t.close_time_ms) == (now - 86_400_000, now)
    # a day later the first minute has left the window (it falls in the partial first minute)
    later = await queries.ticker_24h(engine, SYMBOL, T0 + 86_400_000 + 30_000)
    assert (later.first_id, later.volume, later.open_price, later.prev_close_price) == (3, 8, 19_020, 19_020)
    quiet = await queries.ticker_24h(engine, SYMBOL, T0 + 3 * 86_400_000)
    assert (quiet.count, quiet.first_id, quiet.volume, quiet.last_price, quiet.open_price) == (
        0,
        -1,
        0,
        19_100,
        19_100,
    )
    never = await queries.ticker_24h(engine, "ZOMATOINR", now)
    assert (never.last_price, never.count, never.last_id) == (0, 0, -1)


async def test_open_all_and_lookup_by_client_id(engine: AsyncEngine, written: Script) -> None:
    ids = written.ids
    assert [o.order_id for o in await queries.open_orders(engine, BOB, SYMBOL)] == [ids["bob_ask"]]
    assert [o.order_id for o in await queries.open_orders(engine, ALICE)] == [ids["a1_second"]]
    assert await queries.open_orders(engine, CAROL, None) == []
    latest = await queries.get_order(engine, ALICE, SYMBOL, client_order_id="a1")
    assert latest is not None and latest.order_id == ids["a1_second"]
    assert await queries.get_order(engine, BOB, SYMBOL, order_id=ids["cross"]) is None  # Alice's
    alice_ids = [ids[n] for n in ("cross", "mkt_qty", "maker_taking", "a1_first", "a1_second")]
    assert [o.order_id for o in await queries.all_orders(engine, ALICE, SYMBOL)] == alice_ids
    assert [o.order_id for o in await queries.all_orders(engine, ALICE, SYMBOL, limit=2)] == alice_ids[-2:]
    assert [o.order_id for o in await queries.all_orders(engine, ALICE, SYMBOL, alice_ids[1], limit=2)] == (
        alice_ids[1:3]
    )
    in_time = await queries.all_orders(engine, ALICE, SYMBOL, None, T0 + MIN, T0 + 4 * MIN + 7_000)
    assert [o.order_id for o in in_time] == alice_ids[1:3]


async def test_open_orders_use_the_partial_index(engine: AsyncEngine, written: Script) -> None:
    query = f"SELECT order_id FROM orders WHERE user_id = 1 AND {OPEN_STATUS_SQL}"
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            explain = f"EXPLAIN QUERY PLAN {query}"
        else:  # a table this small is cheaper to scan: ask which index Postgres would use
            await conn.execute(text("SET LOCAL enable_seqscan = off"))
            explain = f"EXPLAIN {query}"
        plan = " ".join(str(row[-1]) for row in await conn.execute(text(explain)))
    assert "ix_orders_open" in plan


def assert_exact_types(row: msgspec.Struct) -> None:
    """Every field holds exactly its annotated type: no Decimal or float where an int belongs."""
    for info in msgspec.structs.fields(row):
        value = getattr(row, info.name)
        allowed = get_args(info.type) or (info.type,)
        assert type(value) in allowed, (type(row).__name__, info.name, type(value), value)


async def test_every_number_comes_back_as_an_int(engine: AsyncEngine, written: Script) -> None:
    """Postgres returns NUMERIC amounts and SUM(BIGINT) as Decimal: each query must turn them into int."""
    now = T0 + 4 * MIN + 30_000
    rows: list[msgspec.Struct] = [
        *await queries.all_orders(engine, ALICE, SYMBOL),
        *await queries.all_orders(engine, CAROL, SYMBOL),
        *await queries.order_updates(engine, written.ids["ask2"]),
        *await queries.recent_trades(engine, SYMBOL),
        *await queries.my_trades(engine, BOB, SYMBOL),
        *await queries.agg_trades(engine, SYMBOL),
        *await queries.klines(engine, SYMBOL, "1m", T0, None, 500, now),
        *await queries.klines(engine, SYMBOL, "1d", None, None, 2, now),
        await queries.ticker_24h(engine, SYMBOL, now),
        await queries.ticker_24h(engine, SYMBOL, T0 + 3 * 86_400_000),
    ]
    assert len(rows) > 30
    for row in rows:
        assert_exact_types(row)
    quote_buy = await queries.get_order(engine, CAROL, SYMBOL, written.ids["mkt_quote"])
    assert quote_buy is not None and type(quote_buy.orig_quote_qty) is int
    for user in USERS:
        assert all(type(v) is int for v in (await queries.ledger_balances(engine, user, MARKETS)).values())
    assert type(await queries.demo_claimed_today(engine, ALICE, "INR", 0)) is int
    ids = await queries.trade_id_range(engine, SYMBOL, T0, now)
    assert ids == (1, 6) and all(type(i) is int for i in ids)


# --------------------------------------------------------------------------------
# The writer: idempotency, coalescing, read-your-writes
# --------------------------------------------------------------------------------


async def table_counts(engine: AsyncEngine) -> list[int]:
    return [await count(engine, m) for m in (Order, OrderUpdate, Trade, LedgerEntry)]


async def test_feeding_everything_twice_stores_nothing_twice(engine: AsyncEngine, script: Script) -> None:
    applied = script.session.applied
    writer = HistoryWriter(engine, load_markets(None))
    await writer.load_progress()
    writer.start()
    for batch in batches(applied, 5):
        writer.on_applied(batch)
        writer.on_applied(batch)  # at-least-once delivery: the same batch again at once
    await writer.wait_for(applied[-1].offset)
    once = await table_counts(engine)
    candles_once = await queries.klines(engine, SYMBOL, "1m", T0, None, 10, T0 + 5 * MIN)
    writer.on_applied(applied)  # a full replay
    await writer.stop()
    assert await table_counts(engine) == once
    # a new writer (a restart) replays everything: still nothing new, candles unchanged
    again = await write_all(engine, applied, size=7)
    assert again.durable_offset == applied[-1].offset and again.stats.commands == 0
    assert await table_counts(engine) == once
    assert await queries.klines(engine, SYMBOL, "1m", T0, None, 10, T0 + 5 * MIN) == candles_once


async def test_a_restart_in_the_middle_continues_where_it_stopped(
    engine: AsyncEngine, script: Script
) -> None:
    applied = script.session.applied
    half = len(applied) // 2
    await write_all(engine, applied[:half], size=3)
    await write_all(engine, applied, size=3)  # replays the first half, writes the rest
    reference = make_engine("sqlite://")
    try:
        await upgrade_async(reference)
        await write_all(reference, applied, size=len(applied))
        assert await table_counts(engine) == await table_counts(reference)
        for user in USERS:
            assert await queries.ledger_balances(engine, user, MARKETS) == await queries.ledger_balances(
                reference, user, MARKETS
            )
        assert await queries.klines(engine, SYMBOL, "1m", T0, None, 10, T0 + 5 * MIN) == await queries.klines(
            reference, SYMBOL, "1m", T0, None, 10, T0 + 5 * MIN
        )
    finally:
        await reference.dispose()


async def test_one_transaction_per_command_gives_the_same_orders_as_one_for_all(
    engine: AsyncEngine, script: Script
) -> None:
    """Orders touched again in later transactions (the writer's cache of open orders, or SQL) end
    exactly as when everything is written at once."""
    applied = script.session.applied
    writer = HistoryWriter(engine, load_markets(None), cache_orders=3)  # a small cache: some from SQL
    await writer.load_progress()
    writer.start()
    for item in applied:
        writer.on_applied([item])
        await writer.wait_for(item.offset)
    await writer.stop()
    assert writer.stats.transactions == len(applied)
    reference = make_engine("sqlite://")
    try:
        await upgrade_async(reference)
        await write_all(reference, applied, size=len(applied))
        columns = (
            Order.order_id,
            Order.status,
            Order.executed_qty_lots,
            Order.cum_quote_qty,
            Order.update_time_ms,
        )

        async def orders(db: AsyncEngine) -> list[tuple[object, ...]]:
            async with db.connect() as conn:
                return [
                    tuple(r) for r in (await conn.execute(select(*columns).order_by(Order.order_id))).all()
                ]

        assert await orders(engine) == await orders(reference)
    finally:
        await reference.dispose()


async def test_two_writers_with_one_name_never_duplicate(engine: AsyncEngine, script: Script) -> None:
    applied = script.session.applied
    first, second = (HistoryWriter(engine, load_markets(None), retry_seconds=0.01) for _ in range(2))
    await first.load_progress()
    await second.load_progress()  # both believe the watermark is 0
    first.start()
    first.on_applied(applied)
    await first.wait_for(applied[-1].offset)
    second.start()
    second.on_applied(applied)  # its compare-and-set fails; it reloads and skips everything
    await asyncio.wait_for(second.wait_for(applied[-1].offset), 5)
    await first.stop()
    await second.stop()
    assert second.stats.failures == 1 and second.stats.commands == 0
    reference = await table_counts(engine)
    assert reference[2] == 6  # six trades, once


async def test_two_writers_with_one_name_racing_never_duplicate(engine: AsyncEngine, script: Script) -> None:
    """Both write the same batches at once: the watermark's compare-and-set lets one row set in."""
    applied = script.session.applied
    writers = [HistoryWriter(engine, load_markets(None), retry_seconds=0.01) for _ in range(2)]
    for writer in writers:
        await writer.load_progress()
    for writer in writers:
        writer.start()
    for batch in batches(applied, 4):
        for writer in writers:
            writer.on_applied(batch)
    for writer in writers:
        await asyncio.wait_for(writer.wait_for(applied[-1].offset), 10)
        await writer.stop()
    assert sum(w.stats.commands for w in writers) == len(applied)  # each offset written once
    assert all(w.stats.failures >= 1 for w in writers if w.stats.commands < len(applied))
    assert sum(w.stats.failures for w in writers) >= 1  # the second to write found the watermark moved
    assert await table_counts(engine) == await table_counts_of_one_writer(applied)
    for user in USERS:
        engine_totals = {
            asset: a + r for asset, (a, r) in script.session.exchange.accounts.balances(user).items() if a + r
        }
        assert await queries.ledger_balances(engine, user, MARKETS) == engine_totals


async def table_counts_of_one_writer(applied: list[Applied]) -> list[int]:
    reference = make_engine("sqlite://")
    try:
        await upgrade_async(reference)
        await write_all(reference, applied, size=len(applied))
        return await table_counts(reference)
    finally:
        await reference.dispose()


async def test_batches_queued_together_are_written_in_one_transaction(
    engine: AsyncEngine, script: Script
) -> None:
    applied = script.session.applied
    writer = HistoryWriter(engine, load_markets(None))
    await writer.load_progress()
    for batch in batches(applied, 2):  # queued before the task runs: coalesced
        writer.on_applied(batch)
    assert writer.backlog == len(applied)
    writer.start()
    await writer.flush()
    assert writer.stats.transactions == 1 and writer.stats.commands == len(applied)
    assert writer.durable_offset == applied[-1].offset and writer.backlog == 0
    await writer.stop()


async def test_a_lingering_writer_gathers_what_is_queued_meanwhile_into_one_transaction(
    engine: AsyncEngine, script: Script
) -> None:
    applied = script.session.applied
    writer = HistoryWriter(engine, load_markets(None), linger_s=0.5)
    await writer.load_progress()
    writer.start()
    for batch in batches(applied, 3):  # arriving over 0.1 s, within one linger
        writer.on_applied(batch)
        await asyncio.sleep(0.1 / len(applied))
    await writer.flush()
    assert writer.stats.transactions == 1 and writer.stats.commands == len(applied)
    await writer.stop()
    assert await table_counts(engine) == await table_counts_of_one_writer(applied)


async def test_a_lingering_writer_does_not_wait_once_a_full_transaction_is_queued(
    engine: AsyncEngine, script: Script
) -> None:
    applied = script.session.applied
    writer = HistoryWriter(engine, load_markets(None), linger_s=60, max_commands=len(applied) // 2)
    await writer.load_progress()
    writer.start()
    writer.on_applied(applied)
    await asyncio.wait_for(writer.flush(), 10)  # two full transactions, no lingering
    assert writer.stats.transactions == 2
    await writer.stop()


def test_the_row_layouts_name_every_column_of_their_tables() -> None:
    for layout, table in (
        (bulk.ORDER_COLUMNS, bulk.ORDERS),
        (bulk.UPDATE_COLUMNS, bulk.ORDER_UPDATES),
        (bulk.TRADE_COLUMNS, bulk.TRADES),
        (bulk.LEDGER_COLUMNS, bulk.LEDGER),
        (bulk.CANDLE_COLUMNS, bulk.CANDLES),
        (bulk.SEQ_COLUMNS, bulk.SEQS),
    ):
        assert sorted(layout) == sorted(table.columns.keys()), table.name


async def test_wait_for_returns_after_commit_and_fails_when_stopped(
    engine: AsyncEngine, script: Script
) -> None:
    applied = script.session.applied
    writer = HistoryWriter(engine, load_markets(None))
    writer.start()
    waiter = asyncio.create_task(writer.wait_for(3))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    writer.on_applied(applied[:3])
    await asyncio.wait_for(waiter, 5)
    assert writer.durable_offset == 3
    assert await queries.get_order(engine, BOB, SYMBOL, 1) is None  # offset 6 not written yet
    pending = asyncio.create_task(writer.wait_for(999))
    await asyncio.sleep(0.01)
    await writer.stop()
    with pytest.raises(WriterStopped):
        await pending
    with pytest.raises(WriterStopped):
        await writer.wait_for(10)
    await writer.wait_for(2)  # already committed: returns at once


# --------------------------------------------------------------------------------
# Users, keys, demo claims
# --------------------------------------------------------------------------------


async def test_users_and_keys(engine: AsyncEngine) -> None:
    alice, key1 = await queries.register_user(engine, "alice", PEM, "laptop", now_ms=1_000)
    bob, _ = await queries.register_user(engine, "bob", PEM)
    assert (alice, bob) == (1, 2)  # ids start at 1: 0 is the fee account
    assert len(key1) == 32
    with pytest.raises(queries.NameTaken):
        await queries.register_user(engine, "alice", PEM)
    user = await queries.user_by_name(engine, "alice")
    assert user is not None and (user.id, user.created_ms) == (alice, 1_000)
    assert await queries.get_user(engine, 99) is None

    assert await queries.key_lookup(engine, key1) == (alice, PEM)
    key2 = await queries.add_key(engine, alice, PEM, "bot", now_ms=2_000)
    with pytest.raises(queries.UnknownUser):
        await queries.add_key(engine, 99, PEM)
    keys = await queries.list_keys(engine, alice)
    assert [(k.key_id, k.label, k.revoked_ms) for k in keys] == [(key1, "laptop", None), (key2, "bot", None)]
    assert not await queries.revoke_key(engine, bob, key1)  # not bob's
    assert await queries.revoke_key(engine, alice, key1, now_ms=3_000)
    assert not await queries.revoke_key(engine, alice, key1)  # already revoked
    assert await queries.key_lookup(engine, key1) is None
    assert await queries.key_lookup(engine, "no-such-key") is None
    assert [k.revoked_ms for k in await queries.list_keys(engine, alice)] == [3_000, None]
    assert {k for k, _, _ in await queries.active_keys(engine)} == {key2} | {
        k.key_id for k in await queries.list_keys(engine, bob)
    }


async def test_demo_claims_count_per_day(engine: AsyncEngine) -> None:
    day = 86_400_000
    await queries.record_demo_claim(engine, 1, "INR", 500, 10 * day - 1)  # yesterday
    await queries.record_demo_claim(engine, 1, "INR", 300, 10 * day + 5)
    await queries.record_demo_claim(engine, 1, "INR", 200, 10 * day + 9)
    await queries.record_demo_claim(engine, 1, "TATA", 7, 10 * day + 9)
    await queries.record_demo_claim(engine, 2, "INR", 1, 10 * day + 9)
    assert await queries.demo_claimed_today(engine, 1, "INR", 10 * day) == 500
    assert await queries.demo_claimed_today(engine, 1, "TATA", 10 * day) == 7
    assert await queries.demo_claimed_today(engine, 3, "INR", 10 * day) == 0


async def test_a_database_younger_than_the_log_is_written_with_a_warning(
    engine: AsyncEngine, script: Script, caplog: pytest.LogCaptureFixture
) -> None:
    applied = script.session.applied
    tail = [a for a in applied if a.offset > 10]  # as after a snapshot at offset 10 with a fresh database
    writer = HistoryWriter(engine, load_markets(None))
    writer.start()
    writer.on_applied(tail)
    await asyncio.wait_for(writer.wait_for(applied[-1].offset), 5)
    await writer.stop()
    assert "never stored" in caplog.text
    assert writer.durable_offset == applied[-1].offset
    assert len(await queries.recent_trades(engine, SYMBOL, 100)) == 4  # trades 3..6 happened after offset 10


# --------------------------------------------------------------------------------
# Postgres only
# --------------------------------------------------------------------------------


async def test_amounts_wider_than_64_bits_are_exact_on_postgres(postgres_url: str) -> None:
    """NUMERIC(38, 0) sums past 2^63 (an order's cumulative quote, a candle's quote volume) stay exact.

    Three trades of one taker order, each worth 4.5e18 paise (a BIGINT), written in three
    transactions: the order's ``cum_quote_qty`` is then updated, and the candle upserted, past
    2^63 by SQL arithmetic on NUMERIC. (SQLite stores these columns as 64-bit integers.)
    """
    await upgrade_async(postgres_url)
    db = make_engine(postgres_url)
    price, qty = 1_000_000_000, 900_000_000
    notional = price * qty * 5  # TATAINR: a tick times a lot is 5 paise
    total = 3 * notional
    assert notional < 2**63 <= total

    def accepted(order_id: int, user: int, side: Side) -> OrderAccepted:
        lots = 3 * qty
        return OrderAccepted(T0, SYMBOL, order_id, user, side, LIMIT, GTC, price, lots, 0, "", StpMode.NONE)

    def trade(seq: int, trade_id: int) -> list[Event]:
        return [
            TradeExecuted(seq, T0 + trade_id, SYMBOL, trade_id, price, qty, BUY, 1, BOB, 2, ALICE, 0, 0),
            OrderPartiallyFilled(seq + 1, T0 + trade_id, SYMBOL, 1, BOB, (3 - trade_id) * qty),
            OrderPartiallyFilled(seq + 2, T0 + trade_id, SYMBOL, 2, ALICE, (3 - trade_id) * qty),
        ]

    command = Deposit(T0, ALICE, "INR", 1)  # the writer reads only the events
    applied = [
        Applied(1, command, [accepted(1, BOB, SELL)]),
        Applied(2, command, [accepted(2, ALICE, BUY), *trade(1, 1)]),
        Applied(3, command, trade(4, 2)),
        Applied(4, command, trade(7, 3)),
    ]
    try:
        writer = HistoryWriter(db, load_markets(None))
        writer.start()
        for item in applied:  # one transaction each
            writer.on_applied([item])
            await asyncio.wait_for(writer.wait_for(item.offset), 10)
        await writer.stop()
        assert writer.stats.transactions == 4
        order = await queries.get_order(db, ALICE, SYMBOL, 2)
        assert order is not None and order.cum_quote_qty == total and type(order.cum_quote_qty) is int
        assert order.executed_qty_lots == 3 * qty
        for interval in ("1m", "1d"):
            (candle,) = await queries.klines(db, SYMBOL, interval, None, None, 1, T0 + 30_000)
            assert (candle.quote_volume, candle.volume, candle.trades) == (total, 3 * qty, 3)
            assert_exact_types(candle)
        for now in (T0 + 30_000, T0 + 2 * MIN):  # the minute from trades, then from the 1m candle
            ticker = await queries.ticker_24h(db, SYMBOL, now)
            assert (ticker.quote_volume, ticker.volume, ticker.count) == (total, 3 * qty, 3)
            assert_exact_types(ticker)
        assert (await queries.ledger_balances(db, BOB, MARKETS))["INR"] == total
    finally:
        await db.dispose()


async def test_the_postgres_writer_reconnects_when_its_connection_is_killed(
    postgres_url: str, script: Script
) -> None:
    """A lost connection (a restarted or failing server) costs a retry, not a row twice or missing."""
    applied = script.session.applied
    await upgrade_async(postgres_url)
    db = make_engine(postgres_url)
    try:
        writer = HistoryWriter(db, load_markets(None), retry_seconds=0.05)
        await writer.load_progress()
        writer.start()
        half = len(applied) // 2
        writer.on_applied(applied[:half])
        await asyncio.wait_for(writer.flush(), 10)
        killed = 0
        for _ in range(50):  # (a fresh backend may not be listed yet: look again)
            async with db.connect() as conn:  # every other connection to this database
                killed = await conn.scalar(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
            if killed:
                break
            await asyncio.sleep(0.1)
        assert killed and killed >= 1
        writer.on_applied(applied[half:])
        await asyncio.wait_for(writer.flush(), 10)
        await writer.stop()
        # (whether asyncpg noticed the loss first or the next write failed and was retried)
        assert await table_counts(db) == await table_counts_of_one_writer(applied)
    finally:
        await db.dispose()


def test_processes_starting_together_migrate_a_postgres_database_once(postgres_url: str) -> None:
    """Several nodes starting at once against one fresh database: one migrates, the others wait."""
    code = "import sys; from investo.store.migrate import upgrade; upgrade(sys.argv[1])"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, postgres_url], stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    errors = [proc.communicate(timeout=120)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], errors

    async def revision() -> str | None:
        db = make_engine(postgres_url)
        try:
            return await current_revision(db)
        finally:
            await db.dispose()

    assert asyncio.run(revision()) == "0005"


async def test_rebuild_next_to_a_running_writer_on_postgres(postgres_url: str, script: Script) -> None:
    """A writer commits a trade while the rebuild runs: its candle upsert waits for the rebuild.

    The writer's transaction starts once the rebuild has deleted the candles (from the
    rebuild's progress callback, on another thread), with a trade a day later, so none of
    its candles is a row the rebuild deleted (and holds locked). Without the rebuild's
    table lock the writer would commit its trade and candles at once; the rebuild would
    then count that trade too and fail on the writer's candle rows.
    """
    await upgrade_async(postgres_url)
    db = make_engine(postgres_url)
    applied = script.session.applied
    try:
        await write_all(db, applied)
        last = applied[-1].offset
        day = 86_400_000
        late = TradeExecuted(0, T0 + day, SYMBOL, 7, 19_000, 4, SELL, 0, ALICE, 0, BOB, 0, 0)
        late_applied = Applied(last + 1, Deposit(T0, ALICE, "INR", 1), [late])

        async def write_late() -> None:
            engine = make_engine(postgres_url)
            try:
                writer = HistoryWriter(engine, load_markets(None))
                writer.start()
                writer.on_applied([late_applied])
                await asyncio.wait_for(writer.wait_for(late_applied.offset), 30)
                await writer.stop()
            finally:
                await engine.dispose()

        threads: list[threading.Thread] = []

        def progress(done: int, total: int) -> None:
            if not threads:  # the candles are deleted and locked: the writer now runs into the lock
                threads.append(threading.Thread(target=asyncio.run, args=(write_late(),)))
                threads[0].start()
                time.sleep(0.5)

        written = await rebuild_candles(postgres_url, progress)
        await asyncio.to_thread(threads[0].join, 30)
        days = await queries.klines(db, SYMBOL, "1d", None, None, 2, T0 + day)
        assert [(k.trades, k.volume) for k in days] == [(6, 20), (1, 4)]  # the script's, the late one
        before = {i: await queries.klines(db, SYMBOL, i, None, None, 1500, T0 + day) for i in INTERVALS}
        assert await rebuild_candles(postgres_url) == written + len(INTERVALS)  # + the late trade's
        after = {i: await queries.klines(db, SYMBOL, i, None, None, 1500, T0 + day) for i in INTERVALS}
        assert after == before
    finally:
        await db.dispose()
