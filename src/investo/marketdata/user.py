"""The private user stream: listen keys and each user's ``executionReport`` / ``outboundAccountPosition``.

Listen keys
-----------
``POST /api/v3/userDataStream`` (signed) asks :class:`ListenKeys` for a key: 32 random
bytes (``secrets.token_urlsafe``), mapped to exactly one user. A user has at most one
live key: asking again returns the same key and extends it (as Binance). A key lives
``ttl_ms`` (60 minutes) after its creation or last keep-alive (``PUT``); ``DELETE``
closes it. An expired or closed key is forgotten; its subscribers get one
``listenKeyExpired`` message and nothing after it.

A WebSocket client reaches a user's events only through a live key (``/ws/<key>``,
``/stream?streams=<key>``, or ``SUBSCRIBE`` with the key): the hub stream *is* the key,
and the listener publishes a user's messages on that user's key only. Nothing else
maps a connection to a user, so another user's events are never visible.

Messages
--------
:class:`UserStreams` is a host listener beside :class:`~investo.marketdata.MarketData`.
For each applied batch (after it was applied, so the accounts engine holds the
balances at the end of the batch) it builds, for users with a live key only:

* ``executionReport`` (Binance's fields) per order event: ``x = NEW`` when accepted,
  ``TRADE`` per fill (``X`` = ``PARTIALLY_FILLED`` / ``FILLED``), ``CANCELED``,
  ``EXPIRED`` (``X = EXPIRED``, or ``EXPIRED_IN_MATCH`` for self-trade prevention)
  and ``REJECTED`` (``r`` = the engine's reject code);
* ``balanceUpdate`` per deposit or withdrawal;
* one ``outboundAccountPosition`` per user touched by the batch, with the balances
  of the assets the batch changed (free/locked read from the accounts engine after
  the batch).

To fill ``q``, ``z``, ``Z``, ``O`` … the listener keeps a small record of every open
order (created at ``OrderAccepted``, dropped when the order finishes), for all users
whether or not they listen, since a key may be created while an order is open.
Orders open before the process started are seeded from the engines at
:meth:`UserStreams.start` with what the engines know (their remaining quantity as
``q``, nothing executed yet). Replayed batches publish nothing but do track orders.

In the distributed mode (``investo gateway``) the two engines are separate shards that
this process follows with replicas, so the listener is fed twice: a matching shard's
events (:meth:`UserStreams.on_order_events`) make the execution reports, and an accounts
shard's steps (:meth:`UserStreams.on_account_steps`) make ``balanceUpdate``, the reports
of orders refused before matching, and the positions, read from that shard once it has
reserved, settled or released (a trade's position follows its ``TRADE`` report).

Costs per batch: O(events); building JSON only for users with a live key.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from investo.api import units
from investo.core.accounts import ReservedOrder
from investo.core.matching import MatchingEngine
from investo.core.messages import (
    Command,
    Deposited,
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
    PlaceOrder,
    Side,
    TimeInForce,
    TradeExecuted,
    Withdrawn,
)
from investo.host import Applied
from investo.marketdata.hub import Hub
from investo.markets import MarketSpec
from investo.tasks import cancel_and_wait

LISTEN_KEY_TTL_MS: Final = 60 * 60 * 1000
ZERO8: Final = "0.00000000"


@dataclass(slots=True)
class _Key:
    user: int
    expires_ms: int


class ListenKeys:
    """Live listen keys: key → (user, expiry); one key per user (module docstring)."""

    def __init__(self, clock_ms: Callable[[], int], ttl_ms: int = LISTEN_KEY_TTL_MS) -> None:
        self.clock_ms = clock_ms
        self.ttl_ms = ttl_ms
        self._keys: dict[str, _Key] = {}
        self._by_user: dict[int, str] = {}
        self.on_expired: Callable[[str], None] | None = None  # told when a key is forgotten

    def create(self, user: int) -> str:
        """The user's live key (extended), or a new one."""
        now = self.clock_ms()
        self.sweep(now)
        key = self._by_user.get(user)
        if key is None:
            key = secrets.token_urlsafe(48)
            self._by_user[user] = key
            self._keys[key] = _Key(user, 0)
        self._keys[key].expires_ms = now + self.ttl_ms
        return key

    def keep_alive(self, user: int, key: str) -> bool:
        """Extend ``key`` if it is live and ``user``'s; whether it was."""
        entry = self._live(key)
        if entry is None or entry.user != user:
            return False
        entry.expires_ms = self.clock_ms() + self.ttl_ms
        return True

    def close(self, user: int, key: str) -> bool:
        """Forget ``key`` if it is live and ``user``'s; whether it was."""
        entry = self._live(key)
        if entry is None or entry.user != user:
            return False
        self._forget(key)
        return True

    def user_of(self, key: str) -> int | None:
        entry = self._live(key)
        return None if entry is None else entry.user

    def key_of(self, user: int) -> str | None:
        key = self._by_user.get(user)
        return key if key is not None and self._live(key) is not None else None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._live(key) is not None

    def __len__(self) -> int:
        return len(self._keys)

    def sweep(self, now: int | None = None) -> list[str]:
        """Forget every expired key; the keys forgotten."""
        now = self.clock_ms() if now is None else now
        gone = [k for k, e in self._keys.items() if e.expires_ms <= now]
        for key in gone:
            self._forget(key)
        return gone

    def _live(self, key: str) -> _Key | None:
        entry = self._keys.get(key)
        if entry is None:
            return None
        if entry.expires_ms <= self.clock_ms():
            self._forget(key)
            return None
        return entry

    def _forget(self, key: str) -> None:
        entry = self._keys.pop(key, None)
        if entry is None:
            return
        if self._by_user.get(entry.user) == key:
            del self._by_user[entry.user]
        if self.on_expired is not None:
            self.on_expired(key)


class AccountsReader(Protocol):
    """What the listener reads of the accounts engine(s): balances and reservations."""

    def balance(self, user: int, asset: str) -> tuple[int, int]: ...

    def open_order(self, order_id: int) -> ReservedOrder | None: ...


class EnginesView(Protocol):
    """The engines the listener reads: an :class:`~investo.core.exchange.Exchange`, or a cluster's
    replicas (:class:`~investo.cluster.view.ClusterView`)."""

    @property
    def accounts(self) -> AccountsReader: ...

    def matching(self, symbol: str) -> MatchingEngine: ...


@dataclass(frozen=True, slots=True)
class AccountsStep:
    """One input entry of an accounts shard, as :meth:`UserStreams.on_account_steps` reads it."""

    command: Command | None  # a gateway's command (PlaceOrder, Deposit, Withdraw); None otherwise
    events: Sequence[Event]  # what the shard output for it
    settled: Sequence[Event] = ()  # the matching events it settled (trades, fills, releases)


@dataclass(slots=True)
class _Order:
    """What an execution report needs about one open order."""

    spec: MarketSpec
    order_id: int
    client_order_id: str
    side: Side
    type: OrderType
    tif: TimeInForce
    price: int
    qty: int
    quote_qty: int
    stp: str
    created: int
    executed: int = 0
    cum_quote: int = 0
    working: bool = False


class StreamSet(Collection[str]):
    """Valid stream names: the market streams plus every live listen key (for the gateway)."""

    def __init__(self, streams: Callable[[], frozenset[str]], keys: ListenKeys) -> None:
        self._streams = streams
        self._keys = keys

    def __contains__(self, name: object) -> bool:
        return name in self._streams() or name in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._streams())

    def __len__(self) -> int:
        return len(self._streams())


class UserStreams:
    """The user-stream host listener; see the module docstring."""

    def __init__(
        self, markets: Mapping[str, MarketSpec], clock_ms: Callable[[], int], hub: Hub, keys: ListenKeys
    ) -> None:
        self.markets = dict(markets)
        self.clock_ms = clock_ms
        self.hub = hub
        self.keys = keys
        self.decimals: dict[str, int] = {}
        for spec in self.markets.values():
            self.decimals[spec.base] = spec.base_decimals
            self.decimals[spec.quote] = spec.quote_decimals
        self._orders: dict[int, _Order] = {}
        self._exchange: Callable[[], EnginesView] | None = None
        self._task: asyncio.Task[None] | None = None
        self.sweep_seconds = 1.0
        keys.on_expired = self._expired

    @property
    def durable_offset(self) -> int | None:
        return None

    def attach(self, exchange: Callable[[], EnginesView]) -> None:
        self._exchange = exchange

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_seconds)
            self.keys.sweep()

    def start(self) -> None:
        """Seed the open orders from the engines (after recovery); expire keys every second."""
        if self._task is None:
            self._task = asyncio.create_task(self._sweeper(), name="listen-key-sweeper")
        self.resync()

    def set_markets(self, markets: Mapping[str, MarketSpec]) -> None:
        """Trade these markets from now on (a cluster's shard map changed)."""
        self.markets = dict(markets)
        for spec in self.markets.values():
            self.decimals[spec.base] = spec.base_decimals
            self.decimals[spec.quote] = spec.quote_decimals

    def resync(self) -> None:
        """Track exactly the orders open in the engines (some events may have been missed).

        Orders already tracked keep what they know; the others get what the engines
        know (their remaining quantity as ``q``, nothing executed yet).
        """
        assert self._exchange is not None
        exchange = self._exchange()
        open_ids: set[int] = set()
        for symbol, spec in self.markets.items():
            for o in exchange.matching(symbol).open_orders():
                open_ids.add(o.order_id)
                if o.order_id not in self._orders:
                    reserved = exchange.accounts.open_order(o.order_id)
                    kind = reserved.type if reserved is not None else OrderType.LIMIT
                    self._orders[o.order_id] = _Order(
                        spec, o.order_id, o.client_order_id, o.side, kind, TimeInForce.GTC, o.price, o.qty,
                        0, "EXPIRE_MAKER", 0, working=True,
                    )  # fmt: skip
        for order_id in [o for o in self._orders if o not in open_ids]:
            del self._orders[order_id]

    def _expired(self, key: str) -> None:
        if self.hub.wants(key):
            self.hub.publish(key, {"e": "listenKeyExpired", "E": self.clock_ms(), "listenKey": key})

    # ------------------------------------------------------------------ the listener

    def on_applied(self, batch: Sequence[Applied]) -> None:
        """The embedded mode: both engines' events of each command, balances after the batch."""
        publish = not batch[-1].replayed and len(self.keys) > 0
        now = self.clock_ms()
        out: dict[int, list[dict[str, Any]]] = {}
        touched: dict[int, set[str]] = {}
        last_ts: dict[int, int] = {}
        for applied in batch:
            self._events(applied.command, applied.events, now, out if publish else None, touched, last_ts)
        if publish and self._exchange is not None:
            self._publish(out, touched, last_ts, self._exchange().accounts.balance, now)

    def on_order_events(self, steps: Sequence[Sequence[Event]], *, replayed: bool = False) -> None:
        """The distributed mode: a matching shard's events (a list per input entry).

        They make the execution reports; balances are not read here, since the accounts
        shards settle the trades later: :meth:`on_account_steps` sends the positions.
        """
        publish = not replayed and len(self.keys) > 0
        now = self.clock_ms()
        out: dict[int, list[dict[str, Any]]] = {}
        for events in steps:
            self._events(None, events, now, out if publish else None, None, {})
        if publish:
            self._publish(out, {}, {}, None, now)

    def on_account_steps(
        self,
        steps: Sequence[AccountsStep],
        balance: Callable[[int, str], tuple[int, int]],
        owns: Callable[[int], bool],
        *,
        replayed: bool = False,
    ) -> None:
        """The distributed mode: an accounts shard's steps (its users: ``owns``; their ``balance``).

        Sends ``balanceUpdate`` for deposits and withdrawals, the ``REJECTED`` report of an
        order the shard refused, and one ``outboundAccountPosition`` per user whose
        balances the steps changed (reservations, settlements, releases), read after them.
        """
        if replayed or not len(self.keys):
            return
        now = self.clock_ms()
        out: dict[int, list[dict[str, Any]]] = {}
        touched: dict[int, set[str]] = {}
        last_ts: dict[int, int] = {}
        for step in steps:
            self._account_step(step, owns, now, out, touched, last_ts)
        self._publish(out, touched, last_ts, balance, now)

    def _publish(
        self,
        out: dict[int, list[dict[str, Any]]],
        touched: dict[int, set[str]],
        last_ts: dict[int, int],
        balance: Callable[[int, str], tuple[int, int]] | None,
        now: int,
    ) -> None:
        """Each user's messages on its listen key, then its position in the assets touched."""
        for user in out.keys() | touched.keys():
            key = self.keys.key_of(user)
            if key is None or not self.hub.wants(key):
                continue
            messages = out.get(user, [])
            assets = touched.get(user)
            if assets and balance is not None:
                balances = []
                for asset in sorted(assets):
                    free, locked = balance(user, asset)
                    d = self.decimals.get(asset, 0)
                    balances.append(
                        {"a": asset, "f": units.format_amount(free, d), "l": units.format_amount(locked, d)}
                    )
                messages.append({"e": "outboundAccountPosition", "E": now, "u": last_ts[user], "B": balances})
            for message in messages:
                self.hub.publish(key, message)

    def _account_step(
        self,
        step: AccountsStep,
        owns: Callable[[int], bool],
        now: int,
        out: dict[int, list[dict[str, Any]]],
        touched: dict[int, set[str]],
        last_ts: dict[int, int],
    ) -> None:
        def touch(user: int, ts: int, *assets: str) -> None:
            if owns(user):
                touched.setdefault(user, set()).update(assets)
                last_ts[user] = ts

        for ev in step.events:
            kind = type(ev)
            if kind is OrderAccepted:  # funds reserved (the NEW report comes from matching)
                assert isinstance(ev, OrderAccepted)
                spec = self.markets[ev.market]
                touch(ev.user, ev.ts, spec.quote if ev.side == Side.BUY else spec.base)
            elif kind is OrderRejected or kind is Deposited or kind is Withdrawn:
                self._events(step.command, [ev], now, out, touched, last_ts)
        for ev in step.settled:
            market = getattr(ev, "market", None)
            traded = self.markets.get(market) if market is not None else None
            if traded is None:
                continue
            if type(ev) is TradeExecuted:
                assert isinstance(ev, TradeExecuted)
                touch(ev.maker_user, ev.ts, traded.base, traded.quote)
                touch(ev.taker_user, ev.ts, traded.base, traded.quote)
            elif isinstance(ev, OrderFilled | OrderCanceled | OrderExpired | OrderRejected):
                touch(ev.user, ev.ts, traded.base, traded.quote)  # a release of what was reserved

    def _events(
        self,
        command: Command | None,
        events: Sequence[Event],
        now: int,
        out: dict[int, list[dict[str, Any]]] | None,
        touched: dict[int, set[str]] | None,
        last_ts: dict[int, int],
    ) -> None:
        """Track orders and build the messages of one command's events.

        ``command`` is the user's command when known (it describes an order refused
        before it got an id); ``touched`` is None when balances are not read after these
        events (a matching shard's, in the distributed mode).
        """
        orders = self._orders
        rests = {e.order_id for e in events if type(e) is OrderRested}
        last_trade: TradeExecuted | None = None

        def emit(user: int, message: dict[str, Any]) -> None:
            if out is not None:
                out.setdefault(user, []).append(message)

        def touch(user: int, ts: int, *assets: str) -> None:
            if touched is not None:
                touched.setdefault(user, set()).update(assets)
                last_ts[user] = ts

        for ev in events:
            kind = type(ev)
            if kind is OrderAccepted:
                assert isinstance(ev, OrderAccepted)
                spec = self.markets[ev.market]
                by_quote = ev.type == OrderType.MARKET and ev.side == Side.BUY and ev.qty == 0
                order = _Order(
                    spec, ev.order_id, ev.client_order_id, ev.side, ev.type, ev.tif, ev.price, ev.qty,
                    ev.quote_limit if by_quote else 0, ev.stp.name, ev.ts, working=ev.order_id in rests,
                )  # fmt: skip
                orders[ev.order_id] = order
                touch(ev.user, ev.ts, spec.quote if ev.side == Side.BUY else spec.base)
                if out is not None:
                    emit(ev.user, _report(order, "NEW", "NEW", now, ev.ts))
            elif kind is TradeExecuted:
                assert isinstance(ev, TradeExecuted)
                last_trade = ev
                spec = self.markets[ev.market]
                quote = ev.price * ev.qty * spec.core.notional_unit
                for oid in (ev.maker_order_id, ev.taker_order_id):
                    o = orders.get(oid)
                    if o is not None:
                        o.executed += ev.qty
                        o.cum_quote += quote
                touch(ev.maker_user, ev.ts, spec.base, spec.quote)
                touch(ev.taker_user, ev.ts, spec.base, spec.quote)
            elif kind is OrderFilled or kind is OrderPartiallyFilled:
                assert isinstance(ev, OrderFilled | OrderPartiallyFilled)
                o = orders.get(ev.order_id)
                filled = kind is OrderFilled
                if filled:
                    orders.pop(ev.order_id, None)
                if o is None or last_trade is None or out is None:
                    continue
                maker = last_trade.maker_order_id == ev.order_id
                fee = last_trade.maker_fee if maker else last_trade.taker_fee
                status = "FILLED" if filled else "PARTIALLY_FILLED"
                if filled:
                    o.working = False
                report = _report(o, "TRADE", status, now, ev.ts)
                quote = last_trade.price * last_trade.qty * o.spec.core.notional_unit
                report.update(
                    l=o.spec.format_qty(last_trade.qty),
                    L=o.spec.format_price(last_trade.price),
                    n=units.format_amount(fee, o.spec.quote_decimals),
                    N=o.spec.quote,
                    t=last_trade.trade_id,
                    m=maker,
                    Y=units.format_amount(quote, o.spec.quote_decimals),
                )
                emit(ev.user, report)
            elif kind is OrderCanceled or kind is OrderExpired:
                assert isinstance(ev, OrderCanceled | OrderExpired)
                o = orders.pop(ev.order_id, None)
                spec = self.markets[ev.market]
                touch(ev.user, ev.ts, spec.quote if ev.side == Side.BUY else spec.base)
                if o is None or out is None:
                    continue
                o.working = False
                if isinstance(ev, OrderCanceled):
                    report = _report(o, "CANCELED", "CANCELED", now, ev.ts)
                    report["C"] = o.client_order_id
                else:
                    stp = ev.reason == ExpireReason.SELF_TRADE
                    report = _report(o, "EXPIRED", "EXPIRED_IN_MATCH" if stp else "EXPIRED", now, ev.ts)
                    report["r"] = ev.reason.name
                emit(ev.user, report)
            elif kind is OrderRested:
                assert isinstance(ev, OrderRested)
                o = orders.get(ev.order_id)
                if o is not None:
                    o.working = True
            elif kind is OrderRejected:
                assert isinstance(ev, OrderRejected)
                o = orders.pop(ev.order_id, None) if ev.order_id else None
                if o is None and isinstance(command, PlaceOrder) and command.market in self.markets:
                    c = command
                    o = _Order(
                        self.markets[c.market], ev.order_id or -1, c.client_order_id, c.side, c.type, c.tif,
                        c.price, c.qty, c.quote_qty, c.stp.name, c.ts,
                    )  # fmt: skip
                if o is not None and out is not None:
                    o.working = False
                    report = _report(o, "REJECTED", "REJECTED", now, ev.ts)
                    report["r"] = ev.code.name
                    emit(ev.user, report)
            elif kind is Deposited or kind is Withdrawn:
                assert isinstance(ev, Deposited | Withdrawn)
                touch(ev.user, ev.ts, ev.asset)
                if out is not None:
                    amount = units.format_amount(ev.amount, self.decimals.get(ev.asset, 0))
                    emit(
                        ev.user,
                        {
                            "e": "balanceUpdate",
                            "E": now,
                            "a": ev.asset,
                            "d": amount if kind is Deposited else "-" + amount,
                            "T": ev.ts,
                        },
                    )


def _report(o: _Order, exec_type: str, status: str, now: int, ts: int) -> dict[str, Any]:
    spec = o.spec
    qd = spec.quote_decimals
    return {
        "e": "executionReport",
        "E": now,
        "s": spec.symbol,
        "c": o.client_order_id,
        "S": o.side.name,
        "o": o.type.name,
        "f": o.tif.name if o.type == OrderType.LIMIT else "GTC",
        "q": spec.format_qty(o.qty) if o.qty else ZERO8,
        "p": spec.format_price(o.price) if o.price else ZERO8,
        "P": ZERO8,
        "F": ZERO8,
        "g": -1,
        "C": "",
        "x": exec_type,
        "X": status,
        "r": "NONE",
        "i": o.order_id,
        "l": ZERO8,
        "z": spec.format_qty(o.executed) if o.executed else ZERO8,
        "L": ZERO8,
        "n": "0",
        "N": None,
        "T": ts,
        "t": -1,
        "I": 0,
        "w": o.working and status in ("NEW", "PARTIALLY_FILLED"),
        "m": False,
        "M": False,
        "O": o.created or ts,
        "Z": units.format_amount(o.cum_quote, qd),
        "Y": units.format_amount(0, qd),
        "Q": units.format_amount(o.quote_qty, qd),
        "W": o.created or ts,
        "V": o.stp,
    }
