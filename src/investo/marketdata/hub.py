"""Stream subscriptions and fan-out: each message is serialised and framed once, whatever the audience.

A :class:`Hub` maps a stream name (``tatainr@depth``, ``!miniTicker@arr``) to the
subscribers that want it. :meth:`Hub.publish` serialises a payload with orjson once;
:meth:`Hub.publish_json` takes JSON already serialised (a gateway fed by another
process publishes what it receives as it is). The WebSocket text frame of the message
is built once (:func:`investo.ws.frames.text_frame`; server frames are unmasked, so
the same bytes serve every connection), and, only if a combined-stream subscriber is
listening, the frame of the ``{"stream":…,"data":…}`` wrapper once. Each subscriber
then gets the same ``bytes`` object.

The hub knows nothing of engines: :class:`investo.marketdata.MarketData` publishes
into it inside the engine host, and a gateway process fed market data from elsewhere
would publish into its own hub the same way; the WebSocket gateway
(:mod:`investo.ws.gateway`) subscribes its clients to it.

Invariants
----------
* Publishing never blocks and never awaits: :meth:`Subscriber.push` must be
  non-blocking (the gateway's clients append the frame to what they write at the
  end of the event-loop pass, and drop themselves when their connection holds too
  many unsent bytes), so a slow subscriber cannot slow the engine host (publishing
  runs inside its listener call) or the other subscribers.
* A stream nobody listens to costs a dict lookup: nothing is serialised.
* A subscriber may unsubscribe (or be dropped) while a message is being published:
  the fan-out iterates over a copy of the stream's subscribers.

Costs: ``publish`` is one ``orjson.dumps`` + one frame (a ``struct.pack`` and a
concatenation) + (combined only) one wrapper frame, plus O(subscribers) ``push``
calls. ``publish_many`` (one payload on several streams) serialises and frames once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import orjson

from investo.ws.frames import text_frame


class Subscriber(Protocol):
    """Something that receives stream messages (a WebSocket client)."""

    @property
    def combined(self) -> bool:
        """Whether messages must be wrapped as ``{"stream": name, "data": payload}``."""
        ...

    def push(self, frame: bytes, payload: bytes) -> None:
        """Take one message; must never block or raise.

        ``frame`` is the complete WebSocket text frame to send (of the wrapper when
        :attr:`combined`); ``payload`` is the message's JSON, unwrapped, for a
        subscriber that wraps it its own way. Both are shared with other subscribers.
        """
        ...


class Hub:
    """Stream name → subscribers, with serialise-once publishing (module docstring)."""

    def __init__(self) -> None:
        self._subs: dict[str, dict[Subscriber, None]] = {}
        self.published = 0  # messages framed (one per stream per publish with listeners)
        self.delivered = 0  # messages pushed to subscribers

    def subscribe(self, stream: str, subscriber: Subscriber) -> None:
        self._subs.setdefault(stream, {})[subscriber] = None

    def unsubscribe(self, stream: str, subscriber: Subscriber) -> None:
        subs = self._subs.get(stream)
        if subs is not None:
            subs.pop(subscriber, None)
            if not subs:
                del self._subs[stream]

    def unsubscribe_all(self, subscriber: Subscriber, streams: Iterable[str]) -> None:
        for stream in list(streams):
            self.unsubscribe(stream, subscriber)

    def wants(self, stream: str) -> bool:
        """Whether anybody listens to ``stream`` (so a payload is worth building)."""
        return stream in self._subs

    def streams(self) -> list[str]:
        return list(self._subs)

    def publish(self, stream: str, payload: Any) -> None:
        """Serialise ``payload`` once and push it to every subscriber of ``stream``."""
        subs = self._subs.get(stream)
        if subs:
            data = orjson.dumps(payload)
            self._fan_out(stream, subs, data, text_frame(data))

    def publish_json(self, stream: str, data: bytes) -> None:
        """Push ``data`` (one JSON message, already serialised) to every subscriber of ``stream``."""
        subs = self._subs.get(stream)
        if subs:
            self._fan_out(stream, subs, data, text_frame(data))

    def publish_json_many(self, streams: Iterable[str], data: bytes) -> None:
        """One message already serialised, on several streams: framed once (``investo ws``)."""
        frame = b""
        for stream in streams:
            subs = self._subs.get(stream)
            if subs:
                if not frame:
                    frame = text_frame(data)
                self._fan_out(stream, subs, data, frame)

    def subscribers(self, stream: str) -> list[Subscriber]:
        """Who listens to ``stream`` now (a copy)."""
        return list(self._subs.get(stream, ()))

    def publish_many(self, streams: Iterable[str], payload: Any) -> None:
        """One payload on several streams (``x@depth`` and ``x@depth@100ms``): one dumps, one frame."""
        data = frame = b""
        for stream in streams:
            subs = self._subs.get(stream)
            if subs:
                if not frame:
                    data = orjson.dumps(payload)
                    frame = text_frame(data)
                self._fan_out(stream, subs, data, frame)

    def _fan_out(self, stream: str, subs: dict[Subscriber, None], data: bytes, frame: bytes) -> None:
        self.published += 1
        wrapped = b""
        for subscriber in tuple(subs):
            if subscriber.combined:
                if not wrapped:
                    wrapped = text_frame(b'{"stream":"' + stream.encode() + b'","data":' + data + b"}")
                subscriber.push(wrapped, data)
            else:
                subscriber.push(frame, data)
        self.delivered += len(subs)
