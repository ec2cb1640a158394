"""Stream subscriptions and fan-out: each message is serialised once, whatever the audience.

A :class:`Hub` maps a stream name (``tatainr@depth``, ``!miniTicker@arr``) to the
subscribers that want it. :meth:`Hub.publish` serialises a payload with orjson
once, decodes it to text once (WebSocket text frames), and, only if a combined-stream
subscriber is listening, builds the ``{"stream":…,"data":…}`` wrapper once by string
concatenation. Each subscriber then gets the same ``str`` object.

Invariants
----------
* Publishing never blocks and never awaits: :meth:`Subscriber.push` must be
  non-blocking (the gateway's clients do ``put_nowait`` into a bounded queue and
  drop themselves when it is full), so a slow subscriber cannot slow the engine
  host (publishing runs inside its listener call) or the other subscribers.
* A stream nobody listens to costs a dict lookup: nothing is serialised.
* A subscriber may unsubscribe (or be dropped) while a message is being published:
  the fan-out iterates over a copy of the stream's subscribers.

Costs: ``publish`` is one ``orjson.dumps`` + one decode + (combined only) one string
concatenation, plus O(subscribers) ``push`` calls.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import orjson


class Subscriber(Protocol):
    """Something that receives stream messages (a WebSocket client)."""

    @property
    def combined(self) -> bool:
        """Whether messages must be wrapped as ``{"stream": name, "data": payload}``."""
        ...

    def push(self, text: str) -> None:
        """Queue one message; must never block or raise."""
        ...


class Hub:
    """Stream name → subscribers, with serialise-once publishing (module docstring)."""

    def __init__(self) -> None:
        self._subs: dict[str, dict[Subscriber, None]] = {}
        self.published = 0  # messages serialised (one per stream per publish with listeners)
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
            self._fan_out(stream, subs, orjson.dumps(payload).decode())

    def publish_many(self, streams: Iterable[str], payload: Any) -> None:
        """Publish one payload to several streams (``x@depth`` and ``x@depth@100ms``): one dumps."""
        raw: str | None = None
        for stream in streams:
            subs = self._subs.get(stream)
            if subs:
                if raw is None:
                    raw = orjson.dumps(payload).decode()
                self._fan_out(stream, subs, raw)

    def _fan_out(self, stream: str, subs: dict[Subscriber, None], raw: str) -> None:
        self.published += 1
        wrapped: str | None = None
        for subscriber in tuple(subs):
            if subscriber.combined:
                if wrapped is None:
                    wrapped = '{"stream":"' + stream + '","data":' + raw + "}"
                subscriber.push(wrapped)
            else:
                subscriber.push(raw)
        self.delivered += len(subs)
