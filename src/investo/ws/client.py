"""One WebSocket connection's output: frames shared by all subscribers, written once per pass.

A :class:`WsClient` is a hub subscriber (:class:`investo.marketdata.hub.Subscriber`).
``push`` appends the frame it is given (the same ``bytes`` object every subscriber
of that message gets) to the client's pending list and, if the list was empty, asks
the :class:`Flusher` for a flush. The flusher runs once at the end of the current
event-loop pass (``call_soon``) and writes each pending client's frames in one
``transport.write`` (one ``b"".join``): everything published in one pass (all the
messages of one engine batch) costs each client one write and, usually, one
``send`` system call.

Bound on a client that falls behind: the bytes its connection still holds unsent
(the transport's write buffer, :meth:`investo.ws.protocol.FrameSink.buffered`). At
each flush, if those bytes plus the new ones would exceed ``buffer_limit``, the
client is dropped on the spot: unsubscribed from everything, its pending frames
forgotten, and a close frame 1008 with the reason sent at once (the connection is
aborted if the close handshake does not finish within :data:`CLOSE_TIMEOUT`). It must
reconnect and resync (a book from a REST snapshot). So a client that reads slowly or
not at all costs the publisher one ``append`` per message until its next flush, and
never delays the engine host or the other clients. A client holds at most
``buffer_limit`` bytes in its transport (plus what the kernel's socket buffer took)
and one loop pass's messages in its pending list.

Costs per message per subscriber: one ``list.append`` (plus, for the first message
of a pass, one ``list.append`` in the flusher); per client per pass with messages:
one join, one write buffer size read, one ``transport.write``.
"""

from __future__ import annotations

import asyncio
import logging

from investo.marketdata.hub import Hub
from investo.ws.frames import text_frame
from investo.ws.protocol import FrameSink

log = logging.getLogger("investo.ws")

CLOSE_POLICY = 1008
CLOSE_SERVER_ERROR = 1011
CLOSE_TIMEOUT = 5.0  # seconds a dropped client has to finish the close handshake


class Flusher:
    """Writes, at the end of the event-loop pass, what each client was pushed during it."""

    def __init__(self) -> None:
        self._dirty: list[WsClient] = []
        self.flushes = 0  # passes that wrote something
        self.writes = 0  # client writes (one per client per such pass)

    def mark(self, client: WsClient) -> None:
        """Flush ``client`` at the end of this pass (called once per pass per client)."""
        if not self._dirty:
            asyncio.get_running_loop().call_soon(self._flush)
        self._dirty.append(client)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        self.flushes += 1
        self.writes += len(dirty)
        for client in dirty:
            try:
                client.flush()
            except Exception:  # a bug, or a transport in a state we did not foresee: that client only
                log.exception("websocket write failed; dropping the client")
                client.drop("server error while sending", CLOSE_SERVER_ERROR)


class WsClient:
    """One connection: its subscriptions and its output (module docstring)."""

    def __init__(
        self, sink: FrameSink, hub: Hub, flusher: Flusher, buffer_limit: int, combined: bool
    ) -> None:
        self.sink = sink
        self.hub = hub
        self.flusher = flusher
        self.buffer_limit = buffer_limit
        self.combined = combined
        self.streams: dict[str, None] = {}  # in subscription order
        self.dropped: str | None = None  # the reason, once dropped
        self.closed = asyncio.Event()  # set when dropped
        self._pending: list[bytes] = []

    # ------------------------------------------------------------------ output

    def push(self, frame: bytes, payload: bytes = b"") -> None:
        """Send ``frame`` with this pass's other frames. Never blocks or raises."""
        pending = self._pending
        if not pending:
            if self.dropped is not None:
                return
            self.flusher.mark(self)
        pending.append(frame)

    def send_json(self, data: bytes) -> None:
        """Send one JSON message of this client's own (a reply), after what was pushed before."""
        self.push(text_frame(data))

    def flush(self) -> None:
        """Write the pending frames in one write, or drop the client if it is too far behind."""
        pending = self._pending
        if not pending or self.dropped is not None:
            pending.clear()
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        sink = self.sink
        if sink.closed:
            return
        if sink.buffered() + len(data) > self.buffer_limit:
            self.drop(f"client too slow: more than {self.buffer_limit} bytes unsent")
            return
        sink.write(data)

    def buffered(self) -> int:
        """Bytes this client has pushed that its connection has not handed to the kernel yet."""
        return self.sink.buffered() + sum(len(frame) for frame in self._pending)

    def drop(self, reason: str, code: int = CLOSE_POLICY) -> None:
        """Forget every subscription and close with ``code`` and ``reason`` now (from any task)."""
        if self.dropped is not None:
            return
        self.dropped = reason
        self._pending.clear()
        self.hub.unsubscribe_all(self, self.streams)
        self.sink.close(code, reason[:120], CLOSE_TIMEOUT)
        self.closed.set()

    def finish(self) -> None:
        """The connection ended: unsubscribe from everything."""
        self.hub.unsubscribe_all(self, self.streams)
        self._pending.clear()

    # ------------------------------------------------------------------ subscriptions

    def subscribe(self, names: list[str]) -> None:
        for name in names:
            if name not in self.streams:
                self.streams[name] = None
                self.hub.subscribe(name, self)

    def unsubscribe(self, names: list[str]) -> None:
        for name in names:
            if name in self.streams:
                del self.streams[name]
                self.hub.unsubscribe(name, self)
