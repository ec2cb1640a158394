"""The accounts engine of one user shard: balances, reservations and settlement.

Input records: the commands ``Deposit``, ``Withdraw`` and ``PlaceOrder`` of this
shard's users, and the matching events about their orders (``TradeExecuted``
settles a fill; ``OrderFilled``, ``OrderCanceled``, ``OrderExpired`` and a
matching ``OrderRejected`` release what the order still holds). Output: the
accounts events each record causes. An accepted ``PlaceOrder`` yields an
``OrderAccepted``, the record the market's matching engine consumes. Matching
events yield no events of their own (they are the record of what happened);
balances are read with the query methods.

A user ``u`` belongs to shard ``u % shard_count``. A command for a user of
another shard is a routing error and raises ``ValueError``; matching events
about orders this shard does not hold (the counterparty's side on another
shard, or an order already finished) are ignored.

Invariants (between records; :meth:`AccountsEngine.check_invariants` asserts them)
-----------------------------------------------------------------------------------
* No ``available`` and no ``reserved`` balance is ever negative.
* For every user and asset, ``reserved`` is the sum of the reservations of the
  user's open orders in that asset.
* An open order holds exactly what it may still spend: a SELL holds
  ``remaining × lot_units`` of base; a LIMIT or LIMIT_MAKER BUY holds
  ``buy_reservation(market, price, remaining)`` of quote (the excess a fill at a
  better price or a lower fee frees is released at once); a MARKET BUY holds its
  ``quote_limit`` less what it spent, until matching says it finished.
* Value is conserved: for every asset, the sum of ``available + reserved`` over
  all accounts of the shard, the fee account included, equals deposits minus
  withdrawals plus the net value settled in from other shards' users (always 0
  with one shard: a trade then only moves value between accounts).
* A shard never holds more than ``MAX_SUPPLY`` (2**63 − 1) of an asset in total
  (a deposit beyond it is rejected), so every balance fits a msgpack int64.
* Validate fully, then mutate, then emit: a rejected command changes no balance,
  no order and no order id; it only takes the next ``seq``.

Ordering rules
--------------
* ``seq`` numbers this shard's events: +1 per ``Deposited``, ``DepositRejected``,
  ``Withdrawn``, ``WithdrawRejected`` and ``OrderRejected`` (with ``order_id`` 0).
  ``OrderAccepted`` has no ``seq``: it is numbered by its order id,
  ``next_local × shard_count + shard`` with ``next_local`` = 1, 2, 3, … counting
  accepted orders, so ids are unique across shards and deterministic.
* Matching events must arrive in the order matching emitted them (a fill's
  ``TradeExecuted`` before the order's ``OrderFilled``).
* Fees are in the quote asset: the taker pays ``taker_fee``, the maker
  ``maker_fee``, as computed by matching. The shard that settles a side credits
  that side's fee to its own copy of the fee account (user ``fee_account``).

Cost per operation
------------------
* deposit, withdrawal, place order: O(1)
* settlement of a trade, release of a finished order: O(1); a matching event that
  moves no money (``OrderRested``, ``OrderPartiallyFilled``, ``CancelRejected``)
  costs one dict lookup
* queries: ``balance`` O(1); ``balances`` O(assets of the shard);
  ``open_order_ids`` O(n + k log k) for n open orders of the shard, k of them the
  user's (a scan: no hot path asks, so no per-user index is kept up to date)
* snapshot, state hash: O(n log n) for n balances and open orders; check_invariants: O(n)

Layout (what keeps the hot path cheap)
--------------------------------------
* Balances are held per asset, then per user (``asset -> user -> Balance``), and
  each market keeps its two assets' maps and its units at hand, so settling a
  fill reaches every balance it moves with one dict lookup.
* An open order is one dict entry, a tuple of plain values (see ``Entry``), which
  the garbage collector stops tracking; a fill replaces it. What the order's
  market, side and type make of it (``OrderKind``) is one tuple shared by all
  such orders, so an entry holds only what differs per order. No per-user index
  of open orders is maintained.
* ``settle`` takes all the events one matching record caused and finds what
  settles each by its exact type in one table (``_SETTLERS``); only trades and
  finished orders do any work. Value settled in from other shards (``total``)
  changes only when one side of a trade is another shard's: with both sides
  here, the flows cancel.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec

from investo.core.markets import BPS, Market, buy_reservation
from investo.core.messages import (
    AccountsEvent,
    Deposit,
    Deposited,
    DepositRejected,
    MatchingEvent,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderType,
    PlaceOrder,
    RejectCode,
    Side,
    TimeInForce,
    TradeExecuted,
    Withdraw,
    Withdrawn,
    WithdrawRejected,
)

AccountsRecord = Deposit | Withdraw | PlaceOrder | MatchingEvent
"""What an accounts shard's log holds."""

MAX_SUPPLY = (1 << 63) - 1
"""The most of one asset a shard holds in total, so every balance fits a msgpack int64."""

# Enum members bound to module names: the hot path compares against these.
BUY = Side.BUY
SELL = Side.SELL
MARKET = OrderType.MARKET
LIMIT_MAKER = OrderType.LIMIT_MAKER
GTC = TimeInForce.GTC
IOC = TimeInForce.IOC
RUNS_AS: tuple[TimeInForce | None, ...] = (None, GTC, IOC)
"""The time in force an order type runs with, by type (LIMIT: its own; a LIMIT_MAKER
rests or is rejected; a MARKET order takes what it can and the rest expires)."""

# What an order's market, side and type make of it: (market symbol, side, type,
# asset held). One tuple per market, side and type, made at start and shared by
# every such order. Side and type are plain ints, not enum members (which the
# garbage collector tracks), so the tuple holds only atomic values.
OrderKind = tuple[str, int, int, str]
MARKET_TYPE = int(OrderType.MARKET)  # an OrderKind's type for MARKET orders

# An open order's reservation: (user, kind, limit price in ticks (0 for MARKET),
# lots left (0 for a market buy by quote amount, which counts no lots), amount
# held): with the kind, ReservedOrder's fields, order id aside. Only atomic values
# and an untracked tuple, so the garbage collector stops tracking it.
Entry = tuple[int, OrderKind, int, int, int]


class Balance:
    """One user's holding of one asset, in the asset's smallest unit."""

    __slots__ = ("available", "reserved")

    def __init__(self, available: int = 0, reserved: int = 0) -> None:
        self.available = available
        self.reserved = reserved


Holders = defaultdict[int, Balance]
"""The balances of one asset, by user; a missing one is created (zero) on first use."""


class _MarketAccounts:
    """One market as settlement sees it: its units and its two assets' balances."""

    __slots__ = (
        "base",
        "base_holders",
        "kinds",
        "lot_units",
        "market",
        "max_fee_bps",
        "notional_unit",
        "quote",
        "quote_holders",
    )

    def __init__(self, market: Market, base_holders: Holders, quote_holders: Holders) -> None:
        self.market = market
        self.base = market.base
        self.quote = market.quote
        self.base_holders = base_holders
        self.quote_holders = quote_holders
        self.notional_unit = market.notional_unit
        self.lot_units = market.lot_units
        self.max_fee_bps = market.max_fee_bps
        # kinds[side][type]: the OrderKind every order of this market, side and type shares
        self.kinds = tuple(
            tuple(
                (market.symbol, int(side), int(type_), self.quote if side == BUY else self.base)
                for type_ in OrderType
            )
            for side in Side
        )


class ReservedOrder(msgspec.Struct, frozen=True):
    """A read-only view of an open order's reservation, for queries."""

    order_id: int
    user: int
    market: str
    side: Side
    type: OrderType
    price: int
    remaining: int
    asset: str
    reserved: int


def validate_order(market: Market, rec: PlaceOrder) -> RejectCode | None:
    """Why ``rec`` makes no valid order in ``market``, or None if it does. O(1)."""
    if rec.type != MARKET:  # LIMIT or LIMIT_MAKER: the common case, checked first
        if not market.min_price <= rec.price <= market.max_price:
            return RejectCode.INVALID_PRICE
        if not market.min_qty <= rec.qty <= market.max_qty:
            return RejectCode.INVALID_QUANTITY
        if rec.quote_qty != 0:
            return RejectCode.INVALID_ORDER
        if rec.price * rec.qty * market.notional_unit < market.min_notional:  # market.notional(price, qty)
            return RejectCode.MIN_NOTIONAL
        return None
    lots_optional = rec.side == BUY  # a market buy may give quote_qty instead
    if (rec.qty or not lots_optional) and not market.min_qty <= rec.qty <= market.max_qty:
        return RejectCode.INVALID_QUANTITY
    if rec.price != 0:
        return RejectCode.INVALID_ORDER
    if rec.side == BUY:
        by_qty = rec.qty > 0 and rec.quote_qty == 0
        by_quote = rec.qty == 0 and rec.quote_qty > 0
        if not (by_qty or by_quote):
            return RejectCode.INVALID_ORDER
    elif rec.quote_qty != 0:
        return RejectCode.INVALID_ORDER
    return None


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


class AccountsEngine:
    """Balances and reservations of one user shard. See the module docstring."""

    def __init__(
        self, markets: Mapping[str, Market], shard: int = 0, shard_count: int = 1, fee_account: int = 0
    ) -> None:
        if shard_count < 1 or not 0 <= shard < shard_count:
            raise ValueError(f"shard {shard} of {shard_count} does not exist")
        for symbol, market in markets.items():
            if symbol != market.symbol:
                raise ValueError(f"market {market.symbol} listed under {symbol}")
        self.markets: Mapping[str, Market] = dict(markets)
        self.assets = frozenset(a for m in self.markets.values() for a in (m.base, m.quote))
        self.shard = shard
        self.shard_count = shard_count
        self.fee_account = fee_account
        self.seq = 0
        self.next_local = 1
        self._holdings: dict[str, Holders] = {asset: defaultdict(Balance) for asset in sorted(self.assets)}
        self._by_market = {
            symbol: _MarketAccounts(market, self._holdings[market.base], self._holdings[market.quote])
            for symbol, market in self.markets.items()
        }
        self._orders: dict[int, Entry] = {}  # open order id -> its reservation
        self._deposited: dict[str, int] = {}
        self._withdrawn: dict[str, int] = {}
        self._net_in: dict[str, int] = {}  # value settled in from other shards' users

    # ------------------------------------------------------------------ records

    def apply(self, record: AccountsRecord) -> list[AccountsEvent]:
        """Apply one record; return the events it caused, in order."""
        if type(record) is PlaceOrder:
            return [self.place(record)]
        if isinstance(record, MatchingEvent):
            self.settle((record,))
            return []
        if type(record) is Deposit:
            return [self._deposit(record)]
        if type(record) is Withdraw:
            return [self._withdraw(record)]
        raise TypeError(f"not an accounts record: {type(record).__name__}")

    def settle(self, events: Iterable[MatchingEvent]) -> None:
        """Apply matching events in the order matching emitted them; they cause no events.

        The same as ``apply`` on each, without its per-record dispatch: one table
        lookup per event finds what settles it, and an event that moves no money
        (``OrderRested``, ``OrderPartiallyFilled``, ``CancelRejected``) has no entry.
        """
        settlers = _SETTLERS
        for event in events:
            settler = settlers.get(type(event))
            if settler is not None:
                settler(self, event)

    def _deposit(self, rec: Deposit) -> Deposited | DepositRejected:
        self._check_shard(rec.user)
        code: RejectCode | None = None
        if rec.asset not in self.assets:
            code = RejectCode.UNKNOWN_ASSET
        elif rec.amount <= 0 or self._supply(rec.asset) + rec.amount > MAX_SUPPLY:
            code = RejectCode.INVALID_AMOUNT
        self.seq += 1
        if code is not None:
            return DepositRejected(self.seq, rec.ts, rec.user, rec.asset, rec.amount, code)
        self._holdings[rec.asset][rec.user].available += rec.amount
        self._deposited[rec.asset] = self._deposited.get(rec.asset, 0) + rec.amount
        return Deposited(self.seq, rec.ts, rec.user, rec.asset, rec.amount)

    def _withdraw(self, rec: Withdraw) -> Withdrawn | WithdrawRejected:
        self._check_shard(rec.user)
        code: RejectCode | None = None
        if rec.asset not in self.assets:
            code = RejectCode.UNKNOWN_ASSET
        elif rec.amount <= 0:
            code = RejectCode.INVALID_AMOUNT
        elif self.balance(rec.user, rec.asset)[0] < rec.amount:
            code = RejectCode.INSUFFICIENT_BALANCE
        self.seq += 1
        if code is not None:
            return WithdrawRejected(self.seq, rec.ts, rec.user, rec.asset, rec.amount, code)
        self._holdings[rec.asset][rec.user].available -= rec.amount
        self._withdrawn[rec.asset] = self._withdrawn.get(rec.asset, 0) + rec.amount
        return Withdrawn(self.seq, rec.ts, rec.user, rec.asset, rec.amount)

    def place(self, rec: PlaceOrder) -> OrderAccepted | OrderRejected:
        """Validate, fund and number one order: what ``apply`` does with a ``PlaceOrder``."""
        user = rec.user
        if user % self.shard_count != self.shard:
            self._check_shard(user)
        mkt = self._by_market.get(rec.market)
        if mkt is None:
            return self._reject_order(rec, RejectCode.UNKNOWN_MARKET)
        code = validate_order(mkt.market, rec)
        if code is not None:
            return self._reject_order(rec, code)
        side, type_ = rec.side, rec.type
        # What the order must hold: base for a SELL, quote for a BUY (see the invariants).
        if side == SELL:
            balance = mkt.base_holders.get(user)
            need = rec.qty * mkt.lot_units
            quote_limit = 0
        else:
            balance = mkt.quote_holders.get(user)
            if type_ != MARKET:  # buy_reservation(market, price, qty)
                notional = rec.price * rec.qty * mkt.notional_unit
                need = notional + notional * mkt.max_fee_bps // BPS
            elif rec.quote_qty:
                need = rec.quote_qty
            else:  # market buy by quantity: matching caps spending at quote_limit
                need = 0 if balance is None else balance.available
            quote_limit = need
        if balance is None or need == 0 or balance.available < need:
            return self._reject_order(rec, RejectCode.INSUFFICIENT_BALANCE)
        # Valid and funded: reserve, assign the id, hand the order to matching.
        order_id = self.next_local * self.shard_count + self.shard
        self.next_local += 1
        balance.available -= need
        balance.reserved += need
        self._orders[order_id] = (user, mkt.kinds[side][type_], rec.price, rec.qty, need)
        tif = RUNS_AS[type_]
        if tif is None:
            tif = rec.tif
        return OrderAccepted(
            rec.ts, rec.market, order_id, user, side, type_, tif, rec.price, rec.qty,
            quote_limit, rec.client_order_id, rec.stp,
        )  # fmt: skip

    def _reject_order(self, rec: PlaceOrder, code: RejectCode) -> OrderRejected:
        self.seq += 1
        return OrderRejected(self.seq, rec.ts, rec.market, 0, rec.user, rec.client_order_id, code)

    # ------------------------------------------------------------------ settlement

    def _settle_trade(self, ev: TradeExecuted) -> None:
        """Settle the sides of one fill that this shard holds."""
        orders = self._orders
        if ev.taker_side == BUY:
            buy_id, sell_id = ev.taker_order_id, ev.maker_order_id
            buy_fee, sell_fee = ev.taker_fee, ev.maker_fee
        else:
            buy_id, sell_id = ev.maker_order_id, ev.taker_order_id
            buy_fee, sell_fee = ev.maker_fee, ev.taker_fee
        buy = orders.get(buy_id)
        sell = orders.get(sell_id)
        if buy is None and sell is None:
            return  # both sides belong to other shards (or already finished)
        mkt = self._by_market[ev.market]
        qty = ev.qty
        notional = ev.price * qty * mkt.notional_unit
        base = qty * mkt.lot_units
        fees = 0
        if buy is not None:
            # The buyer pays notional + fee from its reservation and receives the base.
            user, kind, price, remaining, reserved = buy
            if remaining:  # 0 only for a market buy by quote amount
                remaining -= qty
            paid = notional + buy_fee
            if kind[2] == MARKET_TYPE:  # holds its quote_limit less what it spent, until it finishes
                keep = reserved - paid
            else:  # holds exactly buy_reservation(market, price, remaining): a better price frees the excess
                left = price * remaining * mkt.notional_unit
                keep = left + left * mkt.max_fee_bps // BPS
            orders[buy_id] = (user, kind, price, remaining, keep)
            quote = mkt.quote_holders[user]
            quote.reserved -= reserved - keep
            quote.available += reserved - keep - paid
            mkt.base_holders[user].available += base
            fees = buy_fee
        if sell is not None:
            # The seller delivers the base from its reservation and receives notional − fee.
            user, kind, price, remaining, reserved = sell
            orders[sell_id] = (user, kind, price, remaining - qty, reserved - base)
            mkt.base_holders[user].reserved -= base
            mkt.quote_holders[user].available += notional - sell_fee
            fees += sell_fee
        if fees:  # the fees of the sides settled here, to this shard's copy of the fee account
            mkt.quote_holders[self.fee_account].available += fees
        if buy is None or sell is None:  # the other side settles on another shard: value crosses
            inflow = 1 if sell is None else -1  # +1: base comes in for our buyer, notional goes out
            net_in = self._net_in
            net_in[mkt.base] = net_in.get(mkt.base, 0) + inflow * base
            net_in[mkt.quote] = net_in.get(mkt.quote, 0) - inflow * notional

    def _finish(self, ev: OrderFilled | OrderCanceled | OrderExpired | OrderRejected) -> None:
        """The order is done (or was refused): release what it still holds and forget it."""
        entry = self._orders.pop(ev.order_id, None)  # order id 0 (refused by accounts) is never open
        if entry is not None and entry[-1]:  # a limit order that filled completely holds nothing
            user, kind, _, _, reserved = entry
            balance = self._holdings[kind[3]][user]
            balance.reserved -= reserved
            balance.available += reserved

    # ------------------------------------------------------------------ helpers

    def _check_shard(self, user: int) -> None:
        if user % self.shard_count != self.shard:
            raise ValueError(f"user {user} belongs to shard {user % self.shard_count}, not {self.shard}")

    def _holders(self, asset: str) -> Holders:
        """The balances of ``asset`` by user, created for an asset no market lists (restore only)."""
        holders = self._holdings.get(asset)
        if holders is None:
            holders = self._holdings[asset] = defaultdict(Balance)
        return holders

    def _supply(self, asset: str) -> int:
        """Deposits − withdrawals + net settled in: the total the shard holds of ``asset``."""
        return self._deposited.get(asset, 0) - self._withdrawn.get(asset, 0) + self._net_in.get(asset, 0)

    # ------------------------------------------------------------------ queries

    def balance(self, user: int, asset: str) -> tuple[int, int]:
        """``(available, reserved)`` of ``user`` in ``asset``; (0, 0) if never touched."""
        holders = self._holdings.get(asset)
        balance = None if holders is None else holders.get(user)
        return (0, 0) if balance is None else (balance.available, balance.reserved)

    def balances(self, user: int) -> dict[str, tuple[int, int]]:
        """Every asset ``user`` holds something of, sorted: asset -> (available, reserved)."""
        out: dict[str, tuple[int, int]] = {}
        for asset in sorted(self._holdings):
            b = self._holdings[asset].get(user)
            if b is not None and (b.available or b.reserved):
                out[asset] = (b.available, b.reserved)
        return out

    def open_order_ids(self, user: int) -> list[int]:
        """The ids of ``user``'s open orders, ascending (a scan of the shard's open orders)."""
        return sorted(order_id for order_id, entry in self._orders.items() if entry[0] == user)

    def open_order(self, order_id: int) -> ReservedOrder | None:
        entry = self._orders.get(order_id)
        return None if entry is None else _view(order_id, entry)

    def open_orders(self) -> list[ReservedOrder]:
        """Every open order's reservation, by order id."""
        return [_view(order_id, self._orders[order_id]) for order_id in sorted(self._orders)]

    def total(self, asset: str) -> int:
        """What the shard holds of ``asset`` over all accounts, by its books (see invariants)."""
        return self._supply(asset)

    def flows(self, asset: str) -> tuple[int, int, int]:
        """``(deposited, withdrawn, settled in from other shards)`` of ``asset``; they sum to ``total``.

        Over all shards of a cluster the settled-in amounts sum to zero: value only
        moves between shards, never appears.
        """
        return self._deposited.get(asset, 0), self._withdrawn.get(asset, 0), self._net_in.get(asset, 0)

    # ------------------------------------------------------------------ invariants

    def check_invariants(self) -> None:
        """Raise AssertionError if any invariant of the module docstring does not hold."""
        expected: dict[tuple[int, str], int] = {}
        for order_id, (
            user,
            (symbol, side, type_, asset),
            price,
            remaining,
            reserved,
        ) in self._orders.items():
            _require(reserved >= 0, f"order {order_id} holds {reserved}")
            _require(remaining >= 0, f"order {order_id} has {remaining} lots left")
            market = self.markets.get(symbol)
            if market is None:
                raise AssertionError(f"order {order_id} in unknown market {symbol}")
            held_asset = market.quote if side == BUY else market.base
            _require(asset == held_asset, f"order {order_id} holds {asset}, not {held_asset}")
            key = (user, asset)
            expected[key] = expected.get(key, 0) + reserved
            if type_ != MARKET:
                need = (
                    buy_reservation(market, price, remaining)
                    if side == BUY
                    else market.base_amount(remaining)
                )
                _require(reserved == need, f"order {order_id} holds {reserved}, needs {need}")
        held: dict[str, int] = {}
        for asset, holders in self._holdings.items():
            for user, b in holders.items():
                _require(b.available >= 0, f"user {user} {asset} available {b.available}")
                _require(b.reserved >= 0, f"user {user} {asset} reserved {b.reserved}")
                want = expected.pop((user, asset), 0)
                _require(b.reserved == want, f"user {user} {asset} reserved {b.reserved}, orders hold {want}")
                held[asset] = held.get(asset, 0) + b.available + b.reserved
        _require(not expected, f"orders hold funds of missing accounts: {sorted(expected)}")
        for asset in sorted(self.assets | held.keys()):
            supply = self._supply(asset)
            _require(
                held.get(asset, 0) == supply, f"{asset}: accounts hold {held.get(asset, 0)}, books {supply}"
            )
            if self.shard_count == 1:
                _require(self._net_in.get(asset, 0) == 0, f"{asset}: value settled in with one shard")

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> bytes:
        """The whole state as canonical bytes: the same state gives the same bytes."""
        balances = sorted(
            (user, asset, b.available, b.reserved)
            for asset, holders in self._holdings.items()
            for user, b in holders.items()
            if b.available or b.reserved
        )
        orders = []
        for order_id in sorted(self._orders):
            user, (symbol, side, type_, _), price, remaining, reserved = self._orders[order_id]
            orders.append((order_id, user, symbol, side, type_, price, remaining, reserved))
        state: dict[str, Any] = {
            "shard": self.shard,
            "shard_count": self.shard_count,
            "fee_account": self.fee_account,
            "seq": self.seq,
            "next_local": self.next_local,
            "balances": balances,
            "orders": orders,
            "deposited": _sorted_nonzero(self._deposited),
            "withdrawn": _sorted_nonzero(self._withdrawn),
            "net_in": _sorted_nonzero(self._net_in),
        }
        return msgspec.msgpack.encode(state)

    @classmethod
    def restore(cls, markets: Mapping[str, Market], data: bytes) -> AccountsEngine:
        """The engine a :meth:`snapshot` describes, over ``markets`` (shard settings come from it)."""
        state = msgspec.msgpack.decode(data)
        engine = cls(markets, state["shard"], state["shard_count"], state["fee_account"])
        engine.seq = state["seq"]
        engine.next_local = state["next_local"]
        for user, asset, available, reserved in state["balances"]:
            engine._holders(asset)[user] = Balance(available, reserved)
        for order_id, user, symbol, side, type_, price, remaining, reserved in state["orders"]:
            market = engine.markets.get(symbol)
            if market is None:
                raise ValueError(f"snapshot has an open order in unknown market {symbol}")
            kind = engine._by_market[symbol].kinds[Side(side)][OrderType(type_)]  # ValueError unless known
            engine._orders[order_id] = (user, kind, price, remaining, reserved)
        engine._deposited = dict(state["deposited"])
        engine._withdrawn = dict(state["withdrawn"])
        engine._net_in = dict(state["net_in"])
        return engine

    def state_hash(self) -> str:
        return hashlib.sha256(self.snapshot()).hexdigest()


_SETTLERS: dict[type, Callable[[AccountsEngine, Any], None]] = {
    TradeExecuted: AccountsEngine._settle_trade,
    OrderFilled: AccountsEngine._finish,
    OrderCanceled: AccountsEngine._finish,
    OrderExpired: AccountsEngine._finish,
    OrderRejected: AccountsEngine._finish,
}
"""What settles each kind of matching event; the kinds not listed move no money."""


def _view(order_id: int, entry: Entry) -> ReservedOrder:
    user, (symbol, side, type_, asset), price, remaining, reserved = entry
    return ReservedOrder(
        order_id, user, symbol, Side(side), OrderType(type_), price, remaining, asset, reserved
    )


def _sorted_nonzero(amounts: Mapping[str, int]) -> list[tuple[str, int]]:
    return [(asset, amount) for asset, amount in sorted(amounts.items()) if amount]
