"""One shard's deterministic step: an input envelope in; output events, forwards and a reply out.

This is the same routing :class:`~investo.core.exchange.Exchange` does by direct calls
in the embedded mode, cut at the logs:

* accounts shard: ``Deposit`` / ``Withdraw`` answer at once; ``PlaceOrder`` either is
  refused (answered here) or becomes an ``OrderAccepted`` forwarded to the market's
  matching shard, which answers; ``Settle`` settles fills and releases finished
  orders, answering nobody. An accepted order's ``OrderAccepted`` is not published to
  the accounts shard's output log (``Step.published``): it is the forwarded record, and
  the first event of the matching shard's output for it, which carries the order's
  whole life; so the accounts output holds what only the accounts shard records
  (deposits, withdrawals, refusals). Replicas still see it in the step's ``output``;
* matching shard: ``OrderAccepted``, ``CancelOrder``, ``CancelAll`` run on the
  market's book; the events are the answer, and those that move money are forwarded,
  as one ``Settle`` per accounts shard involved (both sides of a trade may live on
  different shards; each settles its own side).

Invariants
----------
* ``step`` is a pure function of the shard's state and the envelope: replaying the
  same input from the same snapshot gives the same outputs, forwards, replies and
  state hash.
* A command that reaches a shard it does not belong to (the shard map changed while
  it was in flight) is answered with a rejection and changes nothing; an order
  accepted for a market this matching shard does not trade is rejected back to its
  accounts shard, which releases the reservation.
* Forwards are listed in shard order, so a replay forwards byte-identical entries.

Costs: the engines' cost per record, plus O(events) to route them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from investo.cluster.records import Envelope, Settle
from investo.cluster.topology import Role, Topology
from investo.core.accounts import AccountsEngine
from investo.core.exchange import unknown_market_cancel
from investo.core.matching import MatchingEngine
from investo.core.messages import (
    CancelAll,
    CancelOrder,
    Deposit,
    Event,
    MatchingEvent,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PlaceOrder,
    RejectCode,
    TradeExecuted,
    Withdraw,
)

Forward = tuple[Role, int, Envelope]


@dataclass(slots=True)
class Step:
    """What one input entry caused.

    The answer, if somebody waits for one (``reply_to``), is ``Reply(corr, output)``:
    the output events themselves, so an engine encodes them once for both.
    """

    output: Sequence[Event] = ()  # the events it caused (empty: none)
    forwards: Sequence[Forward] = ()
    reply_to: str = ""  # the gateway's reply channel ("" = nobody waits)
    corr: int = 0  # the request's number on that channel
    published: bool = True  # whether ``output`` goes to the shard's output log (see AccountsShard)


def _answer(env: Envelope, events: list[Event]) -> Step:
    return Step(events, (), env.reply, env.corr)


class AccountsShard:
    """Accounts shard ``shard`` of ``topology.accounts_shards``."""

    role: Role = "accounts"

    def __init__(self, topology: Topology, shard: int, engine: AccountsEngine | None = None) -> None:
        self.topology = topology
        self.shard = shard
        markets = {symbol: spec.core for symbol, spec in topology.markets.items()}
        self.engine = engine or AccountsEngine(markets, shard, topology.accounts_shards)

    def step(self, env: Envelope) -> Step:
        record = env.record
        kind = type(record)
        if kind is Settle:
            assert isinstance(record, Settle)
            self.engine.settle(record.events)
            return Step()
        if kind is PlaceOrder:
            assert isinstance(record, PlaceOrder)
            if record.user % self.topology.accounts_shards != self.shard:
                return _answer(env, [_misrouted_order(record)])
            event = self.engine.place(record)
            market_shard = self.topology.matching_shard(record.market)
            if type(event) is not OrderAccepted or market_shard is None:
                return _answer(env, [event])
            forward = Envelope(event, env.reply, env.corr)
            return Step([event], [("matching", market_shard, forward)], published=False)
        if kind is Deposit or kind is Withdraw:
            assert isinstance(record, Deposit | Withdraw)
            if record.user % self.topology.accounts_shards != self.shard:
                return Step()  # misrouted: a gateway bug; the caller times out ("status unknown")
            return _answer(env, [*self.engine.apply(record)])
        return Step()  # not an accounts record: ignored, deterministically

    def snapshot(self) -> bytes:
        return self.engine.snapshot()

    def restore(self, data: bytes) -> None:
        markets = {symbol: spec.core for symbol, spec in self.topology.markets.items()}
        self.engine = AccountsEngine.restore(markets, data)

    def state_hash(self) -> str:
        return self.engine.state_hash()


class MatchingShard:
    """Matching shard ``shard``: one matching engine per market the shard map gives it."""

    role: Role = "matching"

    def __init__(self, topology: Topology, shard: int) -> None:
        self.topology = topology
        self.shard = shard
        self.engines = {
            symbol: MatchingEngine(topology.markets[symbol].core) for symbol in topology.markets_of(shard)
        }

    def step(self, env: Envelope) -> Step:
        record = env.record
        kind = type(record)
        if kind is OrderAccepted:
            assert isinstance(record, OrderAccepted)
            engine = self.engines.get(record.market)
            events: list[Event]
            if engine is None:
                events = [record, _not_here(record)]
            else:
                events = [record, *engine.apply(record)]
        elif kind is CancelOrder or kind is CancelAll:
            assert isinstance(record, CancelOrder | CancelAll)
            engine = self.engines.get(record.market)
            events = [unknown_market_cancel(record)] if engine is None else [*engine.apply(record)]
        else:
            return Step()  # not a matching record: ignored, deterministically
        step = _answer(env, events)
        step.forwards = settlements(events, self.topology.accounts_shards)
        return step

    def snapshot(self) -> bytes:
        state: dict[str, Any] = {"markets": [(s, e.snapshot()) for s, e in sorted(self.engines.items())]}
        return msgspec.msgpack.encode(state)

    def restore(self, data: bytes) -> None:
        books: dict[str, bytes] = dict(msgspec.msgpack.decode(data)["markets"])
        for symbol in self.engines:
            if symbol in books:
                self.engines[symbol] = MatchingEngine.restore(
                    self.topology.markets[symbol].core, books[symbol]
                )
        moved = sorted(set(books) - set(self.engines))
        if moved:
            raise ValueError(f"the snapshot holds books of markets this shard no longer trades: {moved}")

    def state_hash(self) -> str:
        digest = hashlib.sha256()
        for symbol, engine in sorted(self.engines.items()):
            digest.update(symbol.encode() + b"\0" + engine.state_hash().encode() + b"\0")
        return digest.hexdigest()


Shard = AccountsShard | MatchingShard


def settlements(events: Sequence[Event], accounts_shards: int) -> list[Forward]:
    """The events that move money, as one ``Settle`` per accounts shard involved, in shard order."""
    by_shard: dict[int, list[MatchingEvent]] = {}
    for event in events:
        kind = type(event)
        if kind is TradeExecuted:
            assert isinstance(event, TradeExecuted)
            for shard in {event.maker_user % accounts_shards, event.taker_user % accounts_shards}:
                by_shard.setdefault(shard, []).append(event)
        elif kind is OrderFilled or kind is OrderCanceled or kind is OrderExpired or kind is OrderRejected:
            assert isinstance(event, OrderFilled | OrderCanceled | OrderExpired | OrderRejected)
            by_shard.setdefault(event.user % accounts_shards, []).append(event)
    return [("accounts", shard, Envelope(Settle(by_shard[shard]))) for shard in sorted(by_shard)]


def _misrouted_order(record: PlaceOrder) -> OrderRejected:
    return OrderRejected(
        0, record.ts, record.market, 0, record.user, record.client_order_id, RejectCode.UNKNOWN_MARKET
    )


def _not_here(record: OrderAccepted) -> OrderRejected:
    """An accepted order for a market this shard does not trade: refused (seq 0, no engine)."""
    return OrderRejected(
        0,
        record.ts,
        record.market,
        record.order_id,
        record.user,
        record.client_order_id,
        RejectCode.UNKNOWN_MARKET,
    )
