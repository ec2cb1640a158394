"""What the distributed mode's streams carry, and their codecs.

Every engine shard reads one input log (a :class:`~investo.log.redis.RedisLog`) of
:class:`Envelope` entries and writes one output log of :class:`Output` entries:

* an accounts shard's input holds the gateways' ``Deposit``, ``Withdraw`` and
  ``PlaceOrder`` for its users, and the :class:`Settle` records the matching shards
  forward to it;
* a matching shard's input holds the ``OrderAccepted`` the accounts shards forward
  and the gateways' ``CancelOrder`` / ``CancelAll`` for its markets.

An envelope names who waits for the answer (``reply``: a gateway's reply channel,
``corr``: the request's number on it); the answer is one :class:`Reply`. A forwarded
record keeps the envelope's ``reply`` and ``corr``, so the shard that finishes a
command answers the gateway that sent it. A shard sends one message per gateway per
batch: a list of replies.

Invariants: the encodings are canonical msgpack (same value, same bytes) and every
record type is tagged, so any entry decodes to exactly one type. Costs: one msgpack
encode or decode per entry.
"""

from __future__ import annotations

import msgspec

from investo.core.messages import (
    CancelAll,
    CancelOrder,
    Deposit,
    Event,
    MatchingEvent,
    OrderAccepted,
    PlaceOrder,
    Withdraw,
)


class Settle(msgspec.Struct, frozen=True, gc=False, tag=True, tag_field="kind"):
    """Matching events for one accounts shard to settle, in the order matching emitted them."""

    events: list[MatchingEvent]


InputRecord = Deposit | Withdraw | PlaceOrder | OrderAccepted | CancelOrder | CancelAll | Settle


class Envelope(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One input log entry: a record and who waits for its answer ("" / 0: nobody)."""

    record: InputRecord
    reply: str = ""
    corr: int = 0


class Output(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One output log entry: the events one input entry caused (never empty)."""

    input_offset: int
    events: list[Event]


class Reply(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """A command's answer, published on the gateway's reply channel."""

    corr: int
    events: list[Event]


ENCODER = msgspec.msgpack.Encoder()
ENVELOPE_DECODER = msgspec.msgpack.Decoder(Envelope)
OUTPUT_DECODER = msgspec.msgpack.Decoder(Output)
REPLIES_DECODER = msgspec.msgpack.Decoder(list[Reply])
"""One message on a reply channel: every answer one engine batch has for that gateway."""
