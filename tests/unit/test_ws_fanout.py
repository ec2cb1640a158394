"""The fan-out's own pieces: frames built once, one write per client per loop pass, the byte bound.

Frames are checked against the ``websockets`` library (its serializer gives the same
bytes, its client parser reads them back). The client is driven with a recording sink
standing in for a connection's transport: what was written, in how many writes, and
what happens when the unsent bytes pass the bound. ``tests/integration/test_ws.py``
runs the same code over real sockets.
"""

from __future__ import annotations

import asyncio

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from investo.marketdata.hub import Hub
from investo.ws.client import CLOSE_POLICY, CLOSE_SERVER_ERROR, Flusher, WsClient
from investo.ws.frames import text_frame
from investo.ws.protocol import FrameSink

SIZES = [0, 1, 125, 126, 127, 65_535, 65_536, 70_000]


@pytest.mark.parametrize("size", SIZES)
def test_text_frame_is_what_websockets_serialises(size: int) -> None:
    payload = b"x" * size
    assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False)


@pytest.mark.parametrize("size", SIZES)
def test_a_client_parser_reads_the_frame_back(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + b"a" * (size % 256)
    reader = StreamReader()
    reader.feed_data(text_frame(payload) + text_frame(b"next"))
    parse = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parse)
    except StopIteration as done:
        frame = done.value
    else:
        raise AssertionError("the parser wanted more bytes than the frame has")
    assert (frame.opcode, frame.fin, frame.rsv1, frame.data) == (Opcode.TEXT, True, False, payload)


class RecordingSink:
    """A connection whose peer reads nothing: it keeps every write, all of it unsent."""

    def __init__(self, unsent: int = 0) -> None:
        self.writes: list[bytes] = []
        self.unsent = unsent
        self.closed_with: tuple[int, str] | None = None

    @property
    def closed(self) -> bool:
        return self.closed_with is not None

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.unsent += len(data)

    def buffered(self) -> int:
        return self.unsent

    def close(self, code: int, reason: str, timeout: float) -> None:
        self.closed_with = (code, reason)


def client(hub: Hub, flusher: Flusher, sink: RecordingSink, limit: int = 1_000) -> WsClient:
    return WsClient(sink, hub, flusher, limit, combined=False)  # type: ignore[arg-type]


async def next_pass() -> None:
    """Let the event loop run the callbacks scheduled in this pass (the flush)."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_one_write_per_client_per_pass_with_the_shared_frames_in_order() -> None:
    hub, flusher = Hub(), Flusher()
    sinks = [RecordingSink(), RecordingSink()]
    clients = [client(hub, flusher, sink) for sink in sinks]
    for c in clients:
        c.subscribe(["a@trade", "a@depth"])
    hub.publish("a@trade", {"t": 1})
    hub.publish("a@depth", {"u": 1})
    clients[0].send_json(b'{"result":null,"id":1}')  # a reply goes after what was pushed before
    hub.publish("a@trade", {"t": 2})
    assert all(sink.writes == [] for sink in sinks)  # nothing written inside the publishing call
    await next_pass()
    expected = text_frame(b'{"t":1}') + text_frame(b'{"u":1}')
    assert sinks[0].writes == [expected + text_frame(b'{"result":null,"id":1}') + text_frame(b'{"t":2}')]
    assert sinks[1].writes == [expected + text_frame(b'{"t":2}')]
    assert (flusher.flushes, flusher.writes) == (1, 2)
    hub.publish("a@trade", {"t": 3})  # the next pass: one more write each
    await next_pass()
    assert [len(sink.writes) for sink in sinks] == [2, 2] and flusher.writes == 4


async def test_a_client_over_the_byte_bound_is_dropped_and_the_others_are_not() -> None:
    hub, flusher = Hub(), Flusher()
    frame_size = len(text_frame(b'{"t":1}'))
    slow_sink, fast_sink = RecordingSink(unsent=1_000 - frame_size), RecordingSink(unsent=0)
    slow, fast = client(hub, flusher, slow_sink), client(hub, flusher, fast_sink)
    slow.subscribe(["a@trade", "a@depth"])
    fast.subscribe(["a@trade"])
    hub.publish("a@trade", {"t": 1})  # exactly at the bound: still sent
    await next_pass()
    assert slow_sink.writes and slow.dropped is None
    hub.publish("a@trade", {"t": 2})  # one byte over
    await next_pass()
    assert slow.dropped == "client too slow: more than 1000 bytes unsent"
    assert slow_sink.closed_with == (CLOSE_POLICY, "client too slow: more than 1000 bytes unsent")
    assert slow.closed.is_set()
    assert len(slow_sink.writes) == 1  # the frame that did not fit was not written
    assert hub.streams() == ["a@trade"]  # unsubscribed from everything at once
    hub.publish("a@trade", {"t": 3})
    slow.send_json(b"{}")  # nothing is sent to a dropped client any more
    await next_pass()
    assert len(slow_sink.writes) == 1
    assert len(fast_sink.writes) == 3 and fast.dropped is None


async def test_nothing_is_written_once_the_connection_is_closed() -> None:
    hub, flusher = Hub(), Flusher()
    sink = RecordingSink()
    c = client(hub, flusher, sink)
    c.subscribe(["a@trade"])
    sink.closed_with = (1000, "")  # the peer went away
    hub.publish("a@trade", {"t": 1})
    await next_pass()
    assert sink.writes == [] and c.dropped is None
    c.finish()
    assert hub.streams() == []


class BrokenSink(RecordingSink):
    def write(self, data: bytes) -> None:
        raise RuntimeError("unable to perform operation on a closed transport")


async def test_a_write_that_fails_drops_that_client_only() -> None:
    hub, flusher = Hub(), Flusher()
    broken_sink, sink = BrokenSink(), RecordingSink()
    broken, fine = client(hub, flusher, broken_sink), client(hub, flusher, sink)
    for c in (broken, fine):
        c.subscribe(["a@trade"])
    hub.publish("a@trade", {"t": 1})
    await next_pass()
    assert broken.dropped == "server error while sending"
    assert broken_sink.closed_with == (CLOSE_SERVER_ERROR, "server error while sending")
    assert sink.writes == [text_frame(b'{"t":1}')] and fine.dropped is None
    hub.publish("a@trade", {"t": 2})  # and the flusher goes on
    await next_pass()
    assert len(sink.writes) == 2


def test_the_recording_sink_has_the_frame_sinks_surface() -> None:
    public = {name for name in dir(FrameSink) if not name.startswith("_")}
    assert public <= {name for name in dir(RecordingSink) if not name.startswith("_")}
