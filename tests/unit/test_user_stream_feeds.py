"""The user stream built from a cluster's shard steps equals the embedded one, message for message.

The same commands run through the embedded :class:`Exchange` (``UserStreams.on_applied``) and
through accounts and matching shards stepped in process, routed as the logs would route
them (``UserStreams.on_order_events`` / ``on_account_steps`` via the gateway's feed). Every
user's execution reports and balance updates are identical, and the positions reach the
same final balances, although in the cluster they come from the accounts shards, after
their settlement.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import orjson

from investo.cluster.gateway import feed_user_streams
from investo.cluster.records import Envelope
from investo.cluster.shards import AccountsShard, MatchingShard, Shard
from investo.cluster.topology import Topology
from investo.core.exchange import Exchange
from investo.core.messages import (
    CancelOrder,
    Command,
    Deposit,
    OrderType,
    PlaceOrder,
    Side,
    StpMode,
    TimeInForce,
    Withdraw,
)
from investo.host import Applied
from investo.marketdata.hub import Hub
from investo.marketdata.user import ListenKeys, UserStreams

TOML = "[assets.INR]\ndecimals = 2\n" + "".join(
    f'\n[assets.{b}]\ndecimals = 0\n\n[markets.{b}INR]\nbase = "{b}"\nquote = "INR"\n'
    'tick_size = "0.05"\nlot_size = "1"\nmaker_fee_bps = 10\ntaker_fee_bps = 20\n'
    for b in ("A", "B")
)
TOPOLOGY = Topology("t", TOML, {"AINR": 0, "BINR": 1}, 2)
USERS = (1, 2, 3, 4)  # two on each accounts shard


class Inbox:
    combined = False

    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []

    def push(self, frame: bytes, payload: bytes) -> None:
        self.got.append(orjson.loads(payload))


def _listening(streams: UserStreams, keys: ListenKeys, hub: Hub) -> dict[int, Inbox]:
    inboxes = {}
    for user in USERS:
        inboxes[user] = Inbox()
        hub.subscribe(keys.create(user), inboxes[user])
    return inboxes


def _order(user: int, market: str, side: Side, price: int, qty: int, cid: str, **kw: Any) -> PlaceOrder:
    kind = kw.pop("type", OrderType.LIMIT)
    tif = kw.pop("tif", TimeInForce.GTC)
    return PlaceOrder(0, user, market, side, kind, tif, price, qty, client_order_id=cid, **kw)


def _commands() -> list[Command]:
    commands: list[Command] = []
    for user in USERS:
        commands += [
            Deposit(1, user, "INR", 50_000_00),
            Deposit(1, user, "A", 100),
            Deposit(1, user, "B", 100),
        ]
    commands += [
        _order(1, "AINR", Side.SELL, 2000, 5, "s1"),
        _order(2, "AINR", Side.SELL, 2001, 5, "s2"),
        _order(3, "AINR", Side.BUY, 2001, 7, "b3"),  # crosses users on both shards
        _order(4, "BINR", Side.BUY, 1990, 4, "b4"),
        _order(1, "BINR", Side.SELL, 0, 2, "m1", type=OrderType.MARKET, tif=TimeInForce.IOC),
        _order(2, "BINR", Side.BUY, 0, 0, "q2", type=OrderType.MARKET, tif=TimeInForce.IOC, quote_qty=300_00),
        _order(3, "BINR", Side.BUY, 1990, 10_000, "poor"),  # refused by the accounts shard
        _order(4, "BINR", Side.SELL, 1980, 1, "lm", type=OrderType.LIMIT_MAKER),  # refused by matching
        _order(3, "AINR", Side.SELL, 2001, 1, "stp", stp=StpMode.EXPIRE_TAKER),  # self trade: expires
        CancelOrder(0, 2, "AINR", client_order_id="s2"),
        CancelOrder(0, 4, "BINR", client_order_id="nope"),
        Withdraw(0, 1, "INR", 10_00),
        Withdraw(0, 1, "INR", 10**12),  # refused
    ]
    return [
        c.__class__(**{**{f: getattr(c, f) for f in c.__struct_fields__}, "ts": 1000 + n})
        for n, c in enumerate(commands)
    ]


def _embedded(commands: list[Command]) -> dict[int, Inbox]:
    exchange = Exchange({s: spec.core for s, spec in TOPOLOGY.markets.items()})
    keys, hub = ListenKeys(lambda: 0), Hub()
    streams = UserStreams(TOPOLOGY.markets, lambda: 0, hub, keys)
    streams.attach(lambda: exchange)
    inboxes = _listening(streams, keys, hub)
    for offset, command in enumerate(commands, 1):
        streams.on_applied([Applied(offset, command, exchange.apply(command))])
    return inboxes


def _cluster(commands: list[Command]) -> dict[int, Inbox]:
    shards: dict[tuple[str, int], Shard] = {
        **{("accounts", k): AccountsShard(TOPOLOGY, k) for k in range(2)},
        **{("matching", k): MatchingShard(TOPOLOGY, k) for k in range(2)},
    }
    keys, hub = ListenKeys(lambda: 0), Hub()
    streams = UserStreams(TOPOLOGY.markets, lambda: 0, hub, keys)
    inboxes = _listening(streams, keys, hub)
    offsets = dict.fromkeys(shards, 0)
    for command in commands:
        if isinstance(command, CancelOrder):
            queue = deque([(("matching", TOPOLOGY.matching_shard(command.market)), Envelope(command))])
        else:
            queue = deque([(("accounts", TOPOLOGY.accounts_shard(command.user)), Envelope(command))])
        while queue:  # the logs' routing, one entry at a time
            key, envelope = queue.popleft()
            shard = shards[key]
            step = shard.step(envelope)
            offsets[key] += 1
            feed_user_streams(streams, shard, [(offsets[key], envelope, step)])
            queue.extend(((role, number), forward) for role, number, forward in step.forwards)
    return inboxes


def _of(inbox: Inbox, kind: str) -> list[dict[str, Any]]:
    return [m for m in inbox.got if m["e"] == kind]


def _without_id(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k != "i"}


def _final_positions(inbox: Inbox) -> dict[str, tuple[str, str]]:
    final: dict[str, tuple[str, str]] = {}
    for message in _of(inbox, "outboundAccountPosition"):
        for balance in message["B"]:
            final[balance["a"]] = (balance["f"], balance["l"])
    return final


def test_the_cluster_feeds_give_the_embedded_user_stream() -> None:
    commands = _commands()
    embedded, cluster = _embedded(commands), _cluster(commands)
    kinds = {m["x"] for inbox in embedded.values() for m in _of(inbox, "executionReport")}
    assert kinds == {"NEW", "TRADE", "CANCELED", "EXPIRED", "REJECTED"}, "the flow should cover every report"
    for user in USERS:
        # order ids differ (a sharded accounts engine numbers them by shard): everything else is equal
        reports = [_without_id(m) for m in _of(cluster[user], "executionReport")]
        assert reports == [_without_id(m) for m in _of(embedded[user], "executionReport")], user
        assert _of(cluster[user], "balanceUpdate") == _of(embedded[user], "balanceUpdate"), user
        assert _final_positions(cluster[user]) == _final_positions(embedded[user]), user
        assert _final_positions(cluster[user]), user
