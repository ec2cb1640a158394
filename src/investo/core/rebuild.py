"""Engines rebuilt from history: the state a log would have built, from its stored results.

When the log is gone (Redis lost its data) but the history holds every order, trade,
deposit and withdrawal (``investo dbwriter`` wrote them to SQL), the engines are rebuilt
from what the history says they held, not by replaying commands:

* :func:`rebuild_matching`: a market's book from its open orders, given in arrival
  order (the order they rested in), with the market's event ``seq`` and last trade
  id continuing where the history stops.
* :func:`rebuild_accounts`: one accounts shard from each user's total holding per
  asset (the ledger's sum plus what the user's trades moved), the open orders of its
  users (whose reservations follow from their price and lots left), the deposits and
  withdrawals, and the shard's event ``seq`` and order counter.

Both are pure (no I/O): the reading is :mod:`investo.cluster.history`'s.

Invariants
----------
* The rebuilt engines satisfy their own invariants (``check_invariants``): an open
  order reserves exactly what it may still spend, ``reserved`` is the sum of the
  user's open orders' reservations, value is conserved (what the shard holds equals
  deposits − withdrawals + the value settled in from other shards, which is
  derived as the difference).
* Given the history of every record an engine applied, the rebuilt engine has the
  same :meth:`state_hash` as the engine that applied them (a test checks it): both
  snapshots list the same balances, orders and counters.
* A history that cannot be a real one (a negative available balance, an order in an
  unknown market, a user of another shard) is refused with ``ValueError``.

Costs: O(n log n) for n open orders and balances.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from investo.core.accounts import AccountsEngine, Balance
from investo.core.markets import Market, buy_reservation
from investo.core.matching import MatchingEngine
from investo.core.messages import OrderType, Side


@dataclass(frozen=True, slots=True)
class RestingOrder:
    """An open limit order as the history holds it: lots left = original − executed."""

    order_id: int
    user: int
    market: str
    side: Side
    type: OrderType  # LIMIT or LIMIT_MAKER (only those rest)
    price: int
    remaining: int
    client_order_id: str = ""


def rebuild_matching(
    market: Market, seq: int, last_trade_id: int, orders: Iterable[RestingOrder]
) -> MatchingEngine:
    """The book of ``market`` holding ``orders`` (oldest first) at event ``seq``. O(n log n)."""
    engine = MatchingEngine(market)
    if seq < 0 or last_trade_id < 0:
        raise ValueError(f"{market.symbol}: seq {seq} and last trade id {last_trade_id} must not be negative")
    engine.seq = seq
    engine.last_trade_id = last_trade_id
    for order in orders:
        if order.market != market.symbol:
            raise ValueError(f"order {order.order_id} is in {order.market}, not {market.symbol}")
        if order.remaining <= 0 or not market.min_price <= order.price <= market.max_price:
            raise ValueError(f"order {order.order_id}: {order.remaining} lots at {order.price} cannot rest")
        if engine.open_order(order.order_id) is not None:
            raise ValueError(f"order {order.order_id} is listed twice")
        engine.load_order(
            order.order_id, order.user, order.side, order.price, order.remaining, order.client_order_id
        )
    bid, ask = engine.best_bid(), engine.best_ask()
    if bid is not None and ask is not None and bid >= ask:
        raise ValueError(f"{market.symbol}: the rebuilt book is crossed (bid {bid} >= ask {ask})")
    return engine


def reservation(market: Market, order: RestingOrder) -> tuple[str, int]:
    """``(asset, amount)`` an open limit order holds: base for a SELL, quote (fee included) for a BUY."""
    if order.side == Side.SELL:
        return market.base, market.base_amount(order.remaining)
    return market.quote, buy_reservation(market, order.price, order.remaining)


def rebuild_accounts(
    markets: Mapping[str, Market],
    shard: int,
    shard_count: int,
    *,
    holdings: Mapping[tuple[int, str], int],
    orders: Iterable[RestingOrder],
    deposited: Mapping[str, int],
    withdrawn: Mapping[str, int],
    seq: int,
    next_local: int,
    fee_account: int = 0,
) -> AccountsEngine:
    """Accounts shard ``shard`` of ``shard_count`` from its users' holdings and open orders.

    ``holdings[(user, asset)]`` is the user's total (available + reserved); the fee
    account's entry is this shard's copy of it. ``orders`` are the open orders of this
    shard's users; ``next_local`` numbers the next accepted order (ids continue
    after every id this shard gave). O(n log n).
    """
    engine = AccountsEngine(markets, shard, shard_count, fee_account)
    if seq < 0 or next_local < 1:
        raise ValueError(f"seq {seq} and next_local {next_local}: seq ≥ 0 and next_local ≥ 1 needed")
    engine.seq = seq
    engine.next_local = next_local
    reserved: dict[tuple[int, str], int] = {}
    for order in sorted(orders, key=lambda o: o.order_id):
        market = markets.get(order.market)
        if market is None:
            raise ValueError(f"order {order.order_id} is in unknown market {order.market}")
        if order.user % shard_count != shard:
            raise ValueError(f"order {order.order_id}: user {order.user} is not of shard {shard}")
        if order.order_id in engine._orders:
            raise ValueError(f"order {order.order_id} is listed twice")
        if order.type == OrderType.MARKET or order.remaining <= 0:
            raise ValueError(f"order {order.order_id} cannot rest: {order.type.name}, {order.remaining} lots")
        asset, amount = reservation(market, order)
        kind = engine._by_market[order.market].kinds[order.side][order.type]
        engine._orders[order.order_id] = (order.user, kind, order.price, order.remaining, amount)
        reserved[order.user, asset] = reserved.get((order.user, asset), 0) + amount
    held: dict[str, int] = {}
    for (user, asset), total in sorted(holdings.items()):
        if user != fee_account and user % shard_count != shard:
            raise ValueError(f"user {user} is not of shard {shard}")
        hold = reserved.pop((user, asset), 0)
        if total < hold:
            raise ValueError(f"user {user} holds {total} {asset} but its open orders reserve {hold}")
        if total:
            engine._holders(asset)[user] = Balance(total - hold, hold)
            held[asset] = held.get(asset, 0) + total
    if reserved:
        raise ValueError(f"open orders reserve funds of users who hold nothing: {sorted(reserved)}")
    engine._deposited = {a: v for a, v in deposited.items() if v}
    engine._withdrawn = {a: v for a, v in withdrawn.items() if v}
    net_in = {}
    for asset in sorted(held.keys() | deposited.keys() | withdrawn.keys()):
        flow = held.get(asset, 0) - deposited.get(asset, 0) + withdrawn.get(asset, 0)
        if flow:
            net_in[asset] = flow
    if shard_count == 1 and net_in:
        raise ValueError(f"one shard, yet holdings differ from deposits − withdrawals: {net_in}")
    engine._net_in = net_in
    engine.check_invariants()
    return engine
