"""uvicorn's WebSocket protocol plus a direct path for frames built once for many clients.

uvicorn runs each WebSocket connection with the ``websockets`` library's sans-I/O
``ServerProtocol``: the handshake, parsing and unmasking what the client sends,
ping/pong keepalive (a client that stops answering pings is dropped) and the close
handshake all stay the library's. :class:`FanoutProtocol` adds one ASGI scope
extension, ``investo.frames`` (:data:`EXTENSION`), holding a :class:`FrameSink` for the
connection. Through it the gateway

* writes ready-made frames (:func:`investo.ws.frames.text_frame`, the same bytes for
  every subscriber) straight to the connection's transport: no ASGI message, no
  per-client task, no per-client framing or compression;
* reads how many bytes the transport still holds (its write buffer), which is how a
  client that falls behind is recognised;
* closes at once with a code and a reason, without waiting for that buffer to drain
  (ASGI's ``websocket.close`` waits while the transport is paused), and aborts the
  connection if the client has not completed the close handshake ``timeout`` seconds
  later, so a client that stopped reading cannot hold the socket.

Ordering: every write happens on the event loop's thread and writes whole frames, so
frames written here and the library's own (pongs, pings, the close frame) never
interleave inside a frame.

Use it with uvicorn as ``uvicorn.Config(app, **UVICORN_OPTIONS)`` (also turns off
permessage-deflate: frames are shared, so nothing is compressed per client). Relies on
uvicorn's ``WebSocketsSansIOProtocol`` attributes (``transport``, ``conn``,
``close_sent``, ``disconnected``, ``close_timer``, ``queue``); uvicorn is pinned and
``tests/integration/test_ws.py`` exercises every path.
"""

from __future__ import annotations

import contextlib
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.http11 import Request

EXTENSION = "investo.frames"


class FrameSink:
    """One connection's direct output (see the module docstring)."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: FanoutProtocol) -> None:
        self._protocol = protocol

    @property
    def closed(self) -> bool:
        """Whether nothing more may be written (close sent, or the connection closing or gone)."""
        p = self._protocol
        return p.close_sent or p.disconnected or p.transport.is_closing()

    def write(self, data: bytes) -> None:
        """Write whole frames; nothing once :attr:`closed`. Never blocks."""
        if not self.closed:
            self._protocol.transport.write(data)

    def buffered(self) -> int:
        """Bytes written but not yet taken by the kernel (the transport's write buffer)."""
        return self._protocol.transport.get_write_buffer_size()

    def close(self, code: int, reason: str, timeout: float) -> None:
        """Send a close frame now and tell the application; abort after ``timeout`` s."""
        self._protocol.close_now(code, reason, timeout)


class FanoutProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets`` protocol with a :class:`FrameSink` in the ASGI scope."""

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope: Any = getattr(self, "scope", None)
        if scope is not None:  # the handshake was accepted: the ASGI task has not run yet
            scope["extensions"][EXTENSION] = FrameSink(self)

    def close_now(self, code: int, reason: str, timeout: float) -> None:
        if self.close_sent or self.disconnected or self.transport.is_closing():
            return
        self.close_sent = True
        with contextlib.suppress(InvalidState):  # the client's close frame came first
            self.conn.send_close(code, reason)
            self.transport.write(b"".join(self.conn.data_to_send()))
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        if self.read_paused:  # to read the client's answering close frame
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(timeout, self.transport.abort)


UVICORN_OPTIONS: dict[str, Any] = {"ws": FanoutProtocol, "ws_per_message_deflate": False}
