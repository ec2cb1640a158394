"""The distributed mode's pure parts: shard steps, settlement routing, the shard map."""

from __future__ import annotations

import pytest

from investo.cluster.records import ENCODER, ENVELOPE_DECODER, Envelope, Settle
from investo.cluster.shards import AccountsShard, MatchingShard, settlements
from investo.cluster.topology import ClusterConfigError, Topology, log_url, spread
from investo.core.messages import (
    CancelAll,
    Deposit,
    OrderAccepted,
    OrderFilled,
    OrderRejected,
    OrderType,
    PlaceOrder,
    RejectCode,
    Side,
    StpMode,
    TimeInForce,
    TradeExecuted,
)

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
maker_fee_bps = 10
taker_fee_bps = 20
"""


def _topology(accounts_shards: int = 2) -> Topology:
    return Topology("t", TOML, {"AINR": 0, "BINR": 1}, accounts_shards)


def _trade(maker_user: int, taker_user: int) -> TradeExecuted:
    return TradeExecuted(1, 5, "AINR", 1, 100, 1, Side.BUY, 10, maker_user, 11, taker_user, 0, 0)


def test_a_trade_between_users_of_one_shard_is_settled_there_once() -> None:
    forwards = settlements([_trade(2, 4)], accounts_shards=2)
    assert [(role, shard, len(env.record.events)) for role, shard, env in forwards] == [("accounts", 0, 1)]


def test_a_trade_across_shards_goes_to_both_in_shard_order() -> None:
    events = [_trade(3, 4), OrderFilled(2, 5, "AINR", 10, 3)]
    forwards = settlements(events, accounts_shards=2)
    assert [shard for _, shard, _ in forwards] == [0, 1]
    assert isinstance(forwards[1][2].record, Settle)
    assert forwards[1][2].record.events == events  # user 3's shard gets the trade and its fill
    assert forwards[0][2].record.events == [events[0]]


def test_an_order_is_forwarded_to_its_markets_matching_shard_with_the_reply_address() -> None:
    shard = AccountsShard(_topology(), 0)
    shard.step(Envelope(Deposit(1, 2, "INR", 1_000_000)))
    order = PlaceOrder(2, 2, "BINR", Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 100, 1, client_order_id="x")
    step = shard.step(Envelope(order, "reply:g", 7))
    assert step.reply_to == ""  # matching answers, not accounts
    # recorded by the matching shard's output, not the accounts shard's; replicas still see it
    assert not step.published and isinstance(step.output[0], OrderAccepted)
    [(role, target, forward)] = step.forwards
    assert (role, target, forward.reply, forward.corr) == ("matching", 1, "reply:g", 7)
    assert isinstance(forward.record, OrderAccepted)


def test_an_order_for_a_user_of_another_shard_is_refused_and_changes_nothing() -> None:
    shard = AccountsShard(_topology(), 0)
    before = shard.state_hash()
    order = PlaceOrder(2, 3, "AINR", Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 100, 1)
    step = shard.step(Envelope(order, "reply:g", 1))
    assert (step.reply_to, step.corr) == ("reply:g", 1) and isinstance(step.output[0], OrderRejected)
    assert shard.state_hash() == before


def test_a_matching_shard_refuses_an_order_for_a_market_it_does_not_trade() -> None:
    shard = MatchingShard(_topology(), 0)
    accepted = OrderAccepted(
        1, "BINR", 11, 3, Side.SELL, OrderType.LIMIT, TimeInForce.GTC, 100, 1, 0, "", StpMode.EXPIRE_MAKER
    )
    step = shard.step(Envelope(accepted, "reply:g", 2))
    rejected = step.output[-1]
    assert isinstance(rejected, OrderRejected) and rejected.code == RejectCode.UNKNOWN_MARKET
    assert [shard for _, shard, _ in step.forwards] == [1]  # its accounts shard releases the funds


def test_a_cancel_for_a_market_elsewhere_is_rejected() -> None:
    step = MatchingShard(_topology(), 0).step(Envelope(CancelAll(1, 2, "BINR"), "r", 3))
    assert (step.reply_to, step.corr) == ("r", 3) and type(step.output[0]).__name__ == "CancelRejected"


def test_envelopes_round_trip() -> None:
    envelope = Envelope(Settle([_trade(1, 2)]), "r", 9)
    assert ENVELOPE_DECODER.decode(ENCODER.encode(envelope)) == envelope


def test_the_shard_map_must_cover_every_market_with_dense_shards() -> None:
    with pytest.raises(ClusterConfigError, match="without a shard"):
        Topology("t", TOML, {"AINR": 0}, 1)
    with pytest.raises(ClusterConfigError, match="without gaps"):
        Topology("t", TOML, {"AINR": 0, "BINR": 2}, 1)
    with pytest.raises(ClusterConfigError, match="at least 1"):
        Topology("t", TOML, {"AINR": 0, "BINR": 0}, 0)
    topology = Topology("t", TOML, spread(_topology().markets, 2), 2)
    assert topology.markets_of(0) == ["AINR"] and topology.matching_shards == 2
    assert Topology.decode("t", topology.encode()) == topology


def test_log_urls_keep_the_servers_options_and_set_the_prefix() -> None:
    url = log_url("redis://h:1/0?socket_timeout=3", "ns:matching:1")
    assert url == "redis://h:1/0?socket_timeout=3&prefix=ns%3Amatching%3A1"
