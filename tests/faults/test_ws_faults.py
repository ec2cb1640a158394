"""kill -9 one of two ``investo ws`` nodes under steady order load; its clients reconnect to the other.

The rig (tests/faults/cluster_rig.py: its own Redis with the shipped AOF-always config, real
Postgres, every engine shard and DB writer a separate process) plus, as separate processes, an
``investo gateway`` (REST depth), two ``investo marketdata`` publishers (one active, one standby)
and two ``investo ws`` nodes. Book-keeping clients (Binance's procedure: subscribe, REST
snapshot, diffs with ``U = previous u + 1``, any hole fails the test) watch two markets on each
node while orders flow. One node is killed with SIGKILL; its clients reconnect to the other and
resync from ``/api/v3/depth``; then the active publisher is killed too, and the standby takes
over. At the end every client's local book equals the gateway's REST depth: no wrong book was
served, and the killed node, started again, is ready again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from cluster_rig import Load, Process, Rig, free_port, started_rig, wait_written

from investo.cluster.client import ClusterClient
from ws_book import LocalBook

WATCHED = ("AINR", "BINR")  # one market of each matching shard


class Node:
    def __init__(self, rig: Rig, name: str) -> None:
        self.port = free_port()
        args = ["ws", "--redis", rig.cluster_url, "--port", str(self.port), "--log-level", "info"]
        self.process = Process(name, args, rig.log_dir)

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


class Watcher:
    """A client keeping local books; on a lost connection it moves to the next node and resyncs."""

    def __init__(self, name: str, nodes: list[Node], first: int, rest: httpx.AsyncClient) -> None:
        self.name = name
        self.nodes = nodes
        self.at = first
        self.rest = rest
        self.books: dict[str, LocalBook] = {}
        self.reconnects = 0
        self.applied_after_reconnect = 0
        self.task: asyncio.Task[None] | None = None
        self.stopping = False

    async def run(self) -> None:
        while not self.stopping:
            node = self.nodes[self.at % len(self.nodes)]
            streams = "/".join(f"{s.lower()}@depth" for s in WATCHED)
            try:
                async with websockets.connect(node.url(f"/stream?streams={streams}"), max_size=None) as ws:
                    self.books = {s: LocalBook() for s in WATCHED}
                    reader = asyncio.create_task(self._read(ws))
                    await asyncio.sleep(0.2)  # subscribed before the snapshot
                    for symbol in WATCHED:
                        depth = await self.rest.get("/api/v3/depth", params={"symbol": symbol, "limit": 5000})
                        depth.raise_for_status()
                        self.books[symbol].snapshot(depth.json())
                    await reader
            except (OSError, websockets.WebSocketException):
                pass
            if self.stopping:
                return
            self.reconnects += 1
            self.at += 1  # the next node
            await asyncio.sleep(0.1)

    async def _read(self, ws: Any) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in ws:
                data = orjson.loads(raw)["data"]
                self.books[data["s"]].diff(data)  # DepthGap (a hole) ends the test
                if self.reconnects:
                    self.applied_after_reconnect += 1

    async def agrees(self) -> str | None:
        """None if every local book is the REST depth now, else what differs."""
        for symbol in WATCHED:
            depth = (await self.rest.get("/api/v3/depth", params={"symbol": symbol, "limit": 5000})).json()
            expected = ([tuple(x) for x in depth["bids"]], [tuple(x) for x in depth["asks"]])
            book = self.books.get(symbol)
            if book is None or book.levels() != expected:
                return f"{self.name} {symbol}: local u={book and book.last}, REST {depth['lastUpdateId']}"
        return None


@pytest.fixture
async def rig(tmp_path: Path, postgres_url: str) -> AsyncIterator[Rig]:
    async with started_rig(tmp_path, postgres_url) as made:
        yield made


async def _ready(url: str, what: str, rig: Rig, extra: list[Process], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2.0) as http:
        while True:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                response = await http.get(url)
                if response.status_code == 200 and response.json().get("ready") is True:
                    return
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {p.name}\n{p.output()[-6000:]}" for p in extra)
                raise AssertionError(f"{what} not ready\n{logs}\n{rig.logs()}")
            await asyncio.sleep(0.1)


async def test_kill9_one_of_two_ws_nodes_under_load_clients_move_and_books_equal_rest_depth(
    rig: Rig,
) -> None:
    api_port = free_port()
    gateway = Process(
        "gateway",
        ["gateway", "--redis", rig.cluster_url, "--database", rig.database_url, "--port", str(api_port),
         "--rate-limit", "0", "--order-limit", "0"],
        rig.log_dir,
    )  # fmt: skip
    publishers = [
        Process(f"marketdata-{n}", ["marketdata", "--redis", rig.cluster_url, "--lease-ms", "1500",
                                    "--snapshot-s", "2", "--log-level", "info"], rig.log_dir)
        for n in range(2)
    ]  # fmt: skip
    nodes = [Node(rig, "ws-0"), Node(rig, "ws-1")]
    extra = [gateway, *publishers, *(n.process for n in nodes)]
    for process in extra:
        process.start()
    client = ClusterClient(rig.cluster_url, timeout_s=3.0)
    watchers: list[Watcher] = []
    rest = httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=10.0)
    try:
        await _ready(f"http://127.0.0.1:{api_port}/health", "the gateway", rig, extra)
        for node in nodes:
            await _ready(f"http://127.0.0.1:{node.port}/health", node.process.name, rig, extra)
        await client.start()
        load = Load(client)
        await load.fund()
        running = asyncio.create_task(load.run(workers=6))
        watchers = [Watcher(f"client-{n}", nodes, n % 2, rest) for n in range(4)]
        for watcher in watchers:
            watcher.task = asyncio.create_task(watcher.run())
        await asyncio.sleep(2.0)

        nodes[0].process.kill9()  # clients 0 and 2 lose their node
        await asyncio.sleep(2.5)
        moved = [w for w in watchers if w.reconnects]
        assert {w.name for w in moved} == {"client-0", "client-2"}, [(w.name, w.reconnects) for w in watchers]
        assert all(w.applied_after_reconnect > 0 for w in moved), "no diff after moving to the other node"

        active = next(p for p in publishers if "active" in p.output())
        active.kill9()  # and the publisher: the standby takes over when the lease expires
        await asyncio.sleep(3.5)
        load.running = False
        await running
        assert len(load.acknowledged) > 100 and load.unknown == 0, (len(load.acknowledged), load.unknown)
        await wait_written(rig)

        deadline = time.monotonic() + 20
        while True:
            for watcher in watchers:
                if watcher.task is not None and watcher.task.done():
                    watcher.task.result()  # a DepthGap: a hole was served
            differences = [d for w in watchers if (d := await w.agrees()) is not None]
            if not differences:
                break
            assert time.monotonic() < deadline, f"{differences}\n" + "\n".join(
                f"--- {p.name}\n{p.output()[-4000:]}" for p in extra
            )
            await asyncio.sleep(0.2)
        standby = next(p for p in publishers if p is not active)
        assert "active, epoch" in standby.output(), standby.output()  # it took over

        nodes[0].process.start()  # the killed node comes back and is ready again
        await _ready(f"http://127.0.0.1:{nodes[0].port}/health", "ws-0 again", rig, extra)
    finally:
        for watcher in watchers:
            watcher.stopping = True
            if watcher.task is not None:
                watcher.task.cancel()
                with contextlib.suppress(BaseException):
                    await watcher.task
        await rest.aclose()
        await client.close()
        for process in extra:
            if process.process is not None:
                process.stop()
