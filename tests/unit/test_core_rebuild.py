"""Engines rebuilt from history (investo.core.rebuild) equal the engines that made the history.

A tiny in-memory cluster (two accounts shards, two matching shards, forwards
delivered in order) runs random commands; the test then keeps only what the SQL
history would hold (deposits, withdrawals, trades with their fees, the orders still
open and the order they rested in, the highest event seq per stream) and rebuilds
every shard from it: the rebuilt shards have the state hashes of the live ones.
"""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from investo.cluster.records import Envelope
from investo.cluster.shards import AccountsShard, MatchingShard
from investo.cluster.topology import Role, Topology
from investo.core.markets import Market
from investo.core.messages import (
    CancelOrder,
    Deposit,
    Deposited,
    Event,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderType,
    PlaceOrder,
    Side,
    StpMode,
    TimeInForce,
    TradeExecuted,
    Withdraw,
    Withdrawn,
)
from investo.core.rebuild import RestingOrder, rebuild_accounts, rebuild_matching

TOML = """
[assets.INR]
decimals = 2
[assets.A]
decimals = 0
[assets.B]
decimals = 0
[markets.AINR]
base = "A"
quote = "INR"
tick_size = "0.05"
lot_size = "1"
maker_fee_bps = 10
taker_fee_bps = 20
[markets.BINR]
base = "B"
quote = "INR"
tick_size = "0.05"
lot_size = "1"
maker_fee_bps = 5
taker_fee_bps = 30
"""
N = 2  # accounts shards


class MiniCluster:
    """Shards stepped in delivery order; every output kept, as the DB writer would see it."""

    def __init__(self) -> None:
        self.topology = Topology("t", TOML, {"AINR": 0, "BINR": 1}, N)
        self.accounts = [AccountsShard(self.topology, k) for k in range(N)]
        self.matching = [MatchingShard(self.topology, m) for m in range(2)]
        self.outputs: dict[tuple[Role, int], list[Event]] = {}
        self.ts = 0

    def send(self, role: Role, shard: int, record: object) -> None:
        queue: deque[tuple[Role, int, Envelope]] = deque([(role, shard, Envelope(record))])  # type: ignore[arg-type]
        while queue:
            role, shard, envelope = queue.popleft()
            target = self.accounts[shard] if role == "accounts" else self.matching[shard]
            step = target.step(envelope)
            self.outputs.setdefault((role, shard), []).extend(step.output)
            queue.extend(step.forwards)

    def command(self, record: object, user: int, market: str | None = None) -> None:
        if market is not None and isinstance(record, CancelOrder):
            self.send("matching", self.topology.matching[market], record)
        else:
            self.send("accounts", user % N, record)


def history_rebuild(cluster: MiniCluster) -> tuple[list[str], list[str]]:
    """Rebuild every shard from what SQL would hold; return (accounts hashes, matching hashes)."""
    markets: dict[str, Market] = {s: spec.core for s, spec in cluster.topology.markets.items()}
    holdings: dict[tuple[int, str], int] = {}
    deposited: list[dict[str, int]] = [{} for _ in range(N)]
    withdrawn: list[dict[str, int]] = [{} for _ in range(N)]
    accounts_seq = [0] * N
    market_seq: dict[str, int] = {}
    last_trade: dict[str, int] = {}
    accepted: dict[int, tuple[int, OrderAccepted]] = {}  # order id -> (arrival, record)
    executed: dict[int, int] = {}
    finished: set[int] = set()

    def credit(user: int, asset: str, delta: int) -> None:
        holdings[user, asset] = holdings.get((user, asset), 0) + delta

    for k in range(N):
        for event in cluster.outputs.get(("accounts", k), []):
            if isinstance(event, Deposited | Withdrawn):
                sign = 1 if isinstance(event, Deposited) else -1
                credit(event.user, event.asset, sign * event.amount)
                flows = deposited[k] if sign > 0 else withdrawn[k]
                flows[event.asset] = flows.get(event.asset, 0) + event.amount
            seq = getattr(event, "seq", 0)
            accounts_seq[k] = max(accounts_seq[k], seq)
    arrival = 0
    fees: dict[tuple[int, str], int] = {}  # (shard, asset) -> the fee account's copy
    for m in range(2):
        for event in cluster.outputs.get(("matching", m), []):
            arrival += 1
            seq = getattr(event, "seq", 0)
            if seq:
                market_seq[event.market] = max(market_seq.get(event.market, 0), seq)  # type: ignore[attr-defined]
            if isinstance(event, OrderAccepted):
                accepted[event.order_id] = (arrival, event)
            elif isinstance(event, TradeExecuted):
                market = markets[event.market]
                notional = event.price * event.qty * market.notional_unit
                base = event.qty * market.lot_units
                buyer, seller = (
                    (event.taker_user, event.maker_user)
                    if event.taker_side == Side.BUY
                    else (event.maker_user, event.taker_user)
                )
                buy_fee, sell_fee = (
                    (event.taker_fee, event.maker_fee)
                    if event.taker_side == Side.BUY
                    else (event.maker_fee, event.taker_fee)
                )
                credit(buyer, market.base, base)
                credit(buyer, market.quote, -notional - buy_fee)
                credit(seller, market.base, -base)
                credit(seller, market.quote, notional - sell_fee)
                for user, fee in ((buyer, buy_fee), (seller, sell_fee)):
                    key = (user % N, market.quote)
                    fees[key] = fees.get(key, 0) + fee
                last_trade[event.market] = event.trade_id
                for order_id in (event.maker_order_id, event.taker_order_id):
                    executed[order_id] = executed.get(order_id, 0) + event.qty
            elif isinstance(event, OrderFilled | OrderCanceled | OrderExpired | OrderRejected):
                finished.add(event.order_id)
    open_orders = [
        RestingOrder(
            oid, rec.user, rec.market, rec.side, rec.type, rec.price, rec.qty - executed.get(oid, 0),
            rec.client_order_id,
        )
        for oid, (_, rec) in sorted(accepted.items(), key=lambda item: item[1][0])
        if oid not in finished
    ]  # fmt: skip
    matching_hashes = []
    for m, shard in enumerate(cluster.matching):
        rebuilt = MatchingShard(cluster.topology, m)
        for symbol in rebuilt.engines:
            rebuilt.engines[symbol] = rebuild_matching(
                markets[symbol], market_seq.get(symbol, 0), last_trade.get(symbol, 0),
                [o for o in open_orders if o.market == symbol],
            )  # fmt: skip
        assert rebuilt.state_hash() == shard.state_hash()
        matching_hashes.append(rebuilt.state_hash())
    accounts_hashes = []
    for k in range(N):
        mine = {(u, a): v for (u, a), v in holdings.items() if u % N == k and u != 0}
        for (shard, asset), fee in fees.items():
            if shard == k and fee:
                mine[0, asset] = mine.get((0, asset), 0) + fee
        ids = [oid for oid, (_, rec) in accepted.items() if rec.user % N == k]
        engine = rebuild_accounts(
            markets, k, N,
            holdings=mine,
            orders=[o for o in open_orders if o.user % N == k],
            deposited=deposited[k],
            withdrawn=withdrawn[k],
            seq=accounts_seq[k],
            next_local=max(ids, default=0) // N + 1,
        )  # fmt: skip
        accounts_hashes.append(engine.state_hash())
    return accounts_hashes, matching_hashes


USERS = [1, 2, 3, 4, 5]


def _run(cluster: MiniCluster, commands: list[tuple[int, ...]]) -> None:
    for user in USERS:
        cluster.command(Deposit(0, user, "INR", 10_000_000), user)
        cluster.command(Deposit(0, user, "A", 500), user)
        cluster.command(Deposit(0, user, "B", 500), user)
    for kind, user, market_no, side, price, qty, extra in commands:
        market = ("AINR", "BINR")[market_no]
        if kind == 0:
            tif = (TimeInForce.GTC, TimeInForce.IOC)[extra % 2]
            type_ = (OrderType.LIMIT, OrderType.LIMIT_MAKER)[extra // 2 % 2]
            cid = f"c{extra}" if extra % 5 == 0 else ""
            cluster.command(
                PlaceOrder(0, user, market, Side(side), type_, tif, price, qty, client_order_id=cid,
                           stp=StpMode(extra % 4)),
                user,
            )  # fmt: skip
        elif kind == 1:
            cluster.command(
                PlaceOrder(0, user, market, Side(side), OrderType.MARKET, TimeInForce.IOC, 0, qty), user
            )
        elif kind == 2:
            cluster.command(CancelOrder(0, user, market, extra * N + user % N), user, market)
        else:
            cluster.command(Withdraw(0, user, "INR", qty * 100), user)


COMMANDS = st.lists(
    st.tuples(
        st.sampled_from([0, 0, 0, 1, 2, 3]),
        st.sampled_from(USERS),
        st.integers(0, 1),
        st.integers(0, 1),
        st.integers(1990, 2010),
        st.integers(1, 30),
        st.integers(0, 40),
    ),
    max_size=120,
)


@settings(max_examples=60, deadline=None)
@given(COMMANDS)
def test_shards_rebuilt_from_history_have_the_live_state_hashes(commands: list[tuple[int, ...]]) -> None:
    cluster = MiniCluster()
    _run(cluster, commands)
    accounts, _ = history_rebuild(cluster)
    assert accounts == [shard.state_hash() for shard in cluster.accounts]


def test_a_rebuilt_exchange_trades_on_like_the_live_one() -> None:
    cluster = MiniCluster()
    _run(cluster, [(0, u, u % 2, u % 2, 2000 + u, 10, 1 if u == 3 else 0) for u in USERS])
    history_rebuild(cluster)
    market = cluster.topology.markets["AINR"].core
    live = cluster.matching[0].engines["AINR"]
    rebuilt = rebuild_matching(
        market, live.seq, live.last_trade_id,
        [RestingOrder(o.order_id, o.user, "AINR", o.side, OrderType.LIMIT, o.price, o.qty, o.client_order_id)
         for o in live.open_orders()],
    )  # fmt: skip
    taker = OrderAccepted(
        9, "AINR", 999, 2, Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 2010, 50, 0, "", StpMode.NONE
    )
    assert rebuilt.place(taker) == live.place(taker)
    assert rebuilt.state_hash() == live.state_hash()


def test_impossible_histories_are_refused() -> None:
    markets = {s: spec.core for s, spec in Topology("t", TOML, {"AINR": 0, "BINR": 0}, 1).markets.items()}
    order = RestingOrder(1, 1, "AINR", Side.SELL, OrderType.LIMIT, 2000, 10)
    with pytest.raises(ValueError, match="reserve"):
        rebuild_accounts(
            markets, 0, 1, holdings={(1, "A"): 5}, orders=[order], deposited={"A": 5}, withdrawn={},
            seq=1, next_local=2,
        )  # fmt: skip
    with pytest.raises(ValueError, match="one shard"):
        rebuild_accounts(
            markets, 0, 1, holdings={(1, "A"): 5}, orders=[], deposited={"A": 4}, withdrawn={},
            seq=1, next_local=1,
        )  # fmt: skip
    bid = RestingOrder(2, 2, "AINR", Side.BUY, OrderType.LIMIT, 2000, 1)
    with pytest.raises(ValueError, match="crossed"):
        rebuild_matching(markets["AINR"], 2, 0, [order, bid])
