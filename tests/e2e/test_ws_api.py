"""Binance's WebSocket API at ``/ws-api/v3`` on a real `investo up`: the signed user data stream.

``userDataStream.subscribe.signature`` is signed like any private call (Binance's WebSocket
API payload: the params but ``signature``, sorted by name, ``name=value`` joined by ``&``) and
refused with the REST API's codes when it is not; a subscription then gets its user's
events, and nobody else's, as ``{"subscriptionId", "event"}``. It survives the user closing
their REST listen key, and ends (``eventStreamTerminated``) when unsubscribed or when the API
key that signed it is revoked. ccxt.pro's use of it is in test_ccxt_pro.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import websockets
from harness import Account, Api, Server, anew_user, fresh_timestamp

from investo.security.signing import generate_key_pair, public_key_to_pem, sign_payload

WAIT = 5.0


def signed(account: Account, **extra: Any) -> dict[str, Any]:
    """The params of ``userDataStream.subscribe.signature``, signed as Binance's WebSocket API does."""
    params: dict[str, Any] = {"apiKey": account.api_key, "timestamp": fresh_timestamp(), **extra}
    payload = "&".join(f"{name}={value}" for name, value in sorted(params.items()))
    return {**params, "signature": sign_payload(payload, account.private_key)}


class Conn:
    """One ``/ws-api/v3`` connection: answers by request id, events in arrival order."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.answers: dict[Any, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()
        self.ids = itertools.count(1)
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self.ws:
                message = orjson.loads(raw)
                if "event" in message:
                    self.events.append(message)
                else:
                    self.answers[message["id"]] = message
                self.arrived.set()

    async def until(self, check: Any, timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                self.arrived.clear()
                await self.arrived.wait()

    async def call(self, method: str, params: Any = None, *, raw: str | None = None) -> dict[str, Any]:
        request_id = next(self.ids)
        message: dict[str, Any] = {"id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        await self.ws.send(raw if raw is not None else orjson.dumps(message).decode())
        key = None if raw is not None else request_id
        await self.until(lambda: key in self.answers)
        return self.answers.pop(key)

    def reports(self, subscription: int) -> list[dict[str, Any]]:
        return [
            m["event"]
            for m in self.events
            if m["subscriptionId"] == subscription and m["event"]["e"] == "executionReport"
        ]


@pytest.fixture
async def conn(server: Server) -> AsyncIterator[Conn]:
    async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws-api/v3") as ws:
        connection = Conn(ws)
        yield connection
        connection.reader.cancel()


def error_of(answer: dict[str, Any], code: int, status: int = 400) -> str:
    assert set(answer) == {"id", "status", "error"}, answer
    assert (answer["status"], answer["error"]["code"]) == (status, code), answer
    assert set(answer["error"]) == {"code", "msg"} and answer["error"]["msg"]
    return str(answer["error"]["msg"])


async def test_requests_and_errors(conn: Conn) -> None:
    assert await conn.call("ping") == {"id": 1, "status": 200, "result": {}}
    now = (await conn.call("time"))["result"]["serverTime"]
    assert abs(now - fresh_timestamp()) < 5_000
    assert (await conn.call("v3/ping"))["result"] == {}  # an explicit version prefix, as Binance
    assert (await conn.call("session.subscriptions"))["result"] == []
    assert "legal range" in error_of(await conn.call("order.place", {}), -1100)
    error_of(await conn.call("ping", [1, 2]), -1100)  # params must be an object
    error_of(await conn.call("", raw="{not json"), -1100)
    error_of(await conn.call("", raw='{"id": null, "params": {}}'), -1102)  # no method
    error_of(await conn.call("ping", {f"p{i}": i for i in range(65)}), -1101)  # too many params
    error_of(await conn.call("", raw='{"method": "ping", "pad": "' + "x" * 17_000 + '"}'), -1000)
    error_of(await conn.call("userDataStream.unsubscribe", {"subscriptionId": 7}), -2036)


async def test_subscription_refusals(server: Server, conn: Conn) -> None:
    account = await anew_user(server.base_url, funded=False)
    subscribe = "userDataStream.subscribe.signature"
    good = signed(account)
    error_of(await conn.call(subscribe, {k: v for k, v in good.items() if k != "signature"}), -1102)
    error_of(await conn.call(subscribe, {**good, "signature": good["signature"][::-1]}), -1022)
    error_of(await conn.call(subscribe, {**good, "timestamp": good["timestamp"] + 1}), -1022)
    error_of(await conn.call(subscribe, {**good, "signature": "ab" * 32}), -1022)  # HMAC-looking
    error_of(await conn.call(subscribe, signed(account, timestamp=fresh_timestamp() - 60_000)), -1021)
    error_of(await conn.call(subscribe, signed(account, recvWindow=70_000)), -1131)
    error_of(await conn.call(subscribe, {**signed(account), "apiKey": "nobody"}), -2015, 401)
    error_of(await conn.call(subscribe, {**signed(account), "apiKey": "bad key!"}), -2014, 401)
    error_of(await conn.call(subscribe, {**signed(account), "extra": [1]}), -1100)
    other = await anew_user(server.base_url, funded=False)
    error_of(await conn.call(subscribe, {**signed(other), "apiKey": account.api_key}), -1022)
    assert (await conn.call(subscribe, good))["result"] == {"subscriptionId": 0}
    assert "already used" in error_of(await conn.call(subscribe, good), -1022)  # a replay
    error_of(await conn.call(subscribe, signed(account, recvWindow=10_000)), -2035)  # already subscribed
    assert (await conn.call("session.subscriptions"))["result"] == [{"subscriptionId": 0}]


async def test_each_subscription_gets_its_users_events(server: Server, api: Api, conn: Conn) -> None:
    alice, bob = await anew_user(server.base_url), await anew_user(server.base_url)
    subscribe = "userDataStream.subscribe.signature"
    assert (await conn.call(subscribe, signed(alice)))["result"] == {"subscriptionId": 0}
    assert (await conn.call(subscribe, signed(bob)))["result"] == {"subscriptionId": 1}
    ask = await asyncio.to_thread(api.limit, alice, "SELL", "2", "1000")
    bid = await asyncio.to_thread(api.order, bob, side="BUY", type="MARKET", quantity="2")
    await conn.until(lambda: len(conn.reports(0)) >= 2 and len(conn.reports(1)) >= 2)
    assert {r["i"] for r in conn.reports(0)} == {ask["orderId"]}
    assert {r["i"] for r in conn.reports(1)} == {bid["orderId"]}
    assert [(r["x"], r["X"]) for r in conn.reports(0)] == [("NEW", "NEW"), ("TRADE", "FILLED")]
    assert conn.reports(1)[-1]["x"] == "TRADE" and conn.reports(1)[-1]["m"] is False

    def positions() -> set[int]:  # which subscriptions got a position (sent after the settling step)
        return {m["subscriptionId"] for m in conn.events if m["event"]["e"] == "outboundAccountPosition"}

    # distributed: a buyer's position follows its accounts shard's settlement, which may come
    # after the trade's report from the matching shard, so wait for it rather than race it
    await conn.until(lambda: positions() == {0, 1})
    assert all(set(m) == {"subscriptionId", "event"} for m in conn.events)

    # closing the REST listen key (the subscription's carrier) does not end the subscription
    key = (await asyncio.to_thread(api.call, "POST", "/api/v3/userDataStream", alice))["listenKey"]
    await asyncio.to_thread(api.call, "DELETE", "/api/v3/userDataStream", alice, listenKey=key)
    again = await asyncio.to_thread(api.limit, alice, "SELL", "1", "1010")
    await conn.until(lambda: again["orderId"] in {r["i"] for r in conn.reports(0)})

    # unsubscribing ends with eventStreamTerminated, and nothing after it
    answer = await conn.call("userDataStream.unsubscribe", {"subscriptionId": 0})
    assert answer == {"id": answer["id"], "status": 200, "result": {}}
    await conn.until(lambda: any(m["event"]["e"] == "eventStreamTerminated" for m in conn.events))
    assert (await conn.call("session.subscriptions"))["result"] == [{"subscriptionId": 1}]
    count = len(conn.reports(0))
    await asyncio.to_thread(api.cancel_all, alice)
    await asyncio.to_thread(api.limit, bob, "BUY", "1", "900")
    await conn.until(lambda: len(conn.reports(1)) >= 3)
    assert len(conn.reports(0)) == count
    await asyncio.to_thread(api.cancel_all, bob)


async def test_revoking_the_key_ends_the_subscription(server: Server, api: Api, conn: Conn) -> None:
    first = await anew_user(server.base_url)
    private_key, public_key = generate_key_pair()
    added = await asyncio.to_thread(
        api.call, "POST", "/api/v1/investo/keys", first, publicKey=public_key_to_pem(public_key)
    )
    second = Account(first.name, private_key, added["apiKey"], first.user_id)
    assert (await conn.call("userDataStream.subscribe.signature", signed(first)))["result"] == {
        "subscriptionId": 0
    }
    placed = await asyncio.to_thread(api.limit, second, "BUY", "1", "900")
    await conn.until(lambda: [r["i"] for r in conn.reports(0)] == [placed["orderId"]])
    await asyncio.to_thread(api.call, "DELETE", "/api/v1/investo/keys", second, apiKey=first.api_key)
    await conn.until(lambda: conn.events[-1]["event"]["e"] == "eventStreamTerminated")
    await asyncio.to_thread(api.cancel_all, second)
    await asyncio.sleep(0.5)
    assert conn.events[-1]["event"]["e"] == "eventStreamTerminated"
    assert (await conn.call("session.subscriptions"))["result"] == []
