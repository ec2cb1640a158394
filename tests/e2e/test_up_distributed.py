"""`investo up --redis --database` as a supervisor: its start-up line, a child that dies, stopping.

Evidence: one start-up line names the API, the cluster and every process; a matching engine
killed with SIGKILL is reported loudly and started again, and the market it serves trades
again (the engine recovered from its snapshot and input); SIGTERM stops every child and
exits 0; a supervisor killed with SIGKILL takes its children with it (none is orphaned); the
market streams reach clients from the `investo ws` node and from the gateway's own port alike;
Redis losing the cluster's keys is recovered from Postgres by the restarted engines.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import websockets
from harness import SYMBOL, Api, DistributedServer, Server, anew_user, new_user

START_LINE = re.compile(r"^Investo is up \(distributed\): API (\S+)/api/v3 .* processes: (.*)$", re.M)


def children_of(server: Server) -> dict[str, int]:
    found = START_LINE.search(server.output())
    assert found, f"no start-up line:\n{server.output()}"
    return {name: int(pid) for name, pid in re.findall(r"(\S+)\((\d+)\)", found.group(2))}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too (its parent has not reaped it yet)
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def until(condition: Callable[[], bool], timeout: float, what: str, server: Server) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout} s:\n{server.tail(80)}"
        time.sleep(0.1)


@pytest.fixture
def cluster(tmp_path: Path) -> DistributedServer:
    server = DistributedServer(tmp_path / "data")
    try:
        yield server.start()
    finally:
        server.stop()


def test_a_dead_engine_is_reported_and_started_again_then_sigterm_stops_everything(
    cluster: DistributedServer,
) -> None:
    pids = children_of(cluster)
    assert sorted(pids) == [
        "accounts-0", "accounts-1", "dbwriter", "gateway", "marketdata", "matching-0", "matching-1", "ws",
    ]  # fmt: skip
    assert START_LINE.search(cluster.output()).group(1) == cluster.base_url  # type: ignore[union-attr]
    assert f"market streams ws://127.0.0.1:{cluster.market_port}/ws/<stream>" in cluster.output()
    api = Api(cluster.base_url)
    try:
        trader = new_user(cluster.base_url)
        os.kill(pids["matching-0"], signal.SIGKILL)  # TATAINR's engine
        restarted = re.compile(r"matching-0 started again \(pid (\d+)\)")
        until(lambda: restarted.search(cluster.output()) is not None, 10, "no restart of matching-0", cluster)
        pids["matching-0 again"] = int(restarted.search(cluster.output()).group(1))  # type: ignore[union-attr]
        assert (
            f"!!! the matching-0 process (pid {pids['matching-0']}) exited with code -9" in cluster.output()
        )
        deadline = time.monotonic() + 30
        while True:  # the new engine replays its input and trades again
            answer = api.signed("POST", "/api/v3/order", trader, {
                "symbol": SYMBOL, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                "quantity": "1", "price": "900",
            })  # fmt: skip
            if answer.status_code == 200:
                break
            assert answer.json()["code"] == -1007 and time.monotonic() < deadline, answer.text
        assert answer.json()["status"] == "NEW"
        assert api.depth()["bids"] == [["900.00000000", "1.00000000"]]
    finally:
        api.close()
    assert cluster.terminate() == 0
    assert not [name for name, pid in pids.items() if alive(pid)]


def test_killing_the_supervisor_takes_its_children_along(cluster: DistributedServer) -> None:
    pids = children_of(cluster)
    cluster.kill9()
    until(lambda: not any(alive(pid) for pid in pids.values()), 20, "orphaned children", cluster)


async def test_the_market_streams_come_from_investo_ws_and_from_the_gateways_origin(
    cluster: DistributedServer,
) -> None:
    """One depth diff, the same on the `investo ws` node and on the gateway's port (the screen's origin)."""
    sym = SYMBOL.lower()
    trader = await anew_user(cluster.base_url)
    async with (
        websockets.connect(cluster.market_ws(f"/ws/{sym}@depth")) as node,
        websockets.connect(f"ws://127.0.0.1:{cluster.port}/stream?streams={sym}@depth") as gateway,
    ):
        await asyncio.sleep(0.3)
        api = Api(cluster.base_url)
        try:
            placed = await asyncio.to_thread(api.limit, trader, "BUY", "2", "905")
            assert placed["status"] == "NEW"
        finally:
            api.close()
        from_node = orjson.loads(await asyncio.wait_for(node.recv(), 10))
        from_gateway = orjson.loads(await asyncio.wait_for(gateway.recv(), 10))
        assert from_gateway["stream"] == f"{sym}@depth"
        assert from_node == from_gateway["data"]
        assert from_node["e"] == "depthUpdate" and ["905.00000000", "2.00000000"] in from_node["b"]


def _lose_redis_namespace(cluster: DistributedServer) -> None:
    """Every key of the cluster's namespace deleted: Redis lost its data (as far as this cluster sees)."""
    import redis

    from investo.cluster.topology import split_url

    server_url, namespace = split_url(cluster.redis_url)
    client = redis.Redis.from_url(server_url)
    try:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        assert keys
        client.delete(*keys)
    finally:
        client.close()


def _quietly(check: Callable[[], bool]) -> Callable[[], bool]:
    """``check``, with a failed request (the gateway answers 503 while the cluster is rebuilt) as False."""

    def run() -> bool:
        try:
            return check()
        except (AssertionError, OSError):
            return False

    return run


def test_redis_losing_the_cluster_is_recovered_from_postgres(cluster: DistributedServer) -> None:
    """Redis loses the cluster while `investo up` runs: the engines notice, and started again they
    rebuild it from Postgres; the book, the balances and trading are back."""
    api = Api(cluster.base_url)
    try:
        maker, taker = new_user(cluster.base_url), new_user(cluster.base_url)
        order = api.call("POST", "/api/v3/order", maker, symbol=SYMBOL, side="SELL", type="LIMIT",
                         timeInForce="GTC", quantity="3", price="1100")  # fmt: skip
        balances = api.call("GET", "/api/v3/account", maker)["balances"]
        until(
            lambda: api.signed("GET", "/api/v3/order", maker, {"symbol": SYMBOL, "orderId": order["orderId"]})
            .status_code == 200,
            30, "the order in SQL", cluster,
        )  # fmt: skip
        _lose_redis_namespace(cluster)
        until(lambda: "REDIS LOST CLUSTER" in cluster.output(), 60, "no rebuild", cluster)
        book = [["1100.00000000", "3.00000000"]]
        until(_quietly(lambda: api.depth()["asks"] == book), 60, "no rebuilt book", cluster)
        until(
            _quietly(lambda: api.call("GET", "/api/v3/account", maker)["balances"] == balances),
            30, "the maker's balances back", cluster,
        )  # fmt: skip
        answer = api.call("POST", "/api/v3/order", taker, symbol=SYMBOL, side="BUY", type="LIMIT",
                          timeInForce="IOC", quantity="1", price="1100")  # fmt: skip
        assert answer["status"] == "FILLED", answer
        assert "exited with code 4" in cluster.output()
    finally:
        api.close()
    assert cluster.terminate() == 0, cluster.tail(80)
