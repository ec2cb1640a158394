"""The history writer: applied commands and their events, written to SQL in batched transactions.

:class:`HistoryWriter` is a host :class:`~investo.host.Listener`. The host hands it
every applied batch (``on_applied``, synchronous, never blocks: the batch is only
queued); a background task writes whatever is queued, several batches at a time, in
one transaction.

Guarantees
----------
* **Exactly once per offset.** ``writer_progress`` holds the highest log offset whose
  rows are committed (the watermark). A write skips every :class:`Applied` at or below
  it and advances it in the same transaction as the rows, so replays, restarts and
  at-least-once delivery never store anything twice, and a crash mid-write stores
  nothing of that write. The watermark is advanced with a compare-and-set: a second
  writer under the same ``name`` makes one of them fail and reload instead of
  duplicating rows.
* **Log order.** Items are written in offset order; an order's row reflects every
  event up to the watermark; candles are merged in trade order.
* **Read-your-writes.** :attr:`durable_offset` is the committed watermark and
  :meth:`wait_for` returns once it reaches an offset, so the API can answer a query
  about an order it has just placed.
* **Nothing lost on failure.** A failed write is retried (with back-off) with the same
  items; items are dropped only once committed, or at :meth:`stop` if it times out
  (they are then replayed from the log at the next start, being above the watermark).

Rows per event (times are the command's ``ts``)
------------------------------------------------
* ``OrderAccepted``: the order row (``NEW``) and an ``order_updates`` row.
* ``TradeExecuted``: a ``trades`` row (and no ledger row: what the trade moved, buyer
  +base and −(notional + its fee), seller −base and +(notional − its fee), the fee
  account +fees, follows from the row and the market's units, and the readers of
  holdings add it: :func:`investo.store.queries.trade_moves`); the 1m…1d candles; both
  orders' executed lots and cumulative quote.
* ``OrderPartiallyFilled`` / ``OrderFilled`` / ``OrderCanceled`` / ``OrderExpired``:
  the order's status (``EXPIRED_IN_MATCH`` for self-trade prevention, as Binance) and
  an ``order_updates`` row; ``OrderRested`` only the ``order_updates`` row.
* ``OrderRejected`` with an order id: status ``REJECTED`` (with id 0, nothing).
* ``Deposited`` / ``Withdrawn``: a ledger row (the ledger holds nothing else).
  Other rejections: nothing.
* Every entry: ``engine_seqs`` keeps, per writer and counter (:func:`seq_key`), the
  highest event ``seq`` committed, so an engine rebuilt from SQL numbers on after it.

Costs
-----
* ``on_applied``: O(len(batch)) to queue; nothing else on the host's path.
* One write per wake-up, of up to ``max_commands`` queued commands (with
  ``linger_s`` > 0 it first waits up to that long for ``max_commands`` to be queued,
  unless a reader waits in :meth:`wait_for`: fewer, larger transactions, whether the
  database is the bottleneck or orders only trickle in): one SELECT of the orders it
  touches that earlier writes created and that are not in its cache of open orders
  (the committed state of up to ``cache_orders`` orders it wrote last, dropped
  whenever the watermark is reloaded); then one transaction through
  :mod:`investo.store.bulk` (on Postgres: its own asyncpg connection, inserts as COPY;
  about ten round trips whatever the size). Orders and candles are aggregated in
  memory first: one row write per touched order and per touched candle per
  transaction, whatever the number of events. On Postgres a transaction of 2,000
  commands costs about half the server CPU per command of one of 250 (orders that
  rest across transactions are written twice, and each commit has a fixed cost).
* Building the rows runs on the event loop: plain tuples, under a microsecond per row.
* The queue is unbounded (the host must never wait for SQL); :attr:`backlog` tells how
  many commands wait, for whoever wants to throttle or alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, cast

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from investo.core.markets import Market
from investo.core.messages import (
    Deposited,
    DepositRejected,
    Event,
    ExpireReason,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderRested,
    OrderType,
    Side,
    StpMode,
    TimeInForce,
    TradeExecuted,
    Withdrawn,
    WithdrawRejected,
)
from investo.markets import MarketSpec
from investo.store.bulk import PROGRESS, Tables, WriterConflict, make_store
from investo.store.models import INTERVALS
from investo.tasks import cancel_and_wait

__all__ = ["HistoryWriter", "WriterConflict", "WriterStats", "WriterStopped"]

log = logging.getLogger(__name__)


class AppliedEvents(Protocol):
    """What the writer needs of an applied command: its log offset and its events.

    :class:`investo.host.Applied` is one; the distributed mode's DB writer passes
    output-stream entries.
    """

    @property
    def offset(self) -> int: ...

    @property
    def events(self) -> Sequence[Event]: ...


SIDE_NAMES: Final = {Side.BUY: "BUY", Side.SELL: "SELL"}
# An enum member's ``.name`` and ``Side.BUY`` go through descriptors (slow on Python 3.11):
# the rows take names from these tables, and comparisons use module constants.
TYPE_NAMES: Final = {member: member.name for member in OrderType}
TIF_NAMES: Final = {member: member.name for member in TimeInForce}
STP_NAMES: Final = {member: member.name for member in StpMode}
_BUY: Final = Side.BUY
_MARKET: Final = OrderType.MARKET
MINUTE: Final = 60_000
_ORDER_EVENTS: Final = frozenset(
    {OrderFilled, OrderPartiallyFilled, OrderRested, OrderCanceled, OrderExpired, OrderRejected}
)


class WriterStopped(RuntimeError):
    """The writer stopped before the awaited offset was committed."""


@dataclass
class WriterStats:
    commands: int = 0  # applied commands written (skipped duplicates not counted)
    transactions: int = 0
    rows: int = 0
    seconds: float = 0.0  # time spent in writes, building rows included
    failures: int = 0


_FINISHED: Final = frozenset({"FILLED", "CANCELED", "EXPIRED", "EXPIRED_IN_MATCH", "REJECTED"})


class _OrderState:
    """What the writer tracks of one touched order within a transaction (mutable)."""

    __slots__ = ("cum_quote", "executed", "new", "order_id", "status", "update_time")

    def __init__(
        self, order_id: int, status: str, executed: int, cum_quote: int, update_time: int, new: bool
    ) -> None:
        self.order_id = order_id
        self.status = status
        self.executed = executed
        self.cum_quote = cum_quote
        self.update_time = update_time
        self.new = new


class _Rows:
    """The rows of one transaction, built from applied commands in offset order (no I/O).

    Rows are tuples in the layouts of :mod:`investo.store.bulk` (``*_COLUMNS``).
    """

    def __init__(self, markets: Mapping[str, Market], existing: dict[int, _OrderState]):
        self.markets = markets
        self.orders = existing  # order id -> state; new ones are added as accepted
        self.new_orders: dict[int, OrderAccepted] = {}
        self.order_updates: list[tuple[Any, ...]] = []
        self.trades: list[tuple[Any, ...]] = []
        self.ledger: list[tuple[Any, ...]] = []
        self.minutes: dict[tuple[str, int], list[int]] = {}  # (symbol, minute) -> o h l c v qv n
        self.missing: set[int] = set()  # orders events name that history does not hold
        self.seqs: dict[str, int] = {}  # seq_key -> the highest event seq seen

    # ------------------------------------------------------------------ events

    def add(self, applied: AppliedEvents) -> None:
        offset = applied.offset
        ledger_idx = itertools.count()
        update_idx = itertools.count()
        for event in applied.events:
            kind = type(event)
            if kind is TradeExecuted:
                self._trade(offset, cast(TradeExecuted, event))
            elif kind is OrderFilled:
                self._status(offset, next(update_idx), cast(OrderFilled, event), "FILLED", None)
            elif kind is OrderPartiallyFilled:
                event = cast(OrderPartiallyFilled, event)
                self._status(offset, next(update_idx), event, "PARTIALLY_FILLED", None)
            elif kind is OrderAccepted:
                self._accepted(offset, next(update_idx), cast(OrderAccepted, event))
            elif kind is OrderRested:
                self._status(offset, next(update_idx), cast(OrderRested, event), None, None)
            elif kind is OrderCanceled:
                event = cast(OrderCanceled, event)
                self._status(offset, next(update_idx), event, "CANCELED", event.reason.name)
            elif kind is OrderExpired:
                event = cast(OrderExpired, event)
                status = "EXPIRED_IN_MATCH" if event.reason == ExpireReason.SELF_TRADE else "EXPIRED"
                self._status(offset, next(update_idx), event, status, event.reason.name)
            elif kind is OrderRejected:
                event = cast(OrderRejected, event)
                if event.order_id:  # 0: refused before an id was assigned, no order exists
                    self._status(offset, next(update_idx), event, "REJECTED", event.code.name)
            elif kind is Deposited:
                event = cast(Deposited, event)
                self._leg(offset, ledger_idx, event.user, event.asset, event.amount, "deposit", event.ts)
            elif kind is Withdrawn:
                event = cast(Withdrawn, event)
                self._leg(offset, ledger_idx, event.user, event.asset, -event.amount, "withdraw", event.ts)
        for event in reversed(applied.events):  # one entry's events share one counter: the last numbers it
            seq: int = getattr(event, "seq", 0)
            if seq:
                key = seq_key(event)
                if seq > self.seqs.get(key, 0):
                    self.seqs[key] = seq
                break

    def _accepted(self, offset: int, idx: int, ev: OrderAccepted) -> None:
        self.new_orders[ev.order_id] = ev
        self.orders[ev.order_id] = _OrderState(ev.order_id, "NEW", 0, 0, ev.ts, new=True)
        self.order_updates.append((offset, idx, ev.order_id, "NEW", 0, "OrderAccepted", None, ev.ts))

    def _status(
        self,
        offset: int,
        idx: int,
        ev: OrderPartiallyFilled | OrderFilled | OrderRested | OrderCanceled | OrderExpired | OrderRejected,
        status: str | None,
        reason: str | None,
    ) -> None:
        state = self.orders.get(ev.order_id)
        if state is None:
            self.missing.add(ev.order_id)
            return
        if status is not None:
            state.status = status
        state.update_time = ev.ts
        row = (offset, idx, ev.order_id, state.status, state.executed, type(ev).__name__, reason, ev.ts)
        self.order_updates.append(row)

    def _trade(self, offset: int, ev: TradeExecuted) -> None:
        """The trade's row, its candles and both orders' fills; no ledger rows (the row implies them)."""
        notional = ev.price * ev.qty * self.markets[ev.market].notional_unit
        ts = ev.ts
        self.trades.append(
            (
                ev.market, ev.trade_id, ev.price, ev.qty, notional, ts, SIDE_NAMES[ev.taker_side],
                ev.maker_order_id, ev.taker_order_id, ev.maker_user, ev.taker_user, ev.maker_fee,
                ev.taker_fee, offset,
            )
        )  # fmt: skip
        for order_id in (ev.maker_order_id, ev.taker_order_id):
            state = self.orders.get(order_id)
            if state is not None:
                state.executed += ev.qty
                state.cum_quote += notional
                state.update_time = ts
        self._candle(ev.market, ts, ev.price, ev.qty, notional)

    def _candle(self, symbol: str, ts: int, price: int, qty: int, notional: int) -> None:
        key = (symbol, ts - ts % MINUTE)
        candle = self.minutes.get(key)
        if candle is None:
            self.minutes[key] = [price, price, price, price, qty, notional, 1]
        else:
            if price > candle[1]:
                candle[1] = price
            if price < candle[2]:
                candle[2] = price
            candle[3] = price
            candle[4] += qty
            candle[5] += notional
            candle[6] += 1

    def _leg(
        self,
        offset: int,
        idx: Iterator[int],
        user: int,
        asset: str,
        delta: int,
        reason: str,
        ts: int,
    ) -> None:
        """A deposit's or withdrawal's ledger row (trades write none: their ``trades`` row implies them)."""
        self.ledger.append((offset, next(idx), user, asset, delta, reason, None, None, ts))

    # ------------------------------------------------------------------ results

    def tables(self) -> Tables:
        return Tables(
            self.order_inserts(),
            self.order_changes(),
            self.order_updates,
            self.trades,
            self.ledger,
            self.candles(),
        )

    def order_inserts(self) -> list[tuple[Any, ...]]:
        """The orders accepted in this transaction, with their state at its end (ORDER_COLUMNS)."""
        rows = []
        for order_id, ev in self.new_orders.items():
            state = self.orders[order_id]
            by_quote = ev.type == _MARKET and ev.side == _BUY and ev.qty == 0
            rows.append(
                (
                    order_id, ev.user, ev.market, SIDE_NAMES[ev.side], TYPE_NAMES[ev.type], TIF_NAMES[ev.tif],
                    ev.price, ev.qty, ev.quote_limit if by_quote else 0, state.executed, state.cum_quote,
                    state.status, ev.client_order_id, STP_NAMES[ev.stp], ev.ts, state.update_time, ev.ts,
                )
            )  # fmt: skip
        return rows

    def order_changes(self) -> list[tuple[Any, ...]]:
        """Orders of earlier transactions this one touched (ORDER_CHANGE_FIELDS)."""
        return [
            (s.order_id, s.status, s.executed, s.cum_quote, s.update_time)
            for s in self.orders.values()
            if not s.new
        ]

    def candles(self) -> list[tuple[Any, ...]]:
        """Every touched candle of every interval, merged from this transaction's minutes (CANDLE_COLUMNS)."""
        merged: dict[tuple[str, str, int], list[int]] = {}
        for (symbol, minute), m in self.minutes.items():  # in trade order
            for name, length in INTERVALS.items():
                key = (symbol, name, minute - minute % length)
                c = merged.get(key)
                if c is None:
                    merged[key] = m.copy()
                else:
                    c[1] = max(c[1], m[1])
                    c[2] = min(c[2], m[2])
                    c[3] = m[3]
                    c[4] += m[4]
                    c[5] += m[5]
                    c[6] += m[6]
        return [
            (symbol, name, open_time, *c, open_time + INTERVALS[name] - 1)
            for (symbol, name, open_time), c in merged.items()
        ]


_ACCOUNTS_SEQ: Final = frozenset({Deposited, Withdrawn, DepositRejected, WithdrawRejected})


def seq_key(event: Event) -> str:
    """The counter an event's ``seq`` belongs to: ``accounts`` or ``market:<symbol>``.

    Accounts events (and an ``OrderRejected`` the accounts engine gave, with order id 0)
    are numbered by their accounts shard; every other event with a ``seq`` by its market.
    """
    kind = type(event)
    if kind in _ACCOUNTS_SEQ or (kind is OrderRejected and not cast(OrderRejected, event).order_id):
        return "accounts"
    return f"market:{getattr(event, 'market', '')}"


def _referenced_orders(items: Sequence[AppliedEvents]) -> set[int]:
    """Order ids the items touch that they do not create (their rows come from earlier writes)."""
    created: set[int] = set()
    touched: set[int] = set()
    for applied in items:
        for event in applied.events:
            kind = type(event)
            if kind is TradeExecuted:
                trade = cast(TradeExecuted, event)
                touched.add(trade.maker_order_id)
                touched.add(trade.taker_order_id)
            elif kind is OrderAccepted:
                created.add(cast(OrderAccepted, event).order_id)
            elif kind in _ORDER_EVENTS:
                touched.add(cast(OrderFilled, event).order_id)  # every one of them has an order id
    touched.discard(0)  # OrderRejected before an id was assigned
    return touched - created


class HistoryWriter:
    """Writes applied batches to SQL; a host Listener. See the module docstring."""

    def __init__(
        self,
        engine: AsyncEngine,
        markets: Mapping[str, MarketSpec],
        name: str = "embedded",
        *,
        max_commands: int = 5_000,
        linger_s: float = 0.0,
        retry_seconds: float = 0.2,
        max_retry_seconds: float = 5.0,
        cache_orders: int = 200_000,
    ) -> None:
        self.engine = engine
        self.name = name
        self.stats = WriterStats()
        self._markets: dict[str, Market] = {symbol: spec.core for symbol, spec in markets.items()}
        self._max_commands = max_commands
        self._linger_s = linger_s
        self._retry_seconds = retry_seconds
        self._max_retry_seconds = max_retry_seconds
        self._pending: deque[AppliedEvents] = deque()
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()  # ends a linger: a reader waits, the queue is full, or stop
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._loaded = False
        self._durable = 0
        # Committed states of open orders this writer wrote last, so a fill or cancel of a
        # resting order needs no SELECT; cleared whenever the watermark is reloaded.
        self._open_orders: OrderedDict[int, _OrderState] = OrderedDict()
        self._cache_orders = cache_orders
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []  # heap by offset
        self._waiter_seq = itertools.count()
        self._store = make_store(engine)
        self.on_durable: Callable[[int], None] | None = None  # told the watermark after each commit

    # ------------------------------------------------------------------ Listener

    def on_applied(self, batch: Sequence[AppliedEvents]) -> None:
        """Queue ``batch`` for writing; O(len(batch)), never waits (host callback)."""
        if not batch or (self._loaded and batch[-1].offset <= self._durable):
            return
        self._pending.extend(batch)
        self._wake.set()
        if len(self._pending) >= self._max_commands:
            self._urgent.set()

    @property
    def durable_offset(self) -> int:
        """The committed watermark: every applied command at or below it is in SQL (0 before loading)."""
        return self._durable

    # ------------------------------------------------------------------ lifecycle

    @property
    def backlog(self) -> int:
        """Applied commands queued and not yet committed."""
        return len(self._pending)

    async def load_progress(self) -> int:
        """Read (creating if absent) this writer's watermark; return it."""
        async with self.engine.begin() as conn:
            found = await conn.scalar(select(PROGRESS.c.log_offset).where(PROGRESS.c.name == self.name))
            if found is None:
                with contextlib.suppress(IntegrityError):
                    async with conn.begin_nested():
                        await conn.execute(insert(PROGRESS).values(name=self.name, log_offset=0))
                found = await conn.scalar(select(PROGRESS.c.log_offset).where(PROGRESS.c.name == self.name))
        self._durable = int(found or 0)
        self._open_orders.clear()  # another writer may have changed them meanwhile
        self._loaded = True
        while self._pending and self._pending[0].offset <= self._durable:
            self._pending.popleft()
        self._resolve_waiters()
        return self._durable

    def start(self) -> None:
        """Start the background task; it first loads the watermark unless :meth:`load_progress` did."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name=f"history-writer-{self.name}")

    async def stop(self, timeout: float | None = 30.0) -> None:
        """Write what is queued (for at most ``timeout`` seconds), then stop; pending waits fail."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._wake.set()
            self._urgent.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                log.warning("history writer %s stopped with %d commands unwritten", self.name, self.backlog)
                await cancel_and_wait(task)
        await self._store.close()
        for _, _, future in self._waiters:
            if not future.done():
                future.set_exception(WriterStopped(f"history writer {self.name} stopped"))
        self._waiters.clear()

    async def wait_for(self, offset: int) -> None:
        """Return once everything up to ``offset`` is committed (raise WriterStopped if it stops first)."""
        if offset <= self._durable:
            return
        if self._task is None:
            raise WriterStopped(f"history writer {self.name} is not running")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (offset, next(self._waiter_seq), future))
        self._urgent.set()  # somebody reads: write now rather than linger
        await future

    async def flush(self) -> None:
        """Return once everything queued so far is committed."""
        if self._pending:
            await self.wait_for(self._pending[-1].offset)

    # ------------------------------------------------------------------ the task

    async def _run(self) -> None:
        delay = self._retry_seconds
        while not self._loaded:
            try:
                await self.load_progress()
            except Exception:
                log.exception("history writer %s cannot read its progress; retrying", self.name)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_retry_seconds)
        delay = self._retry_seconds
        while True:
            if not self._pending:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._linger()
            items = [self._pending.popleft() for _ in range(min(self._max_commands, len(self._pending)))]
            try:
                await self._write(items)
                delay = self._retry_seconds
            except Exception as error:
                self.stats.failures += 1
                self._pending.extendleft(reversed(items))
                if isinstance(error, WriterConflict):
                    log.warning("history writer %s: %s; reloading its progress", self.name, error)
                    self._loaded = False
                    with contextlib.suppress(Exception):
                        await self.load_progress()
                else:
                    log.exception("history writer %s failed to write; retrying in %.1fs", self.name, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_retry_seconds)

    async def _linger(self) -> None:
        """Wait up to ``linger_s`` for more commands, unless somebody is waiting to read.

        Each write costs a transaction whatever its size (on SQLite, several round trips to
        the driver's thread and a sync), so under a trickle of orders one write per order
        would cost more than the orders; lingering gathers them, and any reader (``wait_for``)
        or a full queue cuts the wait short.
        """
        if not self._linger_s or self._stopping or self._waiters or len(self._pending) >= self._max_commands:
            return
        self._urgent.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._linger_s):
                await self._urgent.wait()

    async def _write(self, items: Sequence[AppliedEvents]) -> None:
        began = time.perf_counter()
        fresh: list[AppliedEvents] = []
        last = self._durable
        for applied in items:  # drop what is stored, and duplicates within the queue
            if applied.offset > last:
                fresh.append(applied)
                last = applied.offset
        if not fresh:
            return
        existing = await self._existing_orders(_referenced_orders(fresh))
        rows = _Rows(self._markets, existing)
        for applied in fresh:
            rows.add(applied)
        if rows.missing:
            log.warning(
                "history writer %s: offsets %d-%d name %d orders it never stored (e.g. %s): "
                "was the database created after the log's snapshot?",
                self.name, fresh[0].offset, last, len(rows.missing), sorted(rows.missing)[:5],
            )  # fmt: skip
        tables = rows.tables()
        tables.seqs = [(self.name, key, value) for key, value in rows.seqs.items()]
        await self._store.write(self.name, self._durable, last, tables)
        count = tables.count()
        self._remember_open(rows.orders.values())
        self._durable = last
        self._resolve_waiters()
        stats = self.stats
        stats.commands += len(fresh)
        stats.transactions += 1
        stats.rows += count
        stats.seconds += time.perf_counter() - began

    async def _existing_orders(self, order_ids: set[int]) -> dict[int, _OrderState]:
        """The committed state of these orders: copies from the cache of open orders, the rest from SQL."""
        cache = self._open_orders
        states: dict[int, _OrderState] = {}
        for order_id in order_ids & cache.keys():
            c = cache[order_id]
            states[order_id] = _OrderState(
                order_id, c.status, c.executed, c.cum_quote, c.update_time, new=False
            )
        for order_id, status, executed, cum_quote, update_time in await self._store.load_orders(
            order_ids - states.keys()
        ):
            states[order_id] = _OrderState(order_id, status, executed, cum_quote, update_time, new=False)
        return states

    def _remember_open(self, states: Iterable[_OrderState]) -> None:
        """After a commit: keep the still-open orders' states (bounded), forget finished ones."""
        cache = self._open_orders
        for state in states:
            if state.status in _FINISHED:
                cache.pop(state.order_id, None)
            else:
                state.new = False
                cache[state.order_id] = state
                cache.move_to_end(state.order_id)
        while len(cache) > self._cache_orders:
            cache.popitem(last=False)

    def _resolve_waiters(self) -> None:
        if self.on_durable is not None:
            self.on_durable(self._durable)
        waiters = self._waiters
        while waiters and waiters[0][0] <= self._durable:
            future = heapq.heappop(waiters)[2]
            if not future.done():
                future.set_result(None)
