"""Server-to-client WebSocket text frames, built once and sent as they are to every client.

A frame a server sends is never masked (RFC 6455 §5.1), so the bytes of one message's
frame are the same for every connection: :func:`text_frame` builds them once per
message and the fan-out writes that one ``bytes`` object to each subscriber's
transport. Frames are single (FIN set), uncompressed (RSV bits clear, which is valid
even where permessage-deflate was negotiated, RFC 7692 §6) text frames.

Everything else of the protocol (handshake, parsing what clients send, ping/pong,
the close handshake) is the ``websockets`` library's, run by uvicorn; this is the one
hand-written piece because it runs once per message and must be cheap (a
``struct.pack`` and a concatenation; ``websockets``' own ``Frame.serialize`` gives the
same bytes, which a test checks).
"""

from __future__ import annotations

import struct

_TEXT_FIN = 0x81  # FIN + opcode 1 (text)
_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def text_frame(payload: bytes) -> bytes:
    """The unmasked, final text frame carrying ``payload`` (UTF-8 JSON)."""
    length = len(payload)
    if length < 126:
        return _SHORT.pack(_TEXT_FIN, length) + payload
    if length < 65_536:
        return _MEDIUM.pack(_TEXT_FIN, 126, length) + payload
    return _LONG.pack(_TEXT_FIN, 127, length) + payload
