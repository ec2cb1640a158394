"""Market data over Redis pub/sub: the wire format, and the sequence check of an ``investo ws`` node.

``investo marketdata`` (:mod:`investo.cluster.mdpublisher`) builds every public stream
message once and PUBLISHes them; each ``investo ws`` node (:mod:`investo.cluster.wsnode`)
hands them to its clients. Channels (``<ns>`` is the cluster's namespace):

* ``<ns>:md:<SYMBOL>``: one :class:`Message` per publisher flush for that market:
  ``(epoch, seq, frames, snapshot)``. ``seq`` counts the market's messages (+1 each,
  from 1 per epoch); ``epoch`` numbers publisher leases (a new active publisher has a
  higher one). A frame is ``(streams, json, depth)``: the message's JSON, once, for the
  streams that carry it (``x@depth`` and ``x@depth@100ms`` share one) and, for a depth
  diff, its ids and absolute levels as integers (ticks, lots). A snapshot is the whole
  book at depth id ``last`` (the ``u`` of the market's last diff): it travels *in* the
  market's channel, so it is ordered exactly with the diffs;
* ``<ns>:md:!all``: ``!miniTicker@arr`` (its own seq; no book);
* ``<ns>:md:heartbeat``: every ``heartbeat_s`` a :class:`Heartbeat`: the epoch and each
  market's last seq, so a node learns of messages it never received even when the
  market goes quiet;
* ``<ns>:md:resync``: a node asks for a snapshot (a symbol, or ``*`` for all).

The sequence check (:class:`MarketFeed`, one per market in each node)
----------------------------------------------------------------------
A node keeps each market's book (from snapshots and the diffs it served) and ``last``,
the ``u`` of the last diff its clients got. A message from an older epoch is ignored
(a publisher that lost its lease). A message whose ``(epoch, seq)`` does not follow the
previous one, a heartbeat that says more was published than received, or a diff whose
``U`` is not ``last + 1`` is a **gap**: the market becomes *stale*, the node asks for a
snapshot, and no depth diff reaches any client until one arrives (trades, candles,
tickers and the partial books, complete in themselves, still flow). The snapshot
(id ``L``) ends it: the node sends its clients one **bridging diff** ``U = last + 1``,
``u = L`` holding every level of the old and the new book (absolute lots, 0 for a
level that is gone), so a client that held the book at ``last`` holds the book at
``L`` and the next diff (``U = L + 1``) follows as usual: ``U = previous u + 1`` never
breaks, and Binance clients (ccxt.pro) stay correct without reconnecting. If the ids
cannot be bridged (a snapshot at ``last`` that disagrees with the node's book: a bug),
the market's depth subscribers are disconnected, so they resync from ``/api/v3/depth``;
a wrong book is never served. The ids are the matching engine's ``seq``, which the
gateway's replicas answer as ``lastUpdateId`` of ``/api/v3/depth``: REST snapshot and
stream agree as in the embedded mode.

A periodic snapshot at an id the node already holds is compared with its book (a free
self-check). Costs per message: one msgpack decode per node; per diff O(levels) dict
updates; a bridge is O(book levels), once per gap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgspec
import orjson

from investo.marketdata.hub import Hub
from investo.marketdata.service import SPEEDS
from investo.markets import MarketSpec

log = logging.getLogger(__name__)

ALL_MARKETS = "!all"
Levels = list[tuple[int, int]]


def market_channel(namespace: str, symbol: str) -> str:
    return f"{namespace}:md:{symbol}"


def heartbeat_channel(namespace: str) -> str:
    return f"{namespace}:md:heartbeat"


def resync_channel(namespace: str) -> str:
    return f"{namespace}:md:resync"


def lease_key(namespace: str) -> str:
    return f"{namespace}:md:lease"


class DepthPart(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A depth diff's ids and absolute (price ticks, lots) levels, best first; lots 0: gone."""

    first: int
    last: int
    bids: Levels
    asks: Levels


class Frame(msgspec.Struct, frozen=True, array_like=True, gc=False):
    streams: list[str]
    data: bytes
    depth: DepthPart | None = None


class Snapshot(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """The whole book at depth id ``last``."""

    last: int
    bids: Levels
    asks: Levels


class Message(msgspec.Struct, frozen=True, array_like=True, gc=False):
    epoch: int
    seq: int
    frames: list[Frame]
    snapshot: Snapshot | None = None


class Heartbeat(msgspec.Struct, frozen=True, array_like=True, gc=False):
    epoch: int
    seqs: dict[str, int]


ENCODER = msgspec.msgpack.Encoder()
MESSAGE_DECODER = msgspec.msgpack.Decoder(Message)
HEARTBEAT_DECODER = msgspec.msgpack.Decoder(Heartbeat)


class MarketFeed:
    """One market's messages in one node: the sequence check and the book (module docstring).

    ``request(symbol)`` asks for a snapshot (must not block); ``drop_depth(streams)``
    disconnects the subscribers of those streams (the last resort).
    """

    def __init__(
        self,
        spec: MarketSpec | None,
        name: str,
        hub: Hub,
        request: Callable[[str], None],
        drop_depth: Callable[[list[str]], None] | None = None,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.spec = spec
        self.name = name  # the symbol, or ALL_MARKETS
        self.hub = hub
        self.request = request
        self.drop_depth = drop_depth
        self.clock_ms = clock_ms or (lambda: 0)
        s = name.lower()
        self.depth_streams = [f"{s}@depth{speed}" for speed in SPEEDS]
        self.epoch = -1
        self.seq = 0
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.last: int | None = None  # u of the last diff served (None: no book yet)
        self.stale = spec is not None  # a market needs a snapshot first; !all has no book
        self.gaps = 0
        self.resyncs = 0
        self.hard_resyncs = 0

    @property
    def ready(self) -> bool:
        return not self.stale

    # ------------------------------------------------------------------ input

    def on_message(self, message: Message) -> None:
        if message.epoch < self.epoch:
            return  # a publisher that lost its lease
        if self.epoch >= 0 and (message.epoch != self.epoch or message.seq != self.seq + 1):
            self._gap(f"message {message.epoch}/{message.seq} after {self.epoch}/{self.seq}")
        elif self.epoch < 0 and self.stale:
            self.request(self.name)
        self.epoch, self.seq = message.epoch, message.seq
        for frame in message.frames:
            self._frame(frame)
        if message.snapshot is not None:
            self._snapshot(message.snapshot)

    def on_heartbeat(self, epoch: int, seq: int) -> None:
        """The publisher's last seq: anything beyond ours was published and lost on the way."""
        if epoch < self.epoch or (epoch == self.epoch and seq <= self.seq):
            return
        if epoch > self.epoch and seq == 0:
            return  # a new publisher that has sent nothing yet: nothing missed
        self._gap(f"heartbeat {epoch}/{seq}, received {self.epoch}/{self.seq}")
        self.epoch, self.seq = epoch, seq

    def lost_connection(self) -> None:
        """Messages may have been missed while the subscription was down."""
        if self.spec is not None:
            self._gap("the pub/sub connection was lost")

    # ------------------------------------------------------------------ the check

    def _gap(self, why: str) -> None:
        self.gaps += 1
        if self.spec is None:
            log.warning("%s: %s (missed messages are not recovered)", self.name, why)
            return
        if not self.stale:
            log.warning("%s: gap (%s): depth paused until a snapshot", self.name, why)
            self.stale = True
        self.request(self.name)

    def _frame(self, frame: Frame) -> None:
        depth = frame.depth
        if depth is None:
            self.hub.publish_json_many(frame.streams, frame.data)
            return
        if self.stale or self.last is None:
            return  # the snapshot that ends the gap covers it
        if depth.first != self.last + 1:
            self._gap(f"diff U={depth.first} after u={self.last}")
            return
        _apply(self.bids, depth.bids)
        _apply(self.asks, depth.asks)
        self.last = depth.last
        self.hub.publish_json_many(frame.streams, frame.data)

    def _snapshot(self, snap: Snapshot) -> None:
        bids, asks = dict(snap.bids), dict(snap.asks)
        last = self.last
        if last is None:
            self._take(snap, bids, asks)
            return
        same = bids == self.bids and asks == self.asks
        if not self.stale:
            if snap.last == last and same:
                return
            if snap.last < last:
                return  # older than what we hold (cannot happen within an epoch)
            if snap.last == last:
                log.error("%s: snapshot at %d disagrees with the book served", self.name, last)
        if snap.last > last:
            self._bridge(last + 1, snap.last, bids, asks)
        elif not same:
            self._hard_resync()
        self.resyncs += 1
        self._take(snap, bids, asks)
        log.info("%s: resynced from a snapshot at %d", self.name, snap.last)

    def _take(self, snap: Snapshot, bids: dict[int, int], asks: dict[int, int]) -> None:
        self.bids, self.asks, self.last = bids, asks, snap.last
        self.stale = False

    def _bridge(self, first: int, last: int, bids: dict[int, int], asks: dict[int, int]) -> None:
        """One diff from the book served to the snapshot's: every level of either, absolute lots."""
        spec = self.spec
        assert spec is not None
        fp, fq = spec.format_price, spec.format_qty
        bid_prices = sorted(self.bids.keys() | bids.keys(), reverse=True)
        ask_prices = sorted(self.asks.keys() | asks.keys())
        payload = {
            "e": "depthUpdate",
            "E": self.clock_ms(),
            "s": spec.symbol,
            "U": first,
            "u": last,
            "b": [[fp(p), fq(bids.get(p, 0))] for p in bid_prices],
            "a": [[fp(p), fq(asks.get(p, 0))] for p in ask_prices],
        }
        self.hub.publish_json_many(self.depth_streams, orjson.dumps(payload))

    def _hard_resync(self) -> None:
        self.hard_resyncs += 1
        log.error("%s: cannot bridge the depth ids: disconnecting its depth subscribers", self.name)
        if self.drop_depth is not None:
            self.drop_depth(self.depth_streams)


def _apply(book: dict[int, int], levels: Levels) -> None:
    for price, lots in levels:
        if lots:
            book[price] = lots
        else:
            book.pop(price, None)
