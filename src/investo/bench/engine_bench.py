"""`investo bench engine`: one matching engine fed a flow, against the naive book.

Orders enter the engine as already-accepted orders (``OrderAccepted``) of
distinct users (user id = order id), so no accounts work is done; cancels name
the order and its owner. Records are built, and cut into batches of ``BATCH``
records, before the clock starts: only the feeding is timed. The engine gets
each batch through ``MatchingEngine.apply_batch`` (Investo's hosts still step
one record at a time: the accounts engine settles each record's events before
the next), and its events are consumed as a real consumer would: every
event is looked at, and every trade is kept as the ``(taker, maker, price,
qty)`` tuple the naive book keeps for its own trades. The naive book of
:mod:`investo.bench.naive_book` runs the same flow in the same process, so the
ratio between the two is the figure to trust on a noisy machine.

Both runs start with every object alive frozen out of the garbage collector's passes
(``gc.freeze``): the flow's lines and the engine's records are tracked objects, and the
full collections a book's own allocations trigger would otherwise walk a million of
them, which costs the naive book (it allocates a deque entry per order) ~5 % of its
time and the engine nothing. Each book pays for collecting what it allocates.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from investo.bench.flow import FlowLine
from investo.bench.naive_book import NaiveBook
from investo.core.exchange import Exchange
from investo.core.markets import Market
from investo.core.matching import MatchingEngine
from investo.core.messages import (
    CancelOrder,
    Command,
    Deposit,
    Event,
    MatchingRecord,
    OrderAccepted,
    OrderType,
    PlaceOrder,
    Side,
    StpMode,
    TimeInForce,
    TradeExecuted,
)
from investo.host import Applied
from investo.marketdata.service import MarketData
from investo.markets import MarketSpec

SYMBOL = "BENCH"
BENCH_MARKET = Market(SYMBOL, "BASE", "QUOTE", notional_unit=1, lot_units=1)
CHUNK = 50_000  # commands between two progress updates
BATCH = 512  # records per apply_batch call, commands per applied batch: investo.host's default max_batch

Progress = Callable[[int], None]  # called with the number of commands just fed


@dataclass
class Run:
    seconds: float
    trades: list[tuple[int, int, int, int]]  # (taker_id, maker_id, price, qty) in execution order

    def rate(self, commands: int) -> float:
        return commands / self.seconds if self.seconds else 0.0


def engine_records(flow: Sequence[FlowLine]) -> list[MatchingRecord]:
    """The flow as matching-engine input records."""
    records: list[MatchingRecord] = []
    for line in flow:
        side = Side.BUY if line.buy else Side.SELL
        if line.op == "C":
            records.append(CancelOrder(0, line.id, SYMBOL, order_id=line.id))
        elif line.op == "L":
            records.append(
                OrderAccepted(
                    0, SYMBOL, line.id, line.id, side, OrderType.LIMIT, TimeInForce.GTC,
                    line.price, line.qty, 0, "", StpMode.NONE,
                )
            )  # fmt: skip
        else:
            records.append(
                OrderAccepted(
                    0, SYMBOL, line.id, line.id, side, OrderType.MARKET, TimeInForce.IOC,
                    0, line.qty, 0, "", StpMode.NONE,
                )
            )  # fmt: skip
    return records


@contextlib.contextmanager
def _inputs_frozen() -> Iterator[None]:
    """Keep every object alive now (the inputs) out of the collector's passes while a run is timed."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _chunks(n: int, size: int = CHUNK) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(start + size, n)


def _feed(
    apply: Callable[[Any], Sequence[object]],
    units: Sequence[Any],
    progress: Progress | None,
    per_unit: int = 1,
) -> Run:
    """Apply every unit (a record, or a batch of ``per_unit`` records), keeping each trade as the
    naive book keeps its own; time only this.

    Every event is looked at, and each ``TradeExecuted`` becomes the
    ``(taker, maker, price, qty)`` tuple the naive book appends for its trades,
    so both books keep the same trade records while the clock runs.
    """
    trades: list[tuple[int, int, int, int]] = []
    keep = trades.append
    seconds = 0.0
    with _inputs_frozen():
        for start, end in _chunks(len(units), max(CHUNK // per_unit, 1)):
            chunk = units[start:end]
            began = time.perf_counter()
            for unit in chunk:
                for event in apply(unit):
                    if type(event) is TradeExecuted:
                        keep((event.taker_order_id, event.maker_order_id, event.price, event.qty))
            seconds += time.perf_counter() - began
            if progress:
                progress(sum(len(unit) for unit in chunk) if per_unit > 1 else end - start)
    return Run(seconds, trades)


def run_engine(records: Sequence[MatchingRecord], progress: Progress | None = None) -> Run:
    """Feed every record to a fresh engine, ``BATCH`` records per call; time only the feeding."""
    batches = [records[i : i + BATCH] for i in range(0, len(records), BATCH)]
    return _feed(MatchingEngine(BENCH_MARKET).apply_batch, batches, progress, per_unit=BATCH)


def run_naive(flow: Sequence[FlowLine], progress: Progress | None = None) -> Run:
    """Feed the flow to the naive book; time only the feeding."""
    book = NaiveBook()
    limit, market, cancel = book.limit, book.market, book.cancel
    seconds = 0.0
    with _inputs_frozen():
        for start, end in _chunks(len(flow)):
            chunk = flow[start:end]
            began = time.perf_counter()
            for op, order_id, buy, price, qty in chunk:
                if op == "L":
                    limit(order_id, buy, price, qty)
                elif op == "M":
                    market(order_id, buy, qty)
                else:
                    cancel(order_id)
            seconds += time.perf_counter() - began
            if progress:
                progress(end - start)
    return Run(seconds, book.trades)


def write_trades(path: Path, trades: Sequence[tuple[int, int, int, int]]) -> None:
    with path.open("w") as out:
        out.writelines(f"{taker},{maker},{price},{qty}\n" for taker, maker, price, qty in trades)


# ---------------------------------------------------------------------- the whole exchange

USERS = 1_000
FUNDS = 10**15  # of each asset per user: enough for every order of the flow
COMMANDS_PER_MS = 400  # the bench's clock: commands are stamped as if 400,000 arrive per second
START_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC, the first command's ts
BENCH_MARKET_FEES = Market(
    SYMBOL, "BASE", "QUOTE", notional_unit=1, lot_units=1, maker_fee_bps=10, taker_fee_bps=20
)


def bench_spec() -> MarketSpec:
    """The bench market as the market-data service sees it (one tick, one lot: whole units)."""
    one = Decimal(1)
    return MarketSpec(
        SYMBOL, "BASE", "QUOTE", 0, 0, one, one, one, Decimal(10**12), one, Decimal(10**9), Decimal(0),
        10, 20, None, BENCH_MARKET_FEES,
    )  # fmt: skip


def exchange_setup() -> tuple[Exchange, list[Deposit]]:
    deposits = [Deposit(0, user, asset, FUNDS) for user in range(1, USERS + 1) for asset in ("BASE", "QUOTE")]
    return Exchange([BENCH_MARKET_FEES]), deposits


def exchange_commands(flow: Sequence[FlowLine]) -> list[Command]:
    """The flow as gateway commands of 1,000 users (user = id mod 1000 + 1), stamped by the bench clock.

    Command ``i`` (from 0) has ``ts = START_MS + i // COMMANDS_PER_MS``, as the host
    would stamp it if the commands arrived at 400,000/s, so candles open and close
    as they would at that rate. The accounts engine numbers accepted orders 1, 2,
    3, …; every order of the flow is accepted (the users are funded for all of
    them), so a cancel can name the order id its order will get, as a client that
    kept the id would.
    """
    commands: list[Command] = []
    order_ids: dict[int, int] = {}
    for i, line in enumerate(flow):
        ts = START_MS + i // COMMANDS_PER_MS
        user = line.id % USERS + 1
        side = Side.BUY if line.buy else Side.SELL
        if line.op == "C":
            commands.append(CancelOrder(ts, user, SYMBOL, order_id=order_ids.get(line.id, 0)))
            continue
        order_ids[line.id] = len(order_ids) + 1
        if line.op == "L":
            commands.append(
                PlaceOrder(ts, user, SYMBOL, side, OrderType.LIMIT, TimeInForce.GTC, line.price, line.qty,
                           stp=StpMode.NONE)
            )  # fmt: skip
        else:
            commands.append(
                PlaceOrder(ts, user, SYMBOL, side, OrderType.MARKET, TimeInForce.IOC, 0, line.qty,
                           stp=StpMode.NONE)
            )  # fmt: skip
    return commands


def run_exchange(
    commands: Sequence[Command], progress: Progress | None = None, market_data: bool = True
) -> Run:
    """Feed every command to a funded in-process Exchange; time only the feeding.

    With ``market_data`` the commands go in batches of ``BATCH``, each command's
    events wrapped in an :class:`~investo.host.Applied` as the host does, and each
    batch is handed to the market-data service's listener
    (:meth:`~investo.marketdata.service.MarketData.on_applied`) with no client
    subscribed: depth diffs, best bid/ask, candles of every interval and the
    rolling day are built as in ``investo up``; no stream message is formatted or
    sent. Its once-a-second tick runs whenever the bench clock enters a new second.
    """
    exchange, deposits = exchange_setup()
    for deposit in deposits:
        exchange.apply(deposit)
    if not market_data:
        return _feed(exchange.apply, commands, progress)
    clock = [START_MS]
    service = MarketData({SYMBOL: bench_spec()}, lambda: clock[0])
    service.attach(lambda: exchange)
    apply = exchange.apply
    next_tick = [START_MS + 1_000]

    def apply_batch(offsets: range) -> list[Event]:
        """Apply the commands at ``offsets`` as the host does, then feed market data; their events."""
        batch = [Applied(offset + 1, commands[offset], apply(commands[offset])) for offset in offsets]
        clock[0] = now = commands[offsets[-1]].ts
        service.on_applied(batch)
        if now >= next_tick[0]:
            service.tick(now)
            next_tick[0] = now - now % 1_000 + 1_000
        return [event for applied in batch for event in applied.events]

    batches = [range(first, min(first + BATCH, len(commands))) for first in range(0, len(commands), BATCH)]
    return _feed(apply_batch, batches, progress, per_unit=BATCH)
