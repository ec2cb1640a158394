"""The WebSocket gateway end to end, in process: uvicorn on a free port, real clients.

A local book kept from a REST snapshot plus diffs (Binance's procedure) must equal
``/api/v3/depth`` at the same update id; trades and candles arrive; combined
streams and control messages behave as Binance's; a client that never reads is
dropped without delaying the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets
from fastapi import FastAPI
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.uri import parse_uri

from investo.api.app import create_app
from investo.api.limits import RateLimits
from investo.client import InvestoClient
from investo.core.messages import Deposit, OrderType, PlaceOrder, Side, StpMode, TimeInForce
from investo.markets import load_markets
from investo.node import Node, NodeConfig
from investo.security.signing import generate_key_pair
from investo.ws.protocol import UVICORN_OPTIONS
from serving import served

SYMBOL = "TATAINR"


@dataclass
class Running:
    node: Node
    app: FastAPI
    port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@asynccontextmanager
async def serve(
    tmp_path: Path, buffer_limit: int = 1 << 20, ws_options: dict[str, Any] = UVICORN_OPTIONS
) -> AsyncIterator[Running]:
    node = Node(NodeConfig(data_dir=tmp_path, markets=load_markets(None), ws_buffer_limit=buffer_limit))
    app = create_app(node, RateLimits.default(10**7, 10**7))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await node.start()
        try:
            yield
        finally:
            await node.stop()

    app.router.lifespan_context = lifespan
    async with served(app, ws_options, lifespan="on") as port:
        yield Running(node, app, port)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    async with serve(tmp_path) as r:
        yield r


async def trader(running: Running, name: str) -> InvestoClient:
    client = InvestoClient(running.http, private_key=generate_key_pair()[0])
    await client.register(name)
    await client.claim_demo_funds()
    return client


class Reader:
    """Reads a WebSocket in the background into a list of decoded messages."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.got: list[Any] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in self.ws:
                self.got.append(orjson.loads(message))

    async def wait_for(self, check: Callable[[list[Any]], bool], timeout: float = 10.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while not check(self.got):
            assert time.monotonic() < deadline, f"timed out; got {self.got[-5:]}"
            await asyncio.sleep(0.01)
        return self.got

    async def close(self) -> None:
        await self.ws.close()
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task


def apply_levels(side: dict[str, str], levels: list[list[str]]) -> None:
    for price, qty in levels:
        if float(qty) == 0:
            side.pop(price, None)
        else:
            side[price] = qty


async def test_local_book_from_snapshot_and_diffs_equals_rest_depth(running: Running) -> None:
    alice, bob = await trader(running, "alice"), await trader(running, "bob")
    ws = Reader(await websockets.connect(f"{running.ws}/ws/tatainr@depth@100ms"))
    try:
        for i in range(10):  # some book before the snapshot
            await alice.place_order(SYMBOL, "SELL", "LIMIT", quantity=str(1 + i), price=f"{951 + i}.00",
                                    timeInForce="GTC")  # fmt: skip
            await bob.place_order(SYMBOL, "BUY", "LIMIT", quantity=str(1 + i), price=f"{949 - i}.00",
                                  timeInForce="GTC")  # fmt: skip
        snapshot = await alice.depth(SYMBOL, 5000)
        jobs = []
        for i in range(30):  # concurrent: several commands per host batch, trades, cancels, IOCs
            jobs.append(bob.place_order(SYMBOL, "BUY", "LIMIT", quantity="2", price=f"{951 + i % 4}.00",
                                        timeInForce="IOC" if i % 3 else "GTC"))  # fmt: skip
            jobs.append(alice.place_order(SYMBOL, "SELL", "LIMIT", quantity="1", price=f"{948 + i % 3}.00",
                                          timeInForce="GTC"))  # fmt: skip
        await asyncio.gather(*jobs)
        await alice.cancel_all(SYMBOL)
        await bob.place_order(SYMBOL, "BUY", "LIMIT", quantity="3", price="900.00", timeInForce="GTC")
        final = await alice.depth(SYMBOL, 5000)
        last_id = final["lastUpdateId"]
        diffs = await ws.wait_for(lambda got: bool(got) and got[-1]["u"] >= last_id)
    finally:
        await ws.close()
        await alice.close()
        await bob.close()

    # Binance's procedure: drop diffs with u <= lastUpdateId; the first applied has
    # U <= lastUpdateId + 1 <= u; then each U is the previous u + 1.
    book = ({p: q for p, q in snapshot["bids"]}, {p: q for p, q in snapshot["asks"]})
    last = snapshot["lastUpdateId"]
    applied = 0
    for diff in diffs:
        assert diff["e"] == "depthUpdate" and diff["s"] == SYMBOL
        if diff["u"] <= last:
            continue
        if applied == 0:
            assert diff["U"] <= last + 1 <= diff["u"]
        else:
            assert diff["U"] == last + 1
        apply_levels(book[0], diff["b"])
        apply_levels(book[1], diff["a"])
        last = diff["u"]
        applied += 1
    assert applied > 5
    assert last == last_id
    bids = sorted(([p, q] for p, q in book[0].items()), key=lambda lv: -float(lv[0]))
    asks = sorted(([p, q] for p, q in book[1].items()), key=lambda lv: float(lv[0]))
    assert bids == final["bids"] and asks == final["asks"]


async def test_trade_kline_and_agg_trade_streams_deliver_what_was_traded(running: Running) -> None:
    alice, bob = await trader(running, "alice"), await trader(running, "bob")
    streams = "tatainr@trade/tatainr@aggTrade/tatainr@kline_1m/tatainr@bookTicker/tatainr@depth5"
    ws = Reader(await websockets.connect(f"{running.ws}/stream?streams={streams}"))
    try:
        await alice.place_order(SYMBOL, "SELL", "LIMIT", quantity="2", price="950.00", timeInForce="GTC")
        await alice.place_order(SYMBOL, "SELL", "LIMIT", quantity="3", price="950.05", timeInForce="GTC")
        await bob.place_order(SYMBOL, "BUY", "LIMIT", quantity="4", price="950.05", timeInForce="GTC")
        got = await ws.wait_for(lambda got: sum(m["stream"] == "tatainr@trade" for m in got) == 2)
        await ws.wait_for(lambda got: sum(m["stream"] == "tatainr@kline_1m" for m in got) >= 1)
    finally:
        await ws.close()
        await alice.close()
        await bob.close()
    by_stream: dict[str, list[Any]] = {}
    for message in got:
        by_stream.setdefault(message["stream"], []).append(message["data"])
    trades = by_stream["tatainr@trade"]
    assert [(t["p"], t["q"], t["m"], t["s"]) for t in trades] == [
        ("950.00000000", "2.00000000", False, SYMBOL),
        ("950.05000000", "2.00000000", False, SYMBOL),
    ]
    assert trades[1]["t"] == trades[0]["t"] + 1
    aggs = by_stream["tatainr@aggTrade"]
    assert [(a["p"], a["q"], a["f"], a["l"]) for a in aggs] == [
        ("950.00000000", "2.00000000", trades[0]["t"], trades[0]["t"]),
        ("950.05000000", "2.00000000", trades[1]["t"], trades[1]["t"]),
    ]
    k = by_stream["tatainr@kline_1m"][-1]["k"]
    assert (k["o"], k["h"], k["l"], k["c"], k["v"], k["n"], k["x"], k["i"]) == (
        "950.00000000", "950.05000000", "950.00000000", "950.05000000", "4.00000000", 2, False, "1m",
    )  # fmt: skip
    assert k["V"] == "4.00000000" and k["t"] % 60_000 == 0 and k["T"] == k["t"] + 59_999
    ticker = by_stream["tatainr@bookTicker"][-1]
    assert (ticker["a"], ticker["A"]) == ("950.05000000", "1.00000000")
    partial = by_stream["tatainr@depth5"][-1]
    assert partial["asks"] == [["950.05000000", "1.00000000"]] and partial["bids"] == []


async def test_subscribe_unsubscribe_list_and_errors(running: Running) -> None:
    async with websockets.connect(f"{running.ws}/ws") as ws:

        async def ask(message: Any) -> Any:
            await ws.send(message if isinstance(message, str) else orjson.dumps(message).decode())
            return orjson.loads(await asyncio.wait_for(ws.recv(), 5))

        sub = {"method": "SUBSCRIBE", "params": ["tatainr@trade", "zomatoinr@depth"], "id": 1}
        assert await ask(sub) == {"result": None, "id": 1}
        listed = await ask({"method": "LIST_SUBSCRIPTIONS", "id": 2})
        assert listed == {"result": ["tatainr@trade", "zomatoinr@depth"], "id": 2}
        unsub = {"method": "UNSUBSCRIBE", "params": ["tatainr@trade"], "id": 3}
        assert await ask(unsub) == {"result": None, "id": 3}
        assert (await ask({"method": "LIST_SUBSCRIPTIONS", "id": 4}))["result"] == ["zomatoinr@depth"]
        assert await ask({"method": "GET_PROPERTY", "params": ["combined"], "id": 5}) == {
            "result": False,
            "id": 5,
        }
        bad = await ask({"method": "SUBSCRIBE", "params": ["nosuch@trade"], "id": 6})
        assert bad["id"] == 6 and bad["error"]["code"] == 2
        assert bad["error"]["msg"].startswith("Invalid request:")
        bad = await ask({"method": "FROB", "id": 7})
        assert bad["id"] == 7 and bad["error"]["code"] == 2
        bad = await ask({"method": "SUBSCRIBE", "params": "tatainr@trade", "id": 8})
        assert bad["error"]["code"] == 2
        assert (await ask("{not json"))["error"]["code"] == 3
        assert (await ask({"method": "SET_PROPERTY", "params": ["nope", True], "id": 9}))["error"][
            "code"
        ] == 0

        # SET_PROPERTY combined wraps what follows
        assert await ask({"method": "SET_PROPERTY", "params": ["combined", True], "id": 10}) == {
            "result": None,
            "id": 10,
        }
        assert running.app.state.metrics.ws_clients._value.get() == 1


async def test_a_client_that_never_reads_is_dropped_without_delaying_a_fast_one(tmp_path: Path) -> None:
    async with serve(tmp_path, buffer_limit=16_384) as running:
        host = running.node.host
        assert host is not None
        for user in (1, 2):
            await host.submit(Deposit(0, user, "INR", 10**13))
            await host.submit(Deposit(0, user, "TATA", 10**9))
        for i in range(40):  # a deep book: bulky depth20 messages
            await host.submit(_order(1, Side.SELL, 20_000 + i, 5))
            await host.submit(_order(2, Side.BUY, 18_000 - i, 5))

        # The slow client: a tiny receive buffer and a reader that never reads (until the end).
        slow_streams = "/".join(
            f"tatainr@{s}" for s in ("depth20", "depth10", "depth", "trade", "bookTicker")
        )
        slow = RawClient(f"{running.ws}/stream?streams={slow_streams}")
        await slow.open()
        fast = Reader(await websockets.connect(f"{running.ws}/ws/tatainr@trade"))
        clients = running.app.state.ws_clients
        while len(clients) < 2:
            await asyncio.sleep(0.01)
        slow_client = next(c for c in clients if len(c.streams) == 5)

        trades = 0
        worst = 0.0
        deadline = time.monotonic() + 60
        while len(clients) == 2:
            assert time.monotonic() < deadline, "the slow client was never dropped"
            began = time.perf_counter()
            await host.submit(_order(1, Side.SELL, 19_000, 1))
            await host.submit(_order(2, Side.BUY, 19_000, 1))
            worst = max(worst, time.perf_counter() - began)
            trades += 1
        for _ in range(20):  # and the fast client keeps getting everything after
            await host.submit(_order(1, Side.SELL, 19_000, 1))
            await host.submit(_order(2, Side.BUY, 19_000, 1))
            trades += 1
        got = await fast.wait_for(lambda got: len(got) >= trades, timeout=20)
        assert len(got) == trades
        assert [m["t"] for m in got] == list(range(got[0]["t"], got[0]["t"] + trades))
        assert worst < 1.0  # the engine never waited on the slow client
        assert len(clients) == 1
        assert not any(s.startswith("tatainr@depth20") for s in running.node.market_data.hub.streams())
        assert slow_client.dropped == "client too slow: more than 16384 bytes unsent"

        # What the slow client finally reads: whole frames, then the close frame with the reason.
        frames = await slow.read_to_close()
        assert frames[-1].opcode == Opcode.CLOSE
        close = Close.parse(frames[-1].data)
        assert (close.code, close.reason) == (1008, slow_client.dropped)
        assert all(f.opcode == Opcode.TEXT for f in frames[:-1])
        assert orjson.loads(frames[0].data)["stream"].startswith("tatainr@")
        await fast.close()


class RawClient:
    """A WebSocket client over a socket with a 4 KiB receive buffer that reads only when told.

    The handshake and the frames it finally reads go through the ``websockets`` library's
    sans-I/O client protocol.
    """

    def __init__(self, url: str) -> None:
        self.protocol = ClientProtocol(parse_uri(url))
        self.url = url

    async def open(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        uri = parse_uri(self.url)
        sock.connect((uri.host, uri.port))
        sock.setblocking(False)
        self.reader, self.writer = await asyncio.open_connection(sock=sock, limit=1024)
        self.protocol.send_request(self.protocol.connect())
        self.writer.write(b"".join(self.protocol.data_to_send()))
        await self.writer.drain()

    async def read_to_close(self, timeout: float = 20) -> list[Frame]:
        """Read until a close frame (or the end); every data and close frame received."""
        frames: list[Frame] = []
        deadline = time.monotonic() + timeout
        while not frames or frames[-1].opcode != Opcode.CLOSE:
            data = await asyncio.wait_for(self.reader.read(65_536), deadline - time.monotonic())
            if not data:
                break
            self.protocol.receive_data(data)
            frames += [e for e in self.protocol.events_received() if isinstance(e, Frame)]
        self.writer.close()
        return frames


async def test_messages_of_one_pass_go_out_in_one_write_per_client(running: Running) -> None:
    hub = running.node.market_data.hub
    flusher = running.app.state.ws.flusher
    raw = Reader(await websockets.connect(f"{running.ws}/ws/tatainr@trade"))
    combined = Reader(await websockets.connect(f"{running.ws}/stream?streams=tatainr@trade/tatainr@depth"))
    while len(running.app.state.ws_clients) < 2:
        await asyncio.sleep(0.01)
    writes = flusher.writes
    for t in range(1, 6):  # one event-loop pass, as a batch of the engine host publishes
        hub.publish("tatainr@trade", {"e": "trade", "t": t})
    hub.publish("tatainr@depth", {"e": "depthUpdate", "u": 1})
    got_raw = await raw.wait_for(lambda got: len(got) >= 5)
    got_combined = await combined.wait_for(lambda got: len(got) >= 6)
    assert flusher.writes == writes + 2  # one write each
    assert [m["t"] for m in got_raw] == [1, 2, 3, 4, 5]
    assert [m["stream"] for m in got_combined] == ["tatainr@trade"] * 5 + ["tatainr@depth"]
    assert [m["data"] for m in got_combined][-1] == {"e": "depthUpdate", "u": 1}
    await raw.close()
    await combined.close()


async def test_without_the_fanout_protocol_a_client_is_told_why_and_closed(tmp_path: Path) -> None:
    async with serve(tmp_path, ws_options={}) as running:  # uvicorn's own protocol
        async with websockets.connect(f"{running.ws}/ws/tatainr@trade") as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1011 and "UVICORN_OPTIONS" in closed.value.rcvd.reason
        assert len(running.app.state.ws_clients) == 0


async def test_the_server_pings_and_drops_a_client_that_stops_answering(tmp_path: Path) -> None:
    pings = {**UVICORN_OPTIONS, "ws_ping_interval": 0.2, "ws_ping_timeout": 0.3}
    async with serve(tmp_path, ws_options=pings) as running:
        silent = RawClient(f"{running.ws}/ws/tatainr@trade")  # answers no ping
        await silent.open()
        answering = Reader(await websockets.connect(f"{running.ws}/ws/tatainr@trade"))  # pongs
        frames = await silent.read_to_close(timeout=10)
        assert Opcode.PING in [f.opcode for f in frames]
        assert frames[-1].opcode == Opcode.CLOSE
        close = Close.parse(frames[-1].data)
        assert (close.code, close.reason) == (1011, "keepalive ping timeout")
        clients = running.app.state.ws_clients
        deadline = time.monotonic() + 5
        while len(clients) > 1:
            assert time.monotonic() < deadline, "the silent client was never released"
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)  # several ping rounds: the answering client stays
        assert len(clients) == 1 and answering.ws.state is websockets.State.OPEN
        await answering.close()


def test_the_gateway_alone_feeds_one_client_in_sequence() -> None:
    """`investo bench ws`'s single-client part: a real gateway process and a real client."""
    from investo.bench import ws_bench

    result = ws_bench.single_client(seconds=1.0, burst=20)
    assert result.messages > 1_000 and result.gaps == 0 and result.rate > 0


def _order(user: int, side: Side, price: int, qty: int) -> PlaceOrder:
    return PlaceOrder(
        0, user, SYMBOL, side, OrderType.LIMIT, TimeInForce.GTC, price, qty, 0, "", StpMode.NONE
    )


async def test_ccxt_pro_watches_the_order_book_and_trades(running: Running) -> None:
    import ccxt.pro

    exchange = ccxt.pro.binance(
        {
            "enableRateLimit": False,
            "options": {
                "fetchMarkets": {"types": ["spot"]},
                "fetchCurrencies": False,
                "fetchMargins": False,
                "adjustForTimeDifference": False,
            },
        }
    )
    for name in list(exchange.urls["api"]):
        if name != "ws":
            exchange.urls["api"][name] = f"{running.http}/not-spot/{name}"
    exchange.urls["api"]["public"] = exchange.urls["api"]["private"] = running.http + "/api/v3"
    exchange.urls["api"]["ws"]["spot"] = f"{running.ws}/ws"
    alice, bob = await trader(running, "alice"), await trader(running, "bob")
    try:
        await alice.place_order(SYMBOL, "SELL", "LIMIT", quantity="5", price="951.00", timeInForce="GTC")
        await bob.place_order(SYMBOL, "BUY", "LIMIT", quantity="4", price="949.00", timeInForce="GTC")
        await exchange.load_markets()
        symbol = exchange.markets_by_id[SYMBOL][0]["symbol"]

        trades = asyncio.create_task(exchange.watch_trades(symbol))
        await asyncio.sleep(0.5)  # subscribed
        await bob.place_order(SYMBOL, "BUY", "LIMIT", quantity="2", price="951.00", timeInForce="GTC")
        got = await asyncio.wait_for(trades, 10)
        assert [(t["price"], t["amount"], t["side"]) for t in got] == [(951.0, 2.0, "buy")]

        watching = asyncio.create_task(exchange.watch_order_book(symbol))
        await asyncio.sleep(0.5)
        await alice.place_order(SYMBOL, "SELL", "LIMIT", quantity="1", price="960.00", timeInForce="GTC")
        book = await asyncio.wait_for(watching, 10)
        assert book["bids"][0] == [949.0, 4.0]
        assert book["asks"][:2] == [[951.0, 3.0], [960.0, 1.0]]
    finally:
        await exchange.close()
        await alice.close()
        await bob.close()
