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
* settlement of a trade, release of a finished order: O(1)
* queries: ``balance`` O(1); ``balances`` O(assets of the user);
  ``open_order_ids`` O(k log k) for the user's k open orders
* snapshot, state hash: O(n log n) for n balances and open orders; check_invariants: O(n)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import msgspec

from investo.core.markets import Market, buy_reservation
from investo.core.messages import (
    AccountsEvent,
    CancelRejected,
    Deposit,
    Deposited,
    DepositRejected,
    MatchingEvent,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderRested,
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

BUY = Side.BUY
SELL = Side.SELL
MARKET = OrderType.MARKET


class Balance:
    """One user's holding of one asset, in the asset's smallest unit."""

    __slots__ = ("available", "reserved")

    def __init__(self, available: int = 0, reserved: int = 0) -> None:
        self.available = available
        self.reserved = reserved


class _Order:
    """An open order's reservation, as the accounts engine tracks it (mutable)."""

    __slots__ = ("asset", "market", "order_id", "price", "remaining", "reserved", "side", "type", "user")

    def __init__(
        self,
        order_id: int,
        user: int,
        market: Market,
        side: Side,
        type: OrderType,
        price: int,
        remaining: int,
        reserved: int,
    ) -> None:
        self.order_id = order_id
        self.user = user
        self.market = market
        self.side = side
        self.type = type
        self.price = price  # limit price in ticks; 0 for MARKET
        self.remaining = remaining  # lots left; 0 for a market buy by quote amount (counts no lots)
        self.reserved = reserved  # what the order holds, in ``asset``
        self.asset = market.quote if side == BUY else market.base


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
    is_market = rec.type == MARKET
    if not is_market and not market.min_price <= rec.price <= market.max_price:
        return RejectCode.INVALID_PRICE
    lots_optional = is_market and rec.side == BUY  # a market buy may give quote_qty instead
    if (rec.qty or not lots_optional) and not market.min_qty <= rec.qty <= market.max_qty:
        return RejectCode.INVALID_QUANTITY
    if is_market:
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
    if rec.quote_qty != 0:
        return RejectCode.INVALID_ORDER
    if market.notional(rec.price, rec.qty) < market.min_notional:
        return RejectCode.MIN_NOTIONAL
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
        self._accounts: dict[int, dict[str, Balance]] = {}  # user -> asset -> balance
        self._orders: dict[int, _Order] = {}  # open order id -> reservation
        self._user_orders: dict[int, set[int]] = {}  # user -> open order ids (no empty sets)
        self._deposited: dict[str, int] = {}
        self._withdrawn: dict[str, int] = {}
        self._net_in: dict[str, int] = {}  # value settled in from other shards' users

    # ------------------------------------------------------------------ records

    def apply(self, record: AccountsRecord) -> list[AccountsEvent]:
        """Apply one record; return the events it caused, in order."""
        if isinstance(record, TradeExecuted):
            self._settle_trade(record)
            return []
        if isinstance(record, OrderFilled | OrderCanceled | OrderExpired):
            self._finish(record.order_id)
            return []
        if isinstance(record, OrderRejected):
            if record.order_id:  # 0: refused by accounts, before an id was assigned
                self._finish(record.order_id)
            return []
        if isinstance(record, PlaceOrder):
            return [self._place(record)]
        if isinstance(record, Deposit):
            return [self._deposit(record)]
        if isinstance(record, Withdraw):
            return [self._withdraw(record)]
        if isinstance(record, OrderRested | OrderPartiallyFilled | CancelRejected):
            return []  # no balance moves: lots left are tracked from TradeExecuted
        raise TypeError(f"not an accounts record: {type(record).__name__}")

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
        self._balance(rec.user, rec.asset).available += rec.amount
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
        self._balance(rec.user, rec.asset).available -= rec.amount
        self._withdrawn[rec.asset] = self._withdrawn.get(rec.asset, 0) + rec.amount
        return Withdrawn(self.seq, rec.ts, rec.user, rec.asset, rec.amount)

    def _place(self, rec: PlaceOrder) -> OrderAccepted | OrderRejected:
        self._check_shard(rec.user)
        market = self.markets.get(rec.market)
        if market is None:
            return self._reject_order(rec, RejectCode.UNKNOWN_MARKET)
        code = validate_order(market, rec)
        if code is not None:
            return self._reject_order(rec, code)
        asset = market.quote if rec.side == BUY else market.base
        available = self.balance(rec.user, asset)[0]
        need = self._reservation(market, rec, available)
        if need == 0 or available < need:
            return self._reject_order(rec, RejectCode.INSUFFICIENT_BALANCE)
        # Valid and funded: reserve, assign the id, hand the order to matching.
        order_id = self.next_local * self.shard_count + self.shard
        self.next_local += 1
        balance = self._balance(rec.user, asset)
        balance.available -= need
        balance.reserved += need
        order = _Order(order_id, rec.user, market, rec.side, rec.type, rec.price, rec.qty, need)
        self._orders[order_id] = order
        self._user_orders.setdefault(rec.user, set()).add(order_id)
        if rec.type == MARKET:
            tif = TimeInForce.IOC
        elif rec.type == OrderType.LIMIT_MAKER:
            tif = TimeInForce.GTC
        else:
            tif = rec.tif
        quote_limit = need if rec.side == BUY else 0
        return OrderAccepted(
            rec.ts, rec.market, order_id, rec.user, rec.side, rec.type, tif, rec.price, rec.qty,
            quote_limit, rec.client_order_id, rec.stp,
        )  # fmt: skip

    @staticmethod
    def _reservation(market: Market, rec: PlaceOrder, available: int) -> int:
        """What a valid order must hold: base for a SELL, quote for a BUY."""
        if rec.side == SELL:
            return market.base_amount(rec.qty)
        if rec.type != MARKET:
            return buy_reservation(market, rec.price, rec.qty)
        if rec.quote_qty:
            return rec.quote_qty
        return available  # market buy by quantity: matching caps spending at quote_limit

    def _reject_order(self, rec: PlaceOrder, code: RejectCode) -> OrderRejected:
        self.seq += 1
        return OrderRejected(self.seq, rec.ts, rec.market, 0, rec.user, rec.client_order_id, code)

    # ------------------------------------------------------------------ settlement

    def _settle_trade(self, ev: TradeExecuted) -> None:
        if ev.taker_side == BUY:
            buy_id, buy_fee, sell_id, sell_fee = (
                ev.taker_order_id,
                ev.taker_fee,
                ev.maker_order_id,
                ev.maker_fee,
            )
        else:
            buy_id, buy_fee, sell_id, sell_fee = (
                ev.maker_order_id,
                ev.maker_fee,
                ev.taker_order_id,
                ev.taker_fee,
            )
        buy = self._orders.get(buy_id)
        if buy is not None:
            self._settle_buy(buy, ev.price, ev.qty, buy_fee)
        sell = self._orders.get(sell_id)
        if sell is not None:
            self._settle_sell(sell, ev.price, ev.qty, sell_fee)

    def _settle_buy(self, order: _Order, price: int, qty: int, fee: int) -> None:
        """The buyer pays notional + fee from its reservation and receives the base."""
        market = order.market
        notional = market.notional(price, qty)
        base = market.base_amount(qty)
        paid = notional + fee
        self._balance(order.user, market.quote).reserved -= paid
        order.reserved -= paid
        self._balance(order.user, market.base).available += base
        self._credit_fee(market.quote, fee)
        self._net_in[market.quote] = self._net_in.get(market.quote, 0) - notional
        self._net_in[market.base] = self._net_in.get(market.base, 0) + base
        if order.remaining:  # 0 only for a market buy by quote amount
            order.remaining -= qty
        if order.type != MARKET:  # keep exactly what the remaining lots need
            excess = order.reserved - buy_reservation(market, order.price, order.remaining)
            if excess:
                self._release(order, excess)

    def _settle_sell(self, order: _Order, price: int, qty: int, fee: int) -> None:
        """The seller delivers the base from its reservation and receives notional − fee."""
        market = order.market
        notional = market.notional(price, qty)
        base = market.base_amount(qty)
        self._balance(order.user, market.base).reserved -= base
        order.reserved -= base
        order.remaining -= qty
        self._balance(order.user, market.quote).available += notional - fee
        self._credit_fee(market.quote, fee)
        self._net_in[market.base] = self._net_in.get(market.base, 0) - base
        self._net_in[market.quote] = self._net_in.get(market.quote, 0) + notional

    def _credit_fee(self, asset: str, fee: int) -> None:
        if fee:
            self._balance(self.fee_account, asset).available += fee

    def _finish(self, order_id: int) -> None:
        """The order is done: release what it still holds and forget it."""
        order = self._orders.pop(order_id, None)
        if order is None:
            return
        if order.reserved:
            self._release(order, order.reserved)
        ids = self._user_orders[order.user]
        ids.discard(order_id)
        if not ids:
            del self._user_orders[order.user]

    def _release(self, order: _Order, amount: int) -> None:
        balance = self._balance(order.user, order.asset)
        balance.reserved -= amount
        balance.available += amount
        order.reserved -= amount

    # ------------------------------------------------------------------ helpers

    def _check_shard(self, user: int) -> None:
        if user % self.shard_count != self.shard:
            raise ValueError(f"user {user} belongs to shard {user % self.shard_count}, not {self.shard}")

    def _balance(self, user: int, asset: str) -> Balance:
        """The mutable balance, created on first use (only on paths that mutate)."""
        assets = self._accounts.get(user)
        if assets is None:
            assets = self._accounts[user] = {}
        balance = assets.get(asset)
        if balance is None:
            balance = assets[asset] = Balance()
        return balance

    def _supply(self, asset: str) -> int:
        """Deposits − withdrawals + net settled in: the total the shard holds of ``asset``."""
        return self._deposited.get(asset, 0) - self._withdrawn.get(asset, 0) + self._net_in.get(asset, 0)

    # ------------------------------------------------------------------ queries

    def balance(self, user: int, asset: str) -> tuple[int, int]:
        """``(available, reserved)`` of ``user`` in ``asset``; (0, 0) if never touched."""
        balance = self._accounts.get(user, {}).get(asset)
        return (0, 0) if balance is None else (balance.available, balance.reserved)

    def balances(self, user: int) -> dict[str, tuple[int, int]]:
        """Every asset ``user`` holds something of, sorted: asset -> (available, reserved)."""
        assets = self._accounts.get(user, {})
        return {
            asset: (b.available, b.reserved)
            for asset, b in sorted(assets.items())
            if b.available or b.reserved
        }

    def open_order_ids(self, user: int) -> list[int]:
        return sorted(self._user_orders.get(user, ()))

    def open_order(self, order_id: int) -> ReservedOrder | None:
        order = self._orders.get(order_id)
        return None if order is None else _view(order)

    def open_orders(self) -> list[ReservedOrder]:
        """Every open order's reservation, by order id."""
        return [_view(self._orders[order_id]) for order_id in sorted(self._orders)]

    def total(self, asset: str) -> int:
        """What the shard holds of ``asset`` over all accounts, by its books (see invariants)."""
        return self._supply(asset)

    # ------------------------------------------------------------------ invariants

    def check_invariants(self) -> None:
        """Raise AssertionError if any invariant of the module docstring does not hold."""
        expected: dict[tuple[int, str], int] = {}
        for order_id, order in self._orders.items():
            _require(order.reserved >= 0, f"order {order_id} holds {order.reserved}")
            _require(order.remaining >= 0, f"order {order_id} has {order.remaining} lots left")
            _require(order_id in self._user_orders.get(order.user, ()), f"order {order_id} not indexed")
            key = (order.user, order.asset)
            expected[key] = expected.get(key, 0) + order.reserved
            if order.type != MARKET:
                if order.side == BUY:
                    need = buy_reservation(order.market, order.price, order.remaining)
                else:
                    need = order.market.base_amount(order.remaining)
                _require(order.reserved == need, f"order {order_id} holds {order.reserved}, needs {need}")
        indexed = sum(len(ids) for ids in self._user_orders.values())
        _require(indexed == len(self._orders), "per-user order index out of step")
        held: dict[str, int] = {}
        for user, assets in self._accounts.items():
            for asset, b in assets.items():
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
        balances = [
            (user, asset, b.available, b.reserved)
            for user in sorted(self._accounts)
            for asset, b in sorted(self._accounts[user].items())
            if b.available or b.reserved
        ]
        orders = [
            (o.order_id, o.user, o.market.symbol, int(o.side), int(o.type), o.price, o.remaining, o.reserved)
            for o in (self._orders[order_id] for order_id in sorted(self._orders))
        ]
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
            engine._accounts.setdefault(user, {})[asset] = Balance(available, reserved)
        for order_id, user, symbol, side, type_, price, remaining, reserved in state["orders"]:
            market = engine.markets.get(symbol)
            if market is None:
                raise ValueError(f"snapshot has an open order in unknown market {symbol}")
            order = _Order(order_id, user, market, Side(side), OrderType(type_), price, remaining, reserved)
            engine._orders[order_id] = order
            engine._user_orders.setdefault(user, set()).add(order_id)
        engine._deposited = dict(state["deposited"])
        engine._withdrawn = dict(state["withdrawn"])
        engine._net_in = dict(state["net_in"])
        return engine

    def state_hash(self) -> str:
        return hashlib.sha256(self.snapshot()).hexdigest()


def _view(order: _Order) -> ReservedOrder:
    return ReservedOrder(
        order.order_id, order.user, order.market.symbol, order.side, order.type, order.price,
        order.remaining, order.asset, order.reserved,
    )  # fmt: skip


def _sorted_nonzero(amounts: Mapping[str, int]) -> list[tuple[str, int]]:
    return [(asset, amount) for asset, amount in sorted(amounts.items()) if amount]
