"""The whole exchange in one process: one accounts shard and a matching engine per market.

This is the embedded mode's state machine over one command log. It routes
records exactly as the logs do in the distributed mode, only by direct calls:

* ``Deposit``, ``Withdraw``, ``PlaceOrder`` go to the accounts engine;
* the ``OrderAccepted`` it emits goes to that market's matching engine;
* ``CancelOrder`` and ``CancelAll`` go straight to the market's matching engine;
* every matching event goes back to the accounts engine, which settles fills and
  releases the funds of finished orders.

Ordering rules
--------------
* ``apply`` returns every event a command caused in causal order: the accounts
  engine's event first (``OrderAccepted`` or a rejection), then the matching
  engine's events in the order it emitted them. Each matching event is settled
  in that order before ``apply`` returns, so between commands balances, books
  and reservations agree.
* A cancel naming a market that does not exist reaches no engine: the façade
  answers ``CancelRejected(code=UNKNOWN_MARKET)`` with ``seq`` 0 (numbered by no
  engine, as the gateway's own refusal would be in the distributed mode).

Invariants (between commands; :meth:`Exchange.check_invariants` asserts them)
-------------------------------------------------------------------------------
* Those of each engine (see :mod:`investo.core.accounts`, :mod:`investo.core.matching`).
* The open orders the accounts engine holds reservations for are exactly the
  orders resting on the books, with the same owner, side, price and lots left.
* No book is crossed.

Cost per operation
------------------
* a command: the cost of the engines it reaches, plus O(1) per event routed:
  ``apply`` dispatches on the command's exact type, and the accounts engine's
  ``settle`` takes one matching record's events at once, doing work only for
  trades and finished orders
* state hash, snapshot, restore: the sum of the engines' (O(n log n))
* check_invariants: O(accounts + open orders)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from investo.core.accounts import AccountsEngine
from investo.core.markets import Market
from investo.core.matching import MatchingEngine
from investo.core.messages import (
    CancelAll,
    CancelOrder,
    CancelRejected,
    Command,
    Deposit,
    Event,
    OrderAccepted,
    PlaceOrder,
    RejectCode,
    Withdraw,
)


def _market_map(markets: Sequence[Market] | Mapping[str, Market]) -> dict[str, Market]:
    listed = list(markets.values()) if isinstance(markets, Mapping) else list(markets)
    by_symbol = {market.symbol: market for market in listed}
    if len(by_symbol) != len(listed):
        raise ValueError("two markets share a symbol")
    if isinstance(markets, Mapping) and set(markets) != set(by_symbol):
        raise ValueError("markets must be listed under their own symbols")
    return dict(sorted(by_symbol.items()))


def unknown_market_cancel(command: CancelOrder | CancelAll) -> CancelRejected:
    """The façade's own answer to a cancel naming no market: numbered by no engine (seq 0)."""
    if isinstance(command, CancelOrder):
        order_id, client_order_id = command.order_id, command.client_order_id
    else:
        order_id, client_order_id = 0, ""
    return CancelRejected(
        0, command.ts, command.market, command.user, order_id, client_order_id, RejectCode.UNKNOWN_MARKET
    )


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


class Exchange:
    """One accounts engine (shard 0 of 1) and one matching engine per market."""

    def __init__(self, markets: Sequence[Market] | Mapping[str, Market], fee_account: int = 0) -> None:
        self._markets = _market_map(markets)
        self._accounts = AccountsEngine(self._markets, fee_account=fee_account)
        self._matching = {symbol: MatchingEngine(market) for symbol, market in self._markets.items()}

    # ------------------------------------------------------------------ commands

    def apply(self, command: Command) -> list[Event]:
        """Apply one command through every engine it reaches; return all events, in causal order.

        Dispatch is by exact type, most frequent first; matching's events are
        settled by the accounts engine before they are returned.
        """
        if type(command) is PlaceOrder:
            accepted = self._accounts.place(command)
            if type(accepted) is not OrderAccepted:
                return [accepted]  # refused by accounts: matching never sees it
            events = self._matching[command.market].place(accepted)
            self._accounts.settle(events)
            return [accepted, *events]
        if type(command) is CancelOrder or type(command) is CancelAll:
            engine = self._matching.get(command.market)
            if engine is None:
                return [unknown_market_cancel(command)]
            events = engine.apply(command)
            self._accounts.settle(events)
            return [*events]
        if type(command) is Deposit or type(command) is Withdraw:
            return [*self._accounts.apply(command)]
        raise TypeError(f"not a command: {type(command).__name__}")

    # ------------------------------------------------------------------ accessors

    @property
    def markets(self) -> Mapping[str, Market]:
        """The markets, by symbol, in sorted order."""
        return self._markets

    @property
    def accounts(self) -> AccountsEngine:
        return self._accounts

    def matching(self, symbol: str) -> MatchingEngine:
        """The matching engine of ``symbol`` (KeyError if there is no such market)."""
        return self._matching[symbol]

    # ------------------------------------------------------------------ invariants

    def check_invariants(self) -> None:
        """Raise AssertionError unless every engine and the routing between them are consistent."""
        self._accounts.check_invariants()
        reserved = {
            o.order_id: (o.user, o.market, o.side, o.price, o.remaining) for o in self._accounts.open_orders()
        }
        resting = {
            o.order_id: (o.user, symbol, o.side, o.price, o.qty)
            for symbol, engine in self._matching.items()
            for o in engine.open_orders()
        }
        if reserved != resting:
            only_accounts = sorted(set(reserved) - set(resting))
            only_books = sorted(set(resting) - set(reserved))
            differ = sorted(k for k in set(reserved) & set(resting) if reserved[k] != resting[k])
            raise AssertionError(
                f"accounts and books disagree: only in accounts {only_accounts}, "
                f"only on books {only_books}, different {differ}"
            )
        for symbol, engine in self._matching.items():
            bid, ask = engine.best_bid(), engine.best_ask()
            _require(bid is None or ask is None or bid < ask, f"{symbol} crossed: bid {bid} >= ask {ask}")

    # ------------------------------------------------------------------ snapshots

    def state_hash(self) -> str:
        """A hash over the accounts engine's hash and each market's, in symbol order."""
        digest = hashlib.sha256()
        digest.update(b"accounts\0" + self._accounts.state_hash().encode() + b"\0")
        for symbol, engine in self._matching.items():
            digest.update(symbol.encode() + b"\0" + engine.state_hash().encode() + b"\0")
        return digest.hexdigest()

    def snapshot(self) -> bytes:
        """Every engine's snapshot in one canonical msgpack blob."""
        state: dict[str, Any] = {
            "accounts": self._accounts.snapshot(),
            "markets": [(symbol, engine.snapshot()) for symbol, engine in self._matching.items()],
        }
        return msgspec.msgpack.encode(state)

    @classmethod
    def restore(cls, markets: Sequence[Market] | Mapping[str, Market], data: bytes) -> Exchange:
        """The exchange a :meth:`snapshot` describes.

        A market configured but absent from the snapshot starts with an empty book;
        a market in the snapshot but not configured is an error.
        """
        state = msgspec.msgpack.decode(data)
        exchange = cls.__new__(cls)
        exchange._markets = _market_map(markets)
        exchange._accounts = AccountsEngine.restore(exchange._markets, state["accounts"])
        books: dict[str, bytes] = dict(state["markets"])
        unknown = sorted(set(books) - set(exchange._markets))
        if unknown:
            raise ValueError(f"snapshot holds books of unconfigured markets {unknown}")
        exchange._matching = {
            symbol: MatchingEngine.restore(market, books[symbol])
            if symbol in books
            else MatchingEngine(market)
            for symbol, market in exchange._markets.items()
        }
        return exchange
