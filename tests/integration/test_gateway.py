"""The REST gateway over a real cluster: Redis Streams engines (2 matching + 2 accounts shards), a DB
writer into real Postgres, and one or two gateways, each a real HTTP server in this process.

Evidence: orders, fills and cancels through the gateway; the book, the balances and the SQL
history (allOrders, myTrades) read right after a fill already show it (read-your-writes from
the replicas and the DB writers' watermarks); the user stream over the cluster; a key
registered on one gateway works on another, and a key revoked on one stops working on every
gateway (announced, and swept from SQL when the announcement is missed); a request replayed
to another gateway is refused, and an order (whose replay mark its append sets) is
executed once, even when two copies race to two gateways; the demo daily limit holds when
two gateways race; with the engines down an order is "status unknown" (-1007) and a book
read a clear 503, and the order is found by its client order id once the engines are back;
a gateway follows a new shard map.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
import websockets
from fastapi import FastAPI

from cluster_fixtures import configured_cluster
from investo.api.app import create_app
from investo.api.limits import RateLimits
from investo.client import ApiError, InvestoClient
from investo.cluster import topology as topo
from investo.cluster.dbwriter import DbWriter
from investo.cluster.gateway import GatewayConfig, GatewayNode
from investo.cluster.local import LocalCluster
from investo.cluster.shards import MatchingShard
from investo.security.signing import API_KEY_HEADER, generate_key_pair, public_key_to_pem, sign_params
from investo.store import queries
from serving import served

D = Decimal
A, B = "AINR", "BINR"  # AINR on matching shard 0, BINR on matching shard 1


@dataclass
class Gateway:
    node: GatewayNode
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Cluster:
    url: str
    database_url: str
    engines: LocalCluster
    gateways: list[Gateway] = field(default_factory=list)

    async def restart_engines(self) -> None:
        await self.engines.stop()
        self.engines = LocalCluster(self.engines.server_url, self.engines.topology)
        await self.engines.start()


@contextlib.asynccontextmanager
async def serve_gateway(config: GatewayConfig) -> AsyncIterator[Gateway]:
    node = GatewayNode(config)
    app = create_app(node, RateLimits.default(10**7, 10**7))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await node.start()
        try:
            yield
        finally:
            await node.stop()

    app.router.lifespan_context = lifespan
    async with served(app) as port:
        yield Gateway(node, port)


@pytest.fixture
async def cluster(postgres_url: str) -> AsyncIterator[Cluster]:
    async with configured_cluster() as (url, topology), contextlib.AsyncExitStack() as stack:
        engines = LocalCluster(topo.split_url(url)[0], topology)
        await engines.start()
        writer = DbWriter(url, postgres_url, lease_ms=2_000)
        await writer.start()
        stop = asyncio.Event()
        writing = asyncio.create_task(writer.run(stop))
        running = Cluster(url, postgres_url, engines)
        try:
            yield running
        finally:
            await stack.aclose()
            stop.set()
            await writing
            await writer.close()
            await running.engines.stop()


async def add_gateway(cluster: Cluster, stack: contextlib.AsyncExitStack, **options: Any) -> Gateway:
    config = GatewayConfig(cluster.url, cluster.database_url, **options)
    gateway = await stack.enter_async_context(serve_gateway(config))
    cluster.gateways.append(gateway)
    return gateway


async def user(gateway: Gateway, funded: bool = True) -> InvestoClient:
    client = InvestoClient(gateway.url, generate_key_pair()[0])
    await client.register(f"u{id(client)}")
    if funded:
        await client.claim_demo_funds()
    return client


def on(client: InvestoClient, gateway: Gateway) -> InvestoClient:
    """The same account (key) talking to another gateway."""
    other = InvestoClient(gateway.url, client.private_key, api_key=client.api_key)
    return other


def balances(account: dict[str, Any]) -> dict[str, tuple[D, D]]:
    return {b["asset"]: (D(b["free"]), D(b["locked"])) for b in account["balances"]}


async def error_of(call: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        await call
    return caught.value


# --------------------------------------------------------------------------------------------


async def test_orders_fills_and_cancels_read_their_writes(cluster: Cluster) -> None:
    async with contextlib.AsyncExitStack() as stack:
        gateway = await add_gateway(cluster, stack)
        clients = [await user(gateway) for _ in range(2)]
        maker, taker = clients
        assert {c.api_key for c in clients}  # two users; ids alternate between the accounts shards
        ids = [(await c.account())["uid"] for c in clients]
        assert {i % 2 for i in ids} == {0, 1}, "the users should live on both accounts shards"
        start = balances(await maker.account())
        assert start["INR"] == (D("1000000.00000000"), 0) and start["A"] == (D("10000"), 0)

        for symbol in (A, B):  # one market on each matching shard
            ask = await maker.place_order(
                symbol, "SELL", "LIMIT", quantity="3", price="100", timeInForce="GTC"
            )
            assert ask["status"] == "NEW"
            book = await maker.depth(symbol)  # right after the answer: the replica has it
            assert book["asks"] == [["100.00000000", "3.00000000"]] and book["bids"] == []
            assert (await maker.book_ticker(symbol))["askQty"] == "3.00000000"
        held = balances(await maker.account())
        assert held["A"] == (D("9997"), D("3")) and held["B"] == (D("9997"), D("3"))

        bought = await taker.place_order(A, "BUY", "MARKET", quantity="2")
        assert bought["status"] == "FILLED" and bought["executedQty"] == "2.00000000"
        # read-your-writes right after the fill: balances on both users' shards, book, SQL history
        notional, fee_maker, fee_taker = D(200), D("0.20"), D("0.40")
        assert balances(await taker.account())["A"] == (D("10002"), 0)
        assert balances(await taker.account())["INR"][0] == D(1_000_000) - notional - fee_taker
        after = balances(await maker.account())
        assert after["A"] == (D("9997"), D("1")) and after["INR"][0] == D(1_000_000) + notional - fee_maker
        assert (await maker.depth(A))["asks"] == [["100.00000000", "1.00000000"]]
        mine = await taker.my_trades(A)
        assert [(t["price"], t["qty"], t["isBuyer"]) for t in mine] == [("100.00000000", "2.00000000", True)]
        orders = await maker.signed("GET", "/api/v3/allOrders", symbol=A)
        ask_id = orders[0]["orderId"]
        assert [(o["orderId"], o["status"], o["executedQty"]) for o in orders] == [
            (ask_id, "PARTIALLY_FILLED", "2.00000000")
        ]
        assert (await maker.get_order(A, orderId=ask_id))["status"] == "PARTIALLY_FILLED"
        assert len(await maker.trades(A)) == 1
        assert len(await maker.public("GET", "/api/v3/klines", symbol=A, interval="1m")) == 1

        canceled = await maker.cancel_order(A, orderId=ask_id)
        assert canceled["status"] == "CANCELED" and canceled["executedQty"] == "2.00000000"
        assert (await maker.depth(A))["asks"] == []
        assert balances(await maker.account())["A"] == (D("9998"), 0)
        assert [o["symbol"] for o in await maker.open_orders()] == [B]
        assert len(await maker.cancel_all(B)) == 1
        assert await maker.open_orders() == []

        state = await maker.state()
        assert set(state) == {"offset", "stateHash", "shards"} and len(state["shards"]) == 4
        health = (await httpx.AsyncClient().get(gateway.url + "/health")).json()
        assert health["ready"] is True and health["offset"] == state["offset"]
        for c in clients:
            await c.close()


async def test_the_user_stream_over_the_cluster(cluster: Cluster) -> None:
    async with contextlib.AsyncExitStack() as stack:
        gateway = await add_gateway(cluster, stack)
        maker, taker = await user(gateway), await user(gateway, funded=False)
        await taker.claim_demo_funds("INR")
        key = (await taker.signed("POST", "/api/v3/userDataStream"))["listenKey"]
        got: list[dict[str, Any]] = []
        async with websockets.connect(f"ws://127.0.0.1:{gateway.port}/ws/{key}") as ws:
            reader = asyncio.create_task(_read(ws, got))
            await maker.place_order(A, "SELL", "LIMIT", quantity="2", price="100", timeInForce="GTC")
            await taker.place_order(A, "BUY", "LIMIT", quantity="5", price="101", timeInForce="GTC")

            def settled() -> bool:
                positions = [m for m in got if m["e"] == "outboundAccountPosition"]
                return any({b["a"] for b in p["B"]} == {"A", "INR"} for p in positions)

            await _until(lambda: len([m for m in got if m["e"] == "executionReport"]) >= 2 and settled())
            reports = [(m["x"], m["X"], m["z"]) for m in got if m["e"] == "executionReport"]
            assert reports == [("NEW", "NEW", "0.00000000"), ("TRADE", "PARTIALLY_FILLED", "2.00000000")]
            expected = await taker.account()  # the position matches the account endpoint
            last = [m for m in got if m["e"] == "outboundAccountPosition"][-1]
            assert {b["a"]: (b["f"], b["l"]) for b in last["B"]} == {
                b["asset"]: (b["free"], b["locked"])
                for b in expected["balances"]
                if b["asset"] in ("A", "INR")
            }
            await taker.claim_demo_funds("A", "5")  # a deposit: balanceUpdate on the accounts shard
            await _until(lambda: any(m["e"] == "balanceUpdate" for m in got))
            assert [m["d"] for m in got if m["e"] == "balanceUpdate"] == ["5.00000000"]
            reader.cancel()
        await taker.cancel_all(A)
        for c in (maker, taker):
            await c.close()


async def test_replicas_step_only_for_reads_until_a_user_stream_opens(cluster: Cluster) -> None:
    async with contextlib.AsyncExitStack() as stack:
        gateway = await add_gateway(cluster, stack)
        maker = await user(gateway)
        assert gateway.node.view is not None
        replica = gateway.node.view.replicas[("matching", 0)]  # the shard of market A
        redis = aioredis.Redis.from_url(topo.split_url(cluster.url)[0])
        done_key = replica.shard.topology.done_key("matching", 0)
        before = replica.applied
        for price in ("100", "101", "102"):
            await maker.place_order(A, "SELL", "LIMIT", quantity="1", price=price, timeInForce="GTC")
        await asyncio.sleep(0.6)  # orders only, no reads and no stream: the replica rests
        assert replica.applied == before < int(await redis.get(done_key) or 0)
        assert [level[0] for level in (await maker.depth(A))["asks"]] == [
            "100.00000000", "101.00000000", "102.00000000",
        ]  # fmt: skip
        assert replica.applied > before  # the read made it catch up

        await maker.place_order(A, "SELL", "LIMIT", quantity="1", price="103", timeInForce="GTC")
        key = (await maker.signed("POST", "/api/v3/userDataStream"))["listenKey"]
        got: list[dict[str, Any]] = []
        async with websockets.connect(f"ws://127.0.0.1:{gateway.port}/ws/{key}") as ws:
            reader = asyncio.create_task(_read(ws, got))
            await asyncio.sleep(0.3)  # the orders placed before the stream opened never show up
            assert not [m for m in got if m["e"] == "executionReport"]
            placed = await maker.place_order(A, "SELL", "LIMIT", quantity="1", price="104", timeInForce="GTC")
            await _until(lambda: any(m["e"] == "executionReport" for m in got))
            reports = [(m["i"], m["x"]) for m in got if m["e"] == "executionReport"]
            assert reports == [(placed["orderId"], "NEW")]
            # eager now that a stream is open: the replica follows without reads
            published = int(await redis.get(done_key) or 0)
            await _until(lambda: replica.applied >= published)
            reader.cancel()
        await maker.cancel_all(A)
        await maker.close()
        await redis.aclose()


async def test_keys_registered_on_one_gateway_and_revoked_on_another(cluster: Cluster) -> None:
    async with contextlib.AsyncExitStack() as stack:
        first = await add_gateway(cluster, stack, key_sweep_s=0.2)
        second = await add_gateway(cluster, stack, key_sweep_s=0.2)
        alice = await user(first)
        there = on(alice, second)
        assert (await there.account())["uid"] == (await alice.account())["uid"]  # looked up in SQL

        private_key, public_key = generate_key_pair()
        added = await there.signed("POST", "/api/v1/investo/keys", publicKey=public_key_to_pem(public_key))
        spare_here = InvestoClient(first.url, private_key, api_key=added["apiKey"])
        spare_there = InvestoClient(second.url, private_key, api_key=added["apiKey"])
        await spare_here.account()  # the key added on the second gateway works on the first

        await spare_here.signed("DELETE", "/api/v1/investo/keys", apiKey=alice.api_key)
        for client in (alice, there):  # announced: gone everywhere at once
            assert (await error_of(client.account())).code == -2015

        # a revocation nobody announced (written to SQL only) is swept within key_sweep_s
        await spare_there.account()
        assert second.node.db is not None
        assert await queries.revoke_key(second.node.db, (await spare_there.account())["uid"], added["apiKey"])
        await asyncio.sleep(0.8)
        for client in (spare_here, spare_there):
            assert (await error_of(client.account())).code == -2015
        for client in (alice, there, spare_here, spare_there):
            await client.close()


async def test_a_request_replayed_to_another_gateway_is_refused(cluster: Cluster) -> None:
    async with contextlib.AsyncExitStack() as stack:
        first, second = await add_gateway(cluster, stack), await add_gateway(cluster, stack)
        alice = await user(first)
        assert alice.private_key is not None and alice.api_key is not None
        query = sign_params({"symbol": A, "timestamp": _now_ms(), "recvWindow": 5_000}, alice.private_key)
        headers = {API_KEY_HEADER: alice.api_key}
        async with httpx.AsyncClient() as http:
            ok = await http.get(f"{first.url}/api/v3/openOrders?{query}", headers=headers)
            assert ok.status_code == 200, ok.text
            replayed = await http.get(f"{second.url}/api/v3/openOrders?{query}", headers=headers)
        assert replayed.status_code == 400 and replayed.json()["code"] == -1022, replayed.text
        await alice.close()


async def test_an_order_replayed_to_another_gateway_is_refused_and_executed_once(cluster: Cluster) -> None:
    """A new order's replay mark is set by its append (one round trip): the mark still holds
    across gateways, also for two copies racing, and a replayed bad order is refused as a replay."""
    async with contextlib.AsyncExitStack() as stack:
        first, second = await add_gateway(cluster, stack), await add_gateway(cluster, stack)
        alice = await user(first)
        assert alice.private_key is not None and alice.api_key is not None
        headers = {API_KEY_HEADER: alice.api_key}

        def signed_order(client_id: str, side: str = "SELL") -> str:
            params = {
                "symbol": A, "side": side, "type": "LIMIT", "timeInForce": "GTC", "quantity": "1",
                "price": "150", "newClientOrderId": client_id, "timestamp": _now_ms(), "recvWindow": 5_000,
            }  # fmt: skip
            assert alice.private_key is not None
            return sign_params(params, alice.private_key)

        async with httpx.AsyncClient() as http:
            once = signed_order("once")
            ok = await http.post(f"{first.url}/api/v3/order?{once}", headers=headers)
            assert ok.status_code == 200, ok.text
            replayed = await http.post(f"{second.url}/api/v3/order?{once}", headers=headers)
            assert replayed.status_code == 400 and replayed.json()["code"] == -1022, replayed.text

            racing = signed_order("racing")
            answers = await asyncio.gather(
                *(http.post(f"{g.url}/api/v3/order?{racing}", headers=headers) for g in (first, second))
            )
            codes = sorted(a.status_code for a in answers)
            assert codes == [200, 400], [a.text for a in answers]
            assert next(a for a in answers if a.status_code == 400).json()["code"] == -1022

            bad = signed_order("bad", side="SIDEWAYS")
            refused = await http.post(f"{first.url}/api/v3/order?{bad}", headers=headers)
            assert refused.status_code == 400 and refused.json()["code"] != -1022, refused.text
            replayed_bad = await http.post(f"{second.url}/api/v3/order?{bad}", headers=headers)
            assert replayed_bad.status_code == 400 and replayed_bad.json()["code"] == -1022, replayed_bad.text

        open_orders = await on(alice, second).signed("GET", "/api/v3/openOrders", symbol=A)
        assert sorted(o["clientOrderId"] for o in open_orders) == ["once", "racing"]
        await alice.close()


async def test_the_demo_limit_holds_across_gateways(cluster: Cluster) -> None:
    async with contextlib.AsyncExitStack() as stack:
        first, second = await add_gateway(cluster, stack), await add_gateway(cluster, stack)
        alice = await user(first, funded=False)
        there = on(alice, second)
        racers = [on(alice, gateway) for gateway in (first, second, first, second)]
        for n, racer in enumerate(racers):
            racer.recv_window += n  # four different requests (identical ones would be replays)
        results = await asyncio.gather(
            *(c.claim_demo_funds("INR", "600000") for c in racers), return_exceptions=True
        )
        granted = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, ApiError)]
        assert len(granted) == 1 and len(refused) == 3, results
        assert all(r.code == -1130 and "leaves 400000.00" in r.msg for r in refused), refused
        assert balances(await there.account())["INR"] == (D("600000.00000000"), 0)
        there.recv_window -= 1
        rest = await asyncio.gather(
            alice.claim_demo_funds("INR"), there.claim_demo_funds("INR"), return_exceptions=True
        )
        assert sorted(type(r).__name__ for r in rest) == ["ApiError", "dict"], rest
        deposits = [r["deposits"] for r in rest if isinstance(r, dict)]
        assert deposits == [[{"asset": "INR", "amount": "400000.00000000"}]]
        assert [r.code for r in rest if isinstance(r, ApiError) and "leaves 0.00" in r.msg] == [-1130]
        assert balances(await alice.account())["INR"] == (D("1000000.00000000"), 0)
        for client in (alice, there, *racers):
            await client.close()


async def test_status_unknown_while_the_engines_are_down(cluster: Cluster) -> None:
    async with contextlib.AsyncExitStack() as stack:
        gateway = await add_gateway(cluster, stack, reply_timeout_s=1.0, read_timeout_s=1.0)
        alice = await user(gateway)
        await cluster.engines.stop()
        unknown = await error_of(
            alice.place_order(
                A, "BUY", "LIMIT", quantity="1", price="90", timeInForce="GTC", newClientOrderId="lost-1"
            )
        )
        assert (unknown.status, unknown.code) == (503, -1007) and "origClientOrderId=lost-1" in unknown.msg
        assert (await alice.depth(A))["bids"] == []  # the book as published: nothing answered is missing
        down = await error_of(alice.account())  # its shard's input holds the order, not yet applied
        assert (down.status, down.code) == (503, -1001) and "did not catch up" in down.msg
        cluster.engines = LocalCluster(cluster.engines.server_url, cluster.engines.topology)
        await cluster.engines.start()  # the order waited in its shard's input
        found = None
        async with asyncio.timeout(5):  # the engines work through their inputs: then it is there
            while found is None:
                with contextlib.suppress(ApiError):
                    found = await alice.get_order(A, origClientOrderId="lost-1")
                await asyncio.sleep(0.05)
        assert (found["status"], found["price"]) == ("NEW", "90.00000000")
        assert (await alice.depth(A))["bids"] == [["90.00000000", "1.00000000"]]
        await alice.cancel_all(A)
        await alice.close()


# --------------------------------------------------------------------------------------------


def _now_ms() -> int:
    import time

    return time.time_ns() // 1_000_000


async def _read(ws: Any, into: list[dict[str, Any]]) -> None:
    with contextlib.suppress(websockets.ConnectionClosed):
        async for message in ws:
            into.append(orjson.loads(message))


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_gateway_follows_a_new_shard_map(cluster: Cluster) -> None:
    """Markets moved between matching shards (engines stopped, nothing in flight): the gateway
    replicates the new shards without a restart and serves the markets from their new homes."""
    async with contextlib.AsyncExitStack() as stack:
        gateway = await add_gateway(cluster, stack)
        alice = await user(gateway, funded=False)  # SQL only: no engine has applied anything yet
        old = cluster.engines.topology
        await cluster.engines.stop()
        server_url, namespace = topo.split_url(cluster.url)
        admin = aioredis.Redis.from_url(server_url)
        try:
            moved = dict(old.matching, AINR=1, BINR=0)
            new = await topo.store(admin, topo.Topology(namespace, old.markets_toml, moved, 2))
        finally:
            await admin.aclose()
        cluster.engines = LocalCluster(server_url, new)
        await cluster.engines.start()
        await _until(
            lambda: gateway.node.topology is not None and gateway.node.topology.version == new.version
        )
        assert gateway.node.view is not None and gateway.node.view.topology.matching_shard("AINR") == 1
        await alice.claim_demo_funds()
        placed = await alice.place_order(A, "BUY", "LIMIT", quantity="2", price="95", timeInForce="GTC")
        assert placed["status"] == "NEW"
        assert (await alice.depth(A))["bids"] == [["95.00000000", "2.00000000"]]
        replica = gateway.node.view.replicas[("matching", 1)].shard
        assert isinstance(replica, MatchingShard) and replica.engines["AINR"].depth()[0] == [(1900, 2)]
        assert [o["orderId"] for o in await alice.open_orders(A)] == [placed["orderId"]]
        await alice.cancel_all(A)
        await alice.close()
