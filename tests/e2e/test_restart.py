"""Durability of a real `investo up`: SIGKILL mid-stream, SIGKILL at rest, SIGTERM, snapshots + replay.

What an acknowledgement promises: the command is in the log. So after any restart every
acknowledged order is found with a status its acknowledgement allows, nothing is applied
twice (order ids unique, trade ids contiguous) and each user's balances are exactly what
their trades and open orders imply. After a kill with nothing in flight the engine comes
back to the very same ``stateHash`` at the very same log offset.
"""

from __future__ import annotations

import asyncio
import random
import re
import signal
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any

import httpx
from harness import (
    DEMO_INR,
    DEMO_SHARES,
    SYMBOL,
    TAKER_BPS,
    Account,
    Api,
    Server,
    anew_user,
    binance_error,
    ok,
)

from investo.client import ApiError, InvestoClient

D = Decimal
MakeServer = Callable[..., Server]
FINAL = {"FILLED", "CANCELED", "EXPIRED", "EXPIRED_IN_MATCH"}
OPEN = {"NEW", "PARTIALLY_FILLED"}


# --------------------------------------------------------------------------------------------
# A stream of orders from several users at once, recording what was acknowledged
# --------------------------------------------------------------------------------------------


@dataclass
class Record:
    sent: dict[str, dict[str, Any]] = field(default_factory=dict)  # client order id -> params
    acks: dict[str, dict[str, Any]] = field(default_factory=dict)  # client order id -> answer
    refused: dict[str, int] = field(default_factory=dict)  # client order id -> error code
    cancels: dict[int, dict[str, Any]] = field(default_factory=dict)  # order id -> cancel answer
    cancel_sent: set[int] = field(default_factory=set)
    cut: list[str] = field(default_factory=list)  # requests that never got an answer
    owner: dict[str, Account] = field(default_factory=dict)


def next_order(rng: random.Random) -> dict[str, str]:
    """Resting orders away from 1000, crossing orders through it, some market orders."""
    roll = rng.random()
    side = rng.choice(["BUY", "SELL"])
    qty = str(rng.randint(1, 4))
    if roll < 0.5:  # rests
        price = rng.randint(950, 990) if side == "BUY" else rng.randint(1010, 1050)
        return {"side": side, "type": "LIMIT", "timeInForce": "GTC", "quantity": qty, "price": str(price)}
    if roll < 0.85:  # crosses (trades against resting orders, or rests deep)
        price = rng.randint(1010, 1050) if side == "BUY" else rng.randint(950, 990)
        tif = rng.choice(["GTC", "GTC", "IOC"])
        return {"side": side, "type": "LIMIT", "timeInForce": tif, "quantity": qty, "price": f"{price}.05"}
    return {"side": side, "type": "MARKET", "quantity": qty}


async def trade_stream(
    base_url: str,
    account: Account,
    tag: str,
    record: Record,
    stop: asyncio.Event,
    seed: str,
    limit: int = 10**9,
) -> None:
    rng = random.Random(seed)
    mine: list[int] = []  # order ids acknowledged open
    async with InvestoClient(base_url, account.private_key, account.api_key, timeout=10) as client:
        for i in range(limit):
            if stop.is_set():
                return
            try:
                if mine and rng.random() < 0.15:
                    order_id = mine.pop(rng.randrange(len(mine)))
                    record.cancel_sent.add(order_id)
                    try:
                        record.cancels[order_id] = await client.cancel_order(SYMBOL, orderId=order_id)
                    except ApiError as error:
                        assert error.code == -2011, error  # filled or expired meanwhile
                    continue
                cid = f"{tag}-{i}"
                params = next_order(rng)
                record.sent[cid] = params
                record.owner[cid] = account
                try:
                    answer = await client.place_order(SYMBOL, newClientOrderId=cid, **params)
                except ApiError as error:
                    assert error.status < 500, error
                    record.refused[cid] = error.code
                    continue
                record.acks[cid] = answer
                if answer["status"] in OPEN:
                    mine.append(answer["orderId"])
            except httpx.HTTPError as error:  # the server died under us
                record.cut.append(f"{tag}: {error!r}")
                return


async def run_streams(
    server: Server,
    accounts: list[Account],
    record: Record,
    stream: str,
    *,
    kill_after: int | None,
    limit: int,
) -> None:
    """Every account trades at once; with ``kill_after``, SIGKILL the server after that many more acks.

    ``record`` accumulates over several streams (``stream`` keeps their client order ids apart).
    """
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(
            trade_stream(
                server.base_url, a, f"{stream}u{a.user_id}", record, stop, f"{stream}-{a.user_id}", limit
            )
        )
        for a in accounts
    ]
    if kill_after is not None:
        kill_at = len(record.acks) + kill_after
        while len(record.acks) < kill_at:
            assert not all(t.done() for t in tasks), "the streams ended before the kill"
            await asyncio.sleep(0.002)
        server.kill9()  # requests from the other streams are in flight right now
        # No stop signal: each stream ends at its first request the kill cuts off (one in
        # flight, or the next one), so a kill between two requests of every stream still
        # cuts requests off.
    await asyncio.gather(*tasks)


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def buy_hold(price: str, remaining: Decimal) -> Decimal:
    notional = D(price) * remaining
    return notional + (notional * TAKER_BPS / 10_000).quantize(D("0.01"), rounding=ROUND_DOWN)


def all_orders(api: Api, account: Account) -> list[dict[str, Any]]:
    orders = api.call("GET", "/api/v3/allOrders", account, symbol=SYMBOL, orderId=0, limit=1000)
    assert len(orders) < 1000
    return list(orders)


def check_books_balance(api: Api, accounts: list[Account]) -> dict[int, list[dict[str, Any]]]:
    """Order ids unique, trade ids contiguous, and every balance exactly what trades and open orders imply."""
    trades = api.public("/api/v3/trades", symbol=SYMBOL, limit=1000)
    assert len(trades) < 1000
    ids = [t["id"] for t in trades]
    assert ids == list(range(1, len(ids) + 1)), f"trade ids must be contiguous from 1: {ids}"
    by_id = {t["id"]: t for t in trades}
    seen_sides: Counter[int] = Counter()
    orders_of: dict[int, list[dict[str, Any]]] = {}
    order_ids: list[int] = []
    for account in accounts:
        orders = all_orders(api, account)
        orders_of[account.user_id] = orders
        order_ids += [o["orderId"] for o in orders]
        mine = api.call("GET", "/api/v3/myTrades", account, symbol=SYMBOL, limit=1000)
        assert len(mine) < 1000
        inr, tata = DEMO_INR, DEMO_SHARES
        for t in mine:
            public = by_id[t["id"]]
            assert (t["price"], t["qty"], t["quoteQty"]) == (
                public["price"],
                public["qty"],
                public["quoteQty"],
            )
            seen_sides[t["id"]] += 1
            if t["isBuyer"]:
                inr -= D(t["quoteQty"]) + D(t["commission"])
                tata += D(t["qty"])
            else:
                inr += D(t["quoteQty"]) - D(t["commission"])
                tata -= D(t["qty"])
        open_orders = api.open_orders(account)
        assert sorted(o["orderId"] for o in open_orders) == sorted(
            o["orderId"] for o in orders if o["status"] in OPEN
        )
        locked_tata = sum(
            (D(o["origQty"]) - D(o["executedQty"]) for o in open_orders if o["side"] == "SELL"), D(0)
        )
        locked_inr = sum(
            (
                buy_hold(o["price"], D(o["origQty"]) - D(o["executedQty"]))
                for o in open_orders
                if o["side"] == "BUY"
            ),
            D(0),
        )
        balances = api.balances(account)
        assert balances["TATA"] == (tata - locked_tata, locked_tata), f"user {account.user_id} TATA"
        assert balances["INR"] == (inr - locked_inr, locked_inr), f"user {account.user_id} INR"
        assert balances["ZOMATO"] == (DEMO_SHARES, D(0))
    assert len(order_ids) == len(set(order_ids)), "an order id was used twice"
    assert set(seen_sides) == set(ids) and set(seen_sides.values()) <= {2}, (
        "each trade has one buyer, one seller"
    )
    return orders_of


def check_acknowledged(api: Api, record: Record, orders_of: dict[int, list[dict[str, Any]]]) -> None:
    """Every acknowledged order is there, as its acknowledgement (and later events) allow."""
    stored = {o["clientOrderId"]: o for orders in orders_of.values() for o in orders}
    assert set(stored) <= set(record.sent), "an order nobody sent"
    trades = api.public("/api/v3/trades", symbol=SYMBOL, limit=1000)
    my_trades: dict[int, dict[int, dict[str, Any]]] = {}
    for cid, ack in record.acks.items():
        found = api.get_order(record.owner[cid], orderId=ack["orderId"])
        assert found == stored[cid], cid
        assert (found["clientOrderId"], found["side"], found["type"], found["origQty"]) == (
            cid, ack["side"], ack["type"], ack["origQty"],
        )  # fmt: skip
        assert found["price"] == ack["price"]
        if ack["status"] in FINAL:
            assert (found["status"], found["executedQty"]) == (ack["status"], ack["executedQty"]), cid
        else:
            assert D(found["executedQty"]) >= D(ack["executedQty"]), cid
            if found["status"] == "CANCELED":
                assert ack["orderId"] in record.cancel_sent, f"{cid} canceled by nobody"
        owner = record.owner[cid]
        if owner.user_id not in my_trades:
            listed = api.call("GET", "/api/v3/myTrades", owner, symbol=SYMBOL, limit=1000)
            my_trades[owner.user_id] = {t["id"]: t for t in listed}
        for fill in ack["fills"]:  # each acknowledged fill is a trade, in the public tape and the owner's
            trade = trades[fill["tradeId"] - 1]
            assert (trade["id"], trade["price"], trade["qty"]) == (
                fill["tradeId"],
                fill["price"],
                fill["qty"],
            )
            mine = my_trades[owner.user_id][fill["tradeId"]]
            assert (mine["orderId"], mine["isBuyer"], mine["isMaker"]) == (
                ack["orderId"],
                ack["side"] == "BUY",
                False,
            )
            assert (mine["price"], mine["qty"], mine["commission"]) == (
                fill["price"],
                fill["qty"],
                fill["commission"],
            )
    for order_id, answer in record.cancels.items():
        cid = answer["origClientOrderId"]
        assert stored[cid]["status"] == "CANCELED" and stored[cid]["orderId"] == order_id
    unanswered = set(record.sent) - set(record.acks) - set(record.refused)
    for cid in unanswered:  # cut off by the kill: in the log or not, but never half there
        if cid in stored:
            assert stored[cid]["status"] in OPEN | FINAL


def snapshot_of(api: Api, accounts: list[Account]) -> dict[str, Any]:
    """Everything a client can see, to compare across a restart."""
    return {
        "state": api.state(),
        "depth": api.depth(limit=1000),
        "trades": api.public("/api/v3/trades", symbol=SYMBOL, limit=1000),
        "accounts": {a.user_id: api.balances(a) for a in accounts},
        "orders": {a.user_id: all_orders(api, a) for a in accounts},
    }


def replayed_entries(output: str) -> int:
    found = re.search(r"replayed (\d+) log entries", output)
    return int(found.group(1)) if found else 0


async def funded(server: Server, n: int) -> list[Account]:
    return list(await asyncio.gather(*(anew_user(server.base_url) for _ in range(n))))


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


async def test_kill9_mid_stream_loses_nothing_acknowledged(make_server: MakeServer) -> None:
    server = make_server()
    accounts = await funded(server, 4)
    record = Record()
    await run_streams(server, accounts, record, "a", kill_after=150, limit=10**9)
    assert not server.running
    assert len(record.acks) >= 150 and record.cut, "the kill should cut requests off"
    server.restart()
    api = Api(server.base_url)
    try:
        orders_of = check_books_balance(api, accounts)
        check_acknowledged(api, record, orders_of)
        assert sum(len(o) for o in orders_of.values()) >= len(record.acks)
        health = ok(api.get("/health"))
        assert health["offset"] == api.state()["offset"] > len(record.acks)
        # still taking orders, with fresh ids
        newest = max(o["orderId"] for orders in orders_of.values() for o in orders)
        placed = api.limit(accounts[0], "BUY", "1", "900", newClientOrderId="after-restart")
        assert placed["orderId"] > newest
        record.sent["after-restart"], record.owner["after-restart"] = {}, accounts[0]
        record.acks["after-restart"] = placed
        # a second stream and kill on the same data dir
        await run_streams(server, accounts, record, "b", kill_after=60, limit=10**9)
        server.restart()
        orders_of = check_books_balance(api, accounts)
        check_acknowledged(api, record, orders_of)
    finally:
        api.close()


async def test_clean_kill9_and_sigterm_restore_the_same_state(make_server: MakeServer) -> None:
    server = make_server()
    accounts = await funded(server, 3)
    record = Record()
    await run_streams(server, accounts, record, "a", kill_after=None, limit=40)
    api = Api(server.base_url)
    try:
        revoked_user = await anew_user(server.base_url, funded=False)
        api.call("DELETE", "/api/v1/investo/keys", revoked_user, apiKey=revoked_user.api_key)
        before = snapshot_of(api, accounts)
        assert before["state"]["offset"] > 100

        server.kill9()
        server.restart()
        after_kill = snapshot_of(api, accounts)
        assert after_kill == before
        assert replayed_entries(server.output()) == before["state"]["offset"], "no snapshot yet: all replayed"
        binance_error(api.signed("GET", "/api/v3/account", revoked_user), -2015, 401)
        assert api.call("POST", "/api/v1/investo/demo-funds", accounts[0]) == {"deposits": []}, (
            "claims persist"
        )
        assert api.state() == before["state"], "a refused claim touches nothing"
        check_acknowledged(api, record, check_books_balance(api, accounts))

        # uvicorn re-raises SIGTERM once it has shut down gracefully, so the status says SIGTERM
        assert server.terminate() in (0, -signal.SIGTERM)
        assert "Traceback" not in server.output(), server.output()
        server.restart()
        assert snapshot_of(api, accounts) == before
        assert replayed_entries(server.output()) == 0, "a graceful stop writes a snapshot: nothing to replay"

        # more trading after a restart, then a kill at rest again
        await run_streams(server, accounts, record, "b", kill_after=None, limit=15)
        again = snapshot_of(api, accounts)
        assert again["state"]["offset"] > before["state"]["offset"]
        server.kill9()
        server.restart()
        assert snapshot_of(api, accounts) == again
        check_acknowledged(api, record, check_books_balance(api, accounts))
    finally:
        api.close()


async def test_replay_from_snapshots(make_server: MakeServer) -> None:
    server = make_server("--snapshot-every", "50")
    accounts = await funded(server, 4)
    record = Record()
    await run_streams(server, accounts, record, "a", kill_after=None, limit=75)  # ~300 orders and cancels
    api = Api(server.base_url)
    try:
        before = snapshot_of(api, accounts)
        offset = before["state"]["offset"]
        assert offset >= 300
        server.kill9()
        server.restart()
        assert snapshot_of(api, accounts) == before
        replayed = replayed_entries(server.output())
        assert 0 < replayed < offset, (
            f"replayed {replayed} of {offset}: the restart should start from a snapshot"
        )
        check_acknowledged(api, record, check_books_balance(api, accounts))
        # mid-stream as well, over snapshots
        await run_streams(server, accounts, record, "b", kill_after=80, limit=10**9)
        server.restart()
        check_acknowledged(api, record, check_books_balance(api, accounts))
        settled = snapshot_of(api, accounts)
        server.kill9()
        server.restart()
        assert snapshot_of(api, accounts) == settled
    finally:
        api.close()
