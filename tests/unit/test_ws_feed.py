"""The sequence check of an ``investo ws`` node (:class:`investo.cluster.wsfeed.MarketFeed`), on its own.

Messages are built by hand; a recording subscriber on a real :class:`Hub` is the client.
Evidence: diffs that follow each other are served and kept in the node's book; a seq gap,
an epoch change, a diff that does not follow and a heartbeat ahead all pause depth and ask
for a snapshot; the snapshot bridges the clients with one diff ``U = last + 1``, ``u = L``
holding the old and new levels; an older epoch is ignored; a snapshot that disagrees at an
id already served disconnects the depth subscribers; other streams flow while stale.
"""

from __future__ import annotations

from typing import Any

import orjson

from cluster_fixtures import MARKETS_TOML
from investo.cluster.wsfeed import (
    ENCODER,
    HEARTBEAT_DECODER,
    MESSAGE_DECODER,
    DepthPart,
    Frame,
    Heartbeat,
    MarketFeed,
    Message,
    Snapshot,
)
from investo.marketdata.hub import Hub
from investo.markets import parse_config

SPEC = parse_config(MARKETS_TOML, "test").markets["AINR"]
DEPTH = ["ainr@depth", "ainr@depth@100ms"]


class Client:
    combined = False

    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []

    def push(self, frame: bytes, payload: bytes) -> None:
        self.got.append(orjson.loads(payload))


class Setup:
    def __init__(self) -> None:
        self.hub = Hub()
        self.client = Client()
        for stream in ("ainr@depth", "ainr@trade"):
            self.hub.subscribe(stream, self.client)
        self.asked: list[str] = []
        self.dropped: list[list[str]] = []
        self.feed = MarketFeed(SPEC, "AINR", self.hub, self.asked.append, self.dropped.append)

    def diffs(self) -> list[dict[str, Any]]:
        return [m for m in self.client.got if m.get("e") == "depthUpdate"]


def level(price: int, lots: int) -> list[str]:
    return [SPEC.format_price(price), SPEC.format_qty(lots)]


def diff(first: int, last: int, bids: list[tuple[int, int]], asks: list[tuple[int, int]]) -> Frame:
    payload = {"e": "depthUpdate", "s": "AINR", "U": first, "u": last, "b": bids, "a": asks}
    return Frame(DEPTH, orjson.dumps(payload), DepthPart(first, last, bids, asks))


def trade(n: int) -> Frame:
    return Frame(["ainr@trade"], orjson.dumps({"e": "trade", "t": n}))


def msg(epoch: int, seq: int, *frames: Frame, snapshot: Snapshot | None = None) -> Message:
    return MESSAGE_DECODER.decode(ENCODER.encode(Message(epoch, seq, list(frames), snapshot)))


def synced() -> Setup:
    s = Setup()
    s.feed.on_message(msg(1, 1, snapshot=Snapshot(10, [(2000, 5)], [(2010, 3)])))
    assert s.feed.ready and s.feed.last == 10
    s.asked.clear()
    return s


def test_a_market_waits_for_its_first_snapshot_and_then_serves_diffs_in_order() -> None:
    s = Setup()
    assert not s.feed.ready
    s.feed.on_message(msg(1, 1, diff(5, 6, [(2000, 1)], [])))  # before any snapshot: held back
    assert s.diffs() == [] and s.asked == ["AINR"]
    s.feed.on_message(msg(1, 2, snapshot=Snapshot(10, [(2000, 5)], [])))
    s.feed.on_message(msg(1, 3, diff(11, 12, [(1995, 2)], [(2010, 4)]), trade(1)))
    s.feed.on_message(msg(1, 4, diff(13, 13, [(2000, 0)], [])))
    assert [(d["U"], d["u"]) for d in s.diffs()] == [(11, 12), (13, 13)]
    assert s.feed.bids == {1995: 2} and s.feed.asks == {2010: 4} and s.feed.last == 13
    assert s.feed.gaps == 0 and s.feed.ready


def test_a_lost_message_pauses_depth_and_the_snapshot_bridges_the_clients() -> None:
    s = synced()
    s.feed.on_message(msg(1, 3, diff(13, 14, [(1990, 7)], []), trade(2)))  # seq 2 never came
    assert not s.feed.ready and s.feed.gaps == 1 and s.asked == ["AINR"]
    assert s.diffs() == []  # no diff after a hole
    assert [m["t"] for m in s.client.got if m.get("e") == "trade"] == [2]  # trades still flow
    s.feed.on_message(msg(1, 4, snapshot=Snapshot(14, [(1990, 7), (2000, 4)], [])))
    (bridge,) = s.diffs()
    assert (bridge["U"], bridge["u"]) == (11, 14)
    assert bridge["b"] == [level(2000, 4), level(1990, 7)]  # every level, absolute
    assert bridge["a"] == [level(2010, 0)]  # gone
    assert s.feed.ready and s.feed.resyncs == 1
    s.feed.on_message(msg(1, 5, diff(15, 15, [(2000, 0)], [])))
    assert [(d["U"], d["u"]) for d in s.diffs()] == [(11, 14), (15, 15)]
    assert s.feed.bids == {1990: 7}


def test_a_diff_that_does_not_follow_is_a_gap_even_in_sequence() -> None:
    s = synced()
    s.feed.on_message(msg(1, 2, diff(12, 12, [(2000, 1)], [])))  # U should be 11
    assert not s.feed.ready and s.diffs() == [] and s.asked == ["AINR"]


def test_a_heartbeat_ahead_of_what_was_received_is_a_gap() -> None:
    s = synced()
    s.feed.on_heartbeat(1, 1)
    assert s.feed.ready
    s.feed.on_heartbeat(1, 2)  # message 2 was published and never arrived
    assert not s.feed.ready and s.asked == ["AINR"]
    s.feed.on_message(msg(1, 3, snapshot=Snapshot(12, [(2000, 5)], [(2010, 3)])))
    assert s.feed.ready and s.feed.gaps == 1  # seq 3 follows the heartbeat's 2
    assert [(d["U"], d["u"], d["b"], d["a"]) for d in s.diffs()] == [
        (11, 12, [level(2000, 5)], [level(2010, 3)])
    ]


def test_a_new_epoch_resyncs_and_an_older_one_is_ignored() -> None:
    s = synced()
    s.feed.on_message(msg(2, 1, snapshot=Snapshot(10, [(2000, 5)], [(2010, 3)])))
    assert s.feed.ready and s.feed.epoch == 2 and s.diffs() == []  # the same book: nothing to send
    s.feed.on_message(msg(1, 2, diff(11, 11, [(2000, 9)], [])))  # the old publisher, fenced
    assert s.feed.bids == {2000: 5} and s.diffs() == []
    s.feed.on_heartbeat(1, 99)
    assert s.feed.ready


def test_a_snapshot_that_contradicts_the_served_book_disconnects_depth_clients() -> None:
    s = synced()
    s.feed.on_message(msg(1, 2, snapshot=Snapshot(10, [(2000, 6)], [(2010, 3)])))
    assert s.dropped == [["ainr@depth", "ainr@depth@100ms", "ainr@depth@1000ms"]]
    assert s.feed.bids == {2000: 6} and s.feed.hard_resyncs == 1


def test_a_periodic_snapshot_of_the_same_book_changes_nothing() -> None:
    s = synced()
    s.feed.on_message(msg(1, 2, snapshot=Snapshot(10, [(2000, 5)], [(2010, 3)])))
    assert s.diffs() == [] and s.dropped == [] and s.feed.resyncs == 0


def test_the_wire_round_trips() -> None:
    beat = Heartbeat(3, {"AINR": 7, "!all": 2})
    assert HEARTBEAT_DECODER.decode(ENCODER.encode(beat)) == beat
    m = Message(1, 2, [diff(1, 2, [(5, 1)], [])], Snapshot(2, [(5, 1)], []))
    assert MESSAGE_DECODER.decode(ENCODER.encode(m)) == m
