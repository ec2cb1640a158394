"""The private user stream in process: listen keys over signed REST, reports and balances over /ws/<key>.

Each user sees only their own ``executionReport`` and ``outboundAccountPosition``; a key
is unguessable, owned by one user, extended by PUT, closed by DELETE and expires after
60 minutes without a keep-alive.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import websockets
from test_ws import Reader, Running, serve, trader

from investo.client import ApiError, InvestoClient
from investo.marketdata.user import ListenKeys

SYMBOL = "TATAINR"


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    async with serve(tmp_path) as r:
        yield r


async def test_user_stream_reports_and_isolation(running: Running) -> None:
    alice = await trader(running, "alice")
    bob = await trader(running, "bob")
    try:
        ka = (await alice.signed("POST", "/api/v3/userDataStream"))["listenKey"]
        kb = (await bob.signed("POST", "/api/v3/userDataStream"))["listenKey"]
        assert ka != kb and len(ka) >= 60
        assert (await alice.signed("POST", "/api/v3/userDataStream"))["listenKey"] == ka  # same live key
        wa = Reader(await websockets.connect(f"{running.ws}/ws/{ka}"))
        wb = Reader(await websockets.connect(f"{running.ws}/stream?streams={kb}"))
        await asyncio.sleep(0.1)
        sell = await alice.place_order(SYMBOL, "SELL", "LIMIT", quantity="3", price="1000", timeInForce="GTC")
        buy = await bob.place_order(SYMBOL, "BUY", "LIMIT", quantity="5", price="1000", timeInForce="GTC")
        await bob.cancel_order(SYMBOL, orderId=buy["orderId"])

        def reports(got: list[dict]) -> list[dict]:
            return [m for m in got if m.get("e") == "executionReport"]

        got_a = await wa.wait_for(lambda g: [r["x"] for r in reports(g)] == ["NEW", "TRADE"])
        await wb.wait_for(
            lambda g: (
                [r["data"]["x"] for r in g if r["data"].get("e") == "executionReport"]
                == ["NEW", "TRADE", "CANCELED"]
            )
        )
        await asyncio.sleep(0.2)
        ra = reports(got_a)
        assert {r["i"] for r in ra} == {sell["orderId"]}
        new, trade = ra
        assert new["X"] == "NEW" and new["S"] == "SELL" and Decimal(new["q"]) == 3
        assert trade["X"] == "FILLED" and trade["m"] is True and Decimal(trade["l"]) == 3
        assert Decimal(trade["L"]) == 1000 and Decimal(trade["z"]) == 3 and trade["N"] == "INR"
        assert Decimal(trade["Z"]) == 3000 and Decimal(trade["n"]) == Decimal("3")  # maker 10 bps
        assert trade["t"] >= 0 and trade["w"] is False
        data_b = [m["data"] for m in wb.got]
        rb = reports(data_b)
        assert {r["i"] for r in rb} == {buy["orderId"]}
        assert [r["X"] for r in rb] == ["NEW", "PARTIALLY_FILLED", "CANCELED"]
        assert rb[1]["m"] is False and rb[1]["w"] is True and rb[2]["w"] is False
        assert all(set(r) >= set("eEscSofqpPFgCxXrilzLnNTtIwmMOZYQWV") for r in ra + rb)
        # balances: the last position of each user matches /api/v3/account
        for client, data in ((alice, [m for m in got_a]), (bob, data_b)):
            positions = [m for m in data if m.get("e") == "outboundAccountPosition"]
            assert positions
            latest: dict[str, tuple[str, str]] = {}
            for p in positions:
                for b in p["B"]:
                    latest[b["a"]] = (b["f"], b["l"])
            account = {b["asset"]: (b["free"], b["locked"]) for b in (await client.account())["balances"]}
            for asset, (free, locked) in latest.items():
                assert Decimal(free) == Decimal(account[asset][0]), asset
                assert Decimal(locked) == Decimal(account[asset][1]), asset
        # nobody sees anything of the other
        blob_a = orjson.dumps(got_a).decode()
        assert str(buy["orderId"]) not in [str(r["i"]) for r in ra] and buy["clientOrderId"] not in blob_a
        assert sell["clientOrderId"] not in orjson.dumps(data_b).decode()

        # keys are the owner's only: bob cannot extend or close alice's key, nor use a made-up one
        for method in ("PUT", "DELETE"):
            with pytest.raises(ApiError) as error:
                await bob.signed(method, "/api/v3/userDataStream", listenKey=ka)
            assert error.value.code == -1125
        with pytest.raises(ApiError) as error:
            await alice.signed("PUT", "/api/v3/userDataStream", listenKey="nope" * 16)
        assert error.value.code == -1125
        assert await alice.signed("PUT", "/api/v3/userDataStream", listenKey=ka) == {}
        # an unsigned call is refused (zero trust)
        headers = {"X-MBX-APIKEY": alice.api_key or ""}
        response = await alice._http.post("/api/v3/userDataStream", headers=headers)
        assert response.status_code in (400, 401)
        # subscribing to a key that is not live is refused; to a live one (own connection) works
        async with websockets.connect(f"{running.ws}/ws") as ws:
            await ws.send(orjson.dumps({"method": "SUBSCRIBE", "params": ["x" * 64], "id": 1}).decode())
            assert "error" in orjson.loads(await ws.recv())
        # DELETE closes: listenKeyExpired, then nothing more
        assert await alice.signed("DELETE", "/api/v3/userDataStream", listenKey=ka) == {}
        await wa.wait_for(lambda g: g[-1].get("e") == "listenKeyExpired")
        count = len(wa.got)
        await alice.place_order(SYMBOL, "SELL", "LIMIT", quantity="1", price="1200", timeInForce="GTC")
        await asyncio.sleep(0.3)
        assert len(wa.got) == count
        await wa.close()
        await wb.close()
    finally:
        await alice.close()
        await bob.close()


def test_listen_keys_expire_after_an_hour_without_keep_alive() -> None:
    now = [1_000]
    keys = ListenKeys(lambda: now[0])
    expired: list[str] = []
    keys.on_expired = expired.append
    k1 = keys.create(1)
    k2 = keys.create(2)
    assert k1 != k2 and keys.user_of(k1) == 1 and keys.user_of(k2) == 2
    now[0] += 59 * 60_000
    assert keys.keep_alive(1, k1) and not keys.keep_alive(2, k1)
    now[0] += 2 * 60_000  # k2: 61 minutes without keep-alive
    assert keys.user_of(k2) is None and k2 not in keys and expired == [k2]
    assert keys.user_of(k1) == 1
    now[0] += 60 * 60_000
    assert keys.sweep() == [k1] and len(keys) == 0
    assert keys.create(1) != k1


async def test_user_stream_survives_restart_with_open_orders(tmp_path: Path) -> None:
    async with serve(tmp_path) as running:
        alice = await trader(running, "alice")
        await alice.place_order(SYMBOL, "SELL", "LIMIT", quantity="2", price="1000", timeInForce="GTC")
        await alice.close()
        key = alice.api_key
        private_key = alice.private_key
    async with serve(tmp_path) as running, InvestoClient(running.http, private_key, key) as alice:
        bob = await trader(running, "bob")
        lk = (await alice.signed("POST", "/api/v3/userDataStream"))["listenKey"]
        reader = Reader(await websockets.connect(f"{running.ws}/ws/{lk}"))
        await asyncio.sleep(0.1)
        await bob.place_order(SYMBOL, "BUY", "LIMIT", quantity="1", price="1000", timeInForce="GTC")
        got = await reader.wait_for(lambda g: any(m.get("x") == "TRADE" for m in g))
        trade = next(m for m in got if m.get("x") == "TRADE")
        assert trade["X"] == "PARTIALLY_FILLED" and Decimal(trade["l"]) == 1
        await reader.close()
        await bob.close()
