"""The distributed pipeline on a real Redis: shard engines, routing, settlement across shards.

Evidence: 4 markets on 2 matching shards and 2 accounts shards give the same trades and
balances as the embedded Exchange for the same commands; value is conserved across the
whole system; a shard rebuilt from its snapshot and log reaches the same state hash; a
second engine for the same shard is fenced; a command nobody answers is "status unknown";
a shard rebuilt at a new input epoch is reloaded by a replica that had stepped past the
rebuilt engine's offsets, and refuses the publish of an engine from before the rebuild.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from cluster_fixtures import MARKETS_TOML, SYMBOLS
from investo.cluster import client as cluster_client
from investo.cluster import rebuild
from investo.cluster import topology as topo
from investo.cluster.client import ClusterClient
from investo.cluster.engine import Fenced, ShardEngine, StateLost, make_shard
from investo.cluster.local import LocalCluster
from investo.cluster.records import Envelope
from investo.cluster.replica import ShardReplica, ShardRewound
from investo.cluster.shards import AccountsShard, MatchingShard
from investo.cluster.view import ClusterView
from investo.core.exchange import Exchange
from investo.core.messages import (
    CancelOrder,
    Command,
    Deposit,
    OrderType,
    PlaceOrder,
    Side,
    TimeInForce,
    TradeExecuted,
    Withdraw,
)
from investo.host import StatusUnknown

USERS = range(1, 7)  # odd users on accounts shard 1, even on shard 0


def _funding() -> list[Command]:
    commands: list[Command] = []
    for user in USERS:
        commands.append(Deposit(0, user, "INR", 10_000_000))  # 100,000.00 INR
        commands += [Deposit(0, user, s[0], 5_000) for s in SYMBOLS]
    return commands


def _random_commands(rng: random.Random, count: int) -> list[Command]:
    commands: list[Command] = []
    placed: list[tuple[int, str, str]] = []
    for n in range(count):
        user = rng.choice(USERS)
        symbol = rng.choice(SYMBOLS)
        roll = rng.random()
        if roll < 0.15 and placed:
            owner, market, client_id = rng.choice(placed)
            commands.append(CancelOrder(0, owner, market, client_order_id=client_id))
        elif roll < 0.2:
            commands.append(Withdraw(0, user, "INR", rng.randint(1, 50_000)))
        else:
            side = rng.choice((Side.BUY, Side.SELL))
            kind = rng.choice((OrderType.LIMIT, OrderType.LIMIT, OrderType.LIMIT, OrderType.MARKET))
            tif = rng.choice((TimeInForce.GTC, TimeInForce.GTC, TimeInForce.IOC))
            price = 0 if kind == OrderType.MARKET else rng.randint(1990, 2010)  # ticks of 0.05
            client_id = f"c{n}"
            commands.append(
                PlaceOrder(
                    0, user, symbol, side, kind, tif, price, rng.randint(1, 20), client_order_id=client_id
                )
            )
            placed.append((user, symbol, client_id))
    return commands


def _trade_view(events: list[object]) -> list[tuple[object, ...]]:
    return [
        (e.market, e.price, e.qty, e.taker_side, e.maker_user, e.taker_user, e.maker_fee, e.taker_fee)
        for e in events
        if isinstance(e, TradeExecuted)
    ]


def _kinds(events: list[object]) -> list[str]:
    return [type(e).__name__ for e in events]


async def test_two_by_two_shards_trade_exactly_like_the_embedded_exchange(
    cluster: tuple[str, topo.Topology],
) -> None:
    url, topology = cluster
    engines = LocalCluster(topo.split_url(url)[0], topology)
    await engines.start()
    client = ClusterClient(url)
    await client.start()
    embedded = Exchange({s: spec.core for s, spec in topology.markets.items()})
    try:
        for command in _funding() + _random_commands(random.Random(7), 250):
            applied = await client.submit(command)
            expected = embedded.apply(applied.command)  # the same command, same ts
            assert _kinds(applied.events) == _kinds(expected), applied.command
            assert _trade_view(applied.events) == _trade_view(expected)
            await engines.drained()  # settlement reaches the accounts shards before the next command
    finally:
        await client.close()
        await engines.stop()

    shards = {key: engine.shard for key, engine in engines.engines.items()}
    accounts = [s for s in shards.values() if isinstance(s, AccountsShard)]
    assets = ["INR", *(s[0] for s in SYMBOLS)]
    for user in USERS:
        owner = accounts[user % 2].engine
        for asset in assets:
            assert owner.balance(user, asset) == embedded.accounts.balance(user, asset), (user, asset)
    # Fees: each accounts shard keeps its own copy of the fee account; together they hold the fees.
    for asset in assets:
        fees = sum(a.engine.balance(0, asset)[0] for a in accounts)
        assert fees == embedded.accounts.balance(0, asset)[0]
    # Books: the same resting orders (owner, side, price, lots) in every market.
    matching = [s for s in shards.values() if isinstance(s, MatchingShard)]
    for symbol in SYMBOLS:
        book = next(m.engines[symbol] for m in matching if symbol in m.engines)
        mine = Counter((o.user, o.side, o.price, o.qty) for o in book.open_orders())
        theirs = Counter((o.user, o.side, o.price, o.qty) for o in embedded.matching(symbol).open_orders())
        assert mine == theirs, symbol


async def test_value_is_conserved_under_concurrent_load_and_a_rebuilt_shard_has_the_same_hash(
    cluster: tuple[str, topo.Topology],
) -> None:
    url, topology = cluster
    server_url = topo.split_url(url)[0]
    engines = LocalCluster(server_url, topology, snapshot_every=97)  # snapshots and trims under way
    await engines.start()
    client = ClusterClient(url)
    await client.start()
    try:
        for command in _funding():
            await client.submit(command)
        commands = _random_commands(random.Random(11), 600)
        for start in range(0, len(commands), 40):  # 40 in flight at once, from many users
            await asyncio.gather(*(client.submit(c) for c in commands[start : start + 40]))
        await engines.drained()
    finally:
        await client.close()
        await engines.stop()

    accounts = [e.shard for e in engines.engines.values() if isinstance(e.shard, AccountsShard)]
    for asset in ["INR", *(s[0] for s in SYMBOLS)]:
        held = sum(
            a.engine.balance(user, asset)[0] + a.engine.balance(user, asset)[1]
            for a in accounts
            for user in (0, *USERS)
        )
        flows = [a.engine.flows(asset) for a in accounts]
        assert sum(settled_in for _, _, settled_in in flows) == 0, asset  # moved between shards, never made
        assert held == sum(deposited - withdrawn for deposited, withdrawn, _ in flows), asset
        for a in accounts:
            a.engine.check_invariants()
    # Reservations on the accounts shards are exactly the orders resting on the matching shards.
    reserved = {
        o.order_id: (o.user, o.market, o.side, o.price, o.remaining)
        for a in accounts
        for o in a.engine.open_orders()
    }
    resting = {
        o.order_id: (o.user, symbol, o.side, o.price, o.qty)
        for e in engines.engines.values()
        if isinstance(e.shard, MatchingShard)
        for symbol, book in e.shard.engines.items()
        for o in book.open_orders()
    }
    assert reserved == resting
    # Every shard rebuilt from Redis alone (snapshot + log tail) reaches the same state.
    for (role, shard), engine in engines.engines.items():
        rebuilt = ShardEngine(server_url, topology, role, shard)
        try:
            await rebuilt.recover()
            assert rebuilt.applied == engine.applied
            assert rebuilt.shard.state_hash() == engine.shard.state_hash(), (role, shard)
        finally:
            await rebuilt.close()


@contextlib.asynccontextmanager
async def _engines_and_client(
    cluster: tuple[str, topo.Topology], snapshot_every: int
) -> AsyncIterator[tuple[str, LocalCluster, ClusterClient]]:
    """The shard engines running on ``cluster`` and a client: (Redis server URL, engines, client)."""
    url, topology = cluster
    engines = LocalCluster(topo.split_url(url)[0], topology, snapshot_every=snapshot_every)
    await engines.start()
    client = ClusterClient(url)
    await client.start()
    try:
        yield engines.server_url, engines, client
    finally:
        await client.close()
        await engines.stop()


async def test_replicas_follow_the_engines_to_the_same_state_and_see_the_published_events(
    cluster: tuple[str, topo.Topology],
) -> None:
    topology = cluster[1]
    seen: dict[tuple[str, int], list[tuple[int, list[object]]]] = {}
    async with _engines_and_client(cluster, snapshot_every=150) as (server_url, engines, client):
        for command in _funding():
            await client.submit(command)  # before the replicas start: they begin from a snapshot or the log
        replicas = {
            key: ShardReplica(
                server_url,
                topology,
                *key,
                on_batch=lambda batch, key=key: seen.setdefault(key, []).extend(
                    (offset, list(step.output)) for offset, _, step in batch if step.published
                ),
            )
            for key in topology.every_output()
        }
        stop = asyncio.Event()
        for replica in replicas.values():
            await replica.start()
        following = [asyncio.create_task(r.follow(stop)) for r in replicas.values()]
        try:
            commands = _random_commands(random.Random(3), 400)
            for start in range(0, len(commands), 25):
                await asyncio.gather(*(client.submit(c) for c in commands[start : start + 25]))
            await engines.drained()
            for _ in range(200):
                if all(r.applied == engines.engines[k].applied for k, r in replicas.items()):
                    break
                await asyncio.sleep(0.02)
            published = {key: await _published(engine) for key, engine in engines.engines.items()}
        finally:
            stop.set()
            await asyncio.gather(*following)
    for key, replica in replicas.items():
        engine = engines.engines[key]
        assert replica.applied == engine.applied, key
        assert replica.state_hash() == engine.shard.state_hash(), key
        # what the replica saw stepping equals what the engine published, entry for entry
        observed = {offset: events for offset, events in seen.get(key, []) if events}
        assert observed, key
        assert {k: v for k, v in published[key].items() if k in observed} == observed, key
    for replica in replicas.values():
        await replica.close()


async def test_a_replica_left_behind_a_trim_reloads_the_snapshot_and_catches_up(
    cluster: tuple[str, topo.Topology],
) -> None:
    async with _engines_and_client(cluster, snapshot_every=40) as (server_url, engines, client):
        replica = ShardReplica(server_url, cluster[1], "accounts", 1)
        await replica.start()  # at offset 0; the input it needs is then trimmed away
        stop = asyncio.Event()
        try:
            for command in _funding() + _random_commands(random.Random(5), 300):
                await client.submit(command)
            await engines.drained()
            engine = engines.engines[("accounts", 1)]
            assert await engine.input.first_offset() > 1  # trimmed behind a snapshot
            following = asyncio.create_task(replica.follow(stop))
            for _ in range(200):
                if replica.applied == engine.applied:
                    break
                await asyncio.sleep(0.02)
            stop.set()
            await following
            assert replica.applied == engine.applied
            assert replica.state_hash() == engine.shard.state_hash()
        finally:
            stop.set()
            await replica.close()


async def _lose_and_rebuild(server_url: str, topology: topo.Topology, deposits: dict[int, int]) -> int:
    """Redis loses every shard's state; each is rebuilt (as `cluster rebuild` does) with only
    ``deposits`` (user -> INR) on the accounts shards, at a new epoch. Returns the epoch."""
    admin = aioredis.Redis.from_url(server_url)
    try:
        for role, number in topology.every_output():
            prefix = topology.input_prefix(role, number)
            keys = [key async for key in admin.scan_iter(match=f"{prefix}:*")]
            if keys:
                await admin.delete(*keys)
        epoch = await rebuild.new_epoch(admin)
        for role, number in topology.every_output():
            shard = make_shard(topology, role, number)
            for user, amount in deposits.items():
                if isinstance(shard, AccountsShard) and topology.accounts_shard(user) == number:
                    shard.step(Envelope(Deposit(0, user, "INR", amount)))
            await rebuild._install(server_url, admin, topology, role, number, shard, 0, epoch)
        return epoch
    finally:
        await admin.aclose()


async def test_a_replica_reloads_when_its_shard_is_rebuilt_at_a_new_epoch(
    cluster: tuple[str, topo.Topology],
) -> None:
    """The blind spot epochs close: the rebuilt engine publishes past the replica's offset before
    the replica looks; the replica must not step the new offsets on its old state."""
    url, topology = cluster
    server_url = topo.split_url(url)[0]
    key: tuple[topo.Role, int] = ("accounts", 0)
    reloads: list[int] = []
    replica = ShardReplica(server_url, topology, *key, on_reload=lambda: reloads.append(replica.applied))
    stop = asyncio.Event()
    try:
        async with _engines_and_client(cluster, snapshot_every=50_000) as (_, engines, client):
            for command in _funding():
                await client.submit(command)
            await engines.drained()
            await replica.start()
            following = asyncio.create_task(replica.follow(stop))  # eager
            async with asyncio.timeout(5):
                await replica.wait_applied(engines.engines[key].applied)
            stop.set()
            await following  # the replica does not look while Redis loses and rebuilds the shard
        stepped, old_hash, old_epoch = replica.applied, replica.state_hash(), replica.epoch
        assert stepped > 0 and old_epoch == 0  # `cluster init` wrote no epoch: the first one is 0

        epoch = await _lose_and_rebuild(server_url, topology, {2: 7_00})
        async with _engines_and_client(cluster, snapshot_every=50_000) as (_, engines, client):
            await asyncio.gather(*(client.submit(Deposit(0, 4, "INR", 100)) for _ in range(stepped + 3)))
            await engines.drained()
            engine = engines.engines[key]
            assert engine.epoch == epoch != old_epoch and engine.applied > stepped
            with pytest.raises(ShardRewound, match="epoch"):
                await replica.catch_up()  # without epochs: offsets past `stepped` on the old state
            assert replica.applied == stepped
            stop = asyncio.Event()
            following = asyncio.create_task(replica.follow(stop))
            async with asyncio.timeout(5):
                while replica.applied < engine.applied or replica.epoch != epoch:
                    await asyncio.sleep(0.01)
            assert reloads == [0]  # from the rebuilt snapshot at offset 0
            assert replica.state_hash() == engine.shard.state_hash() != old_hash
            shard = replica.shard
            assert isinstance(shard, AccountsShard)
            assert shard.engine.balance(2, "INR")[0] == 7_00  # the rebuilt state, not the old deposits
            assert shard.engine.balance(4, "INR")[0] == 100 * (stepped + 3)
    finally:
        stop.set()
        await replica.close()


async def test_an_engine_started_before_a_rebuild_cannot_publish_in_the_new_epoch(
    cluster: tuple[str, topo.Topology],
) -> None:
    """Even with ``done`` exactly where it expects it, an engine of the old epoch is refused."""
    url, topology = cluster
    server_url = topo.split_url(url)[0]
    old = ShardEngine(server_url, topology, "accounts", 0)
    new: ShardEngine | None = None
    try:
        await old.recover()
        await _lose_and_rebuild(server_url, topology, {})
        new = ShardEngine(server_url, topology, "accounts", 0)
        await new.recover()
        await new.input.append([_envelope(Deposit(1, 2, "INR", 100))])
        with pytest.raises(StateLost, match="EPOCH"):
            await old.process(await old.input.read(0, 10))  # done is 0, as the old engine expects
        await new.process(await new.input.read(0, 10))
        assert await new.published_up_to() == 1
    finally:
        await old.close()
        if new is not None:
            await new.close()


async def test_a_lazy_replica_steps_only_for_a_waiting_reader_and_skips_to_a_newer_snapshot(
    cluster: tuple[str, topo.Topology],
) -> None:
    async with _engines_and_client(cluster, snapshot_every=40) as (server_url, engines, client):
        wanted = False
        reloads: list[int] = []
        stepped: list[int] = []
        replica = ShardReplica(
            server_url, cluster[1], "accounts", 1, wanted=lambda: wanted, lazy_check_s=0.05, skip_after=100,
            on_reload=lambda: reloads.append(replica.applied),
            on_batch=lambda batch: stepped.extend(offset for offset, _, _ in batch),
        )  # fmt: skip
        await replica.start()
        await replica.catch_up()
        stop = asyncio.Event()
        following = asyncio.create_task(replica.follow(stop))
        try:
            for command in _funding():
                await client.submit(command)
            await engines.drained()
            engine = engines.engines[("accounts", 1)]
            await asyncio.sleep(0.3)  # lazy, and nobody reads: nothing is stepped
            assert replica.applied == 0 and not stepped and engine.applied > 0

            async with asyncio.timeout(5):  # a reader waits: the replica catches up, then rests again
                await replica.wait_applied(engine.applied)
            assert replica.state_hash() == engine.shard.state_hash() and not reloads
            caught_up = replica.applied

            for command in _random_commands(random.Random(7), 300):  # far behind, past a snapshot
                await client.submit(command)
            await engines.drained()
            await asyncio.sleep(0.3)
            assert replica.applied == caught_up
            snapshot = await engine.input.latest_snapshot()
            assert snapshot is not None and snapshot[0] - caught_up >= 100
            async with asyncio.timeout(5):
                await replica.wait_applied(engine.applied)
            assert reloads and reloads[0] >= snapshot[0] > caught_up  # restored, not stepped
            assert all(offset > reloads[0] for offset in stepped if offset > caught_up)
            assert replica.state_hash() == engine.shard.state_hash()

            wanted = True  # eager: follows without readers
            replica.poke()
            for command in _random_commands(random.Random(8), 20):
                await client.submit(command)
            await engines.drained()
            async with asyncio.timeout(5):
                while replica.applied < engine.applied:
                    await asyncio.sleep(0.01)
            assert replica.state_hash() == engine.shard.state_hash()
        finally:
            stop.set()
            await following
            await replica.close()


async def test_a_lazy_view_answers_from_the_rebuilt_shards_after_redis_lost_the_cluster(
    cluster: tuple[str, topo.Topology],
) -> None:
    """Lazy replicas look at their shards only when read: the read's sync finds the new epoch,
    whether the rebuilt engine is behind the replica's offset (a book) or past it (balances)."""
    url, topology = cluster
    server_url = topo.split_url(url)[0]
    admin = aioredis.Redis.from_url(server_url)
    reloads: list[int] = []
    view = ClusterView(server_url, topology, admin, wanted=lambda: False, on_reload=lambda: reloads.append(1))
    accounts: tuple[topo.Role, int] = ("accounts", 0)
    book = ("matching", topology.matching_shard("AINR"))
    try:
        async with _engines_and_client(cluster, snapshot_every=50_000) as (_, engines, client):
            for command in _funding():
                await client.submit(command)
            sell = PlaceOrder(0, 2, "AINR", Side.SELL, OrderType.LIMIT, TimeInForce.GTC, 2000, 3)
            await client.submit(sell)
            await engines.drained()
            await view.start()
            await view.sync_all()
            assert len(view.matching("AINR").open_orders()) == 1
            old_balance = view.balance(2, "INR")
            stepped = view.replicas[accounts].applied
        epoch = await _lose_and_rebuild(server_url, topology, {2: 7_00})
        async with _engines_and_client(cluster, snapshot_every=50_000) as (_, engines, client):
            await asyncio.gather(*(client.submit(Deposit(0, 4, "INR", 100)) for _ in range(stepped + 3)))
            await engines.drained()
            assert engines.engines[accounts].applied > stepped  # past the lazy replica's offset
            await view.sync([accounts], "done")
            assert view.balance(2, "INR") == (7_00, 0) != old_balance
            assert view.balance(4, "INR") == (100 * (stepped + 3), 0)
            await view.sync(view.shards_of_markets(["AINR"]), "done")  # done 0: behind the replica
            assert view.matching("AINR").open_orders() == []
            for key in (accounts, book):
                assert view.replicas[key].epoch == epoch
                assert view.replicas[key].state_hash() == engines.engines[key].shard.state_hash()
            assert len(reloads) == 2
    finally:
        await view.stop()
        await admin.aclose()


async def _published(engine: ShardEngine) -> dict[int, list[Any]]:
    """Input offset -> the events the engine published for it."""
    from investo.cluster.records import OUTPUT_DECODER

    outputs = [OUTPUT_DECODER.decode(payload) for _, payload in await engine.output.read(0, 100_000)]
    return {o.input_offset: list(o.events) for o in outputs}


async def test_a_second_engine_for_the_same_shard_is_fenced(cluster: tuple[str, topo.Topology]) -> None:
    url, topology = cluster
    server_url = topo.split_url(url)[0]
    first = ShardEngine(server_url, topology, "accounts", 0)
    second = ShardEngine(server_url, topology, "accounts", 0)
    try:
        await first.recover()
        await second.recover()
        await first.input.append([_envelope(Deposit(1, 2, "INR", 100))])
        await first.process(await first.input.read(0, 10))
        with pytest.raises(Fenced):
            await second.process(await second.input.read(0, 10))
        assert (await first.output.last_offset()) == 1  # published once
    finally:
        await first.close()
        await second.close()


async def test_answers_go_out_once_with_the_publish_and_never_from_a_fenced_engine(
    cluster: tuple[str, topo.Topology],
) -> None:
    from investo.cluster.records import ENCODER, REPLIES_DECODER, Envelope

    url, topology = cluster
    server_url = topo.split_url(url)[0]
    channel = topology.reply_channel("answers-test")
    listener = aioredis.Redis.from_url(server_url)
    pubsub = listener.pubsub()
    await pubsub.subscribe(channel)
    first = ShardEngine(server_url, topology, "accounts", 0)
    second = ShardEngine(server_url, topology, "accounts", 0)
    try:
        await first.recover()
        await second.recover()
        deposits = [ENCODER.encode(Envelope(Deposit(1, 2, "INR", 100 + n), channel, n)) for n in (1, 2)]
        await first.input.append(deposits)
        await first.process(await first.input.read(0, 10))
        with pytest.raises(Fenced):
            await second.process(await second.input.read(0, 10))
        messages = []
        deadline = asyncio.get_running_loop().time() + 1.0
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
            if message is not None:
                messages.append(REPLIES_DECODER.decode(message["data"]))
        assert [[reply.corr for reply in replies] for replies in messages] == [[1, 2]]  # one batch, once
        assert first.stats.replies == 2 and second.stats.replies == 0
    finally:
        await first.close()
        await second.close()
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await listener.aclose()


async def test_a_command_nobody_answers_is_status_unknown(cluster: tuple[str, topo.Topology]) -> None:
    url, _ = cluster
    client = ClusterClient(url, timeout_s=0.3)  # no engine is running
    await client.start()
    try:
        with pytest.raises(StatusUnknown, match="no answer"):
            await client.submit(Deposit(0, 1, "INR", 100))
    finally:
        await client.close()


async def test_the_reply_listener_reconnects_when_its_connection_is_killed(
    cluster: tuple[str, topo.Topology],
) -> None:
    """The listener blocks on its read (no polling timeout): a lost connection must still
    bring it back, subscribed again, rather than leave it waiting forever."""
    url, _ = cluster
    server_url, namespace = topo.split_url(url)
    channel = f"{namespace}:test-announcements"
    heard: list[bytes] = []
    client = ClusterClient(url)
    client.on_message(channel, heard.append)
    await client.start()
    admin = aioredis.Redis.from_url(server_url)
    try:
        subscriber = client._subscriber  # the lean subscription (a plain redis:// URL)
        assert subscriber is not None and subscriber._protocol is not None
        transport = subscriber._protocol.transport
        assert transport is not None
        host, port = transport.get_extra_info("sockname")[:2]
        assert await admin.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}", "SKIPME", "yes") == 1
        for _ in range(100):  # until the listener has subscribed again
            if await admin.publish(channel, b"after") > 0:
                break
            await asyncio.sleep(0.05)
        for _ in range(100):
            if heard:
                break
            await asyncio.sleep(0.02)
        assert heard == [b"after"]
    finally:
        await client.close()
        await admin.aclose()


def _subscribe_with(subscription: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make new ClusterClients subscribe with redis-py's PubSub (what TLS and Unix-socket URLs get)."""
    if subscription == "redis-py":
        monkeypatch.setattr(cluster_client, "hot_subscriber", lambda *args: None)


@pytest.mark.parametrize("subscription", ["lean", "redis-py"])
async def test_a_gateway_follows_a_new_shard_map_without_restart(
    cluster: tuple[str, topo.Topology], subscription: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _subscribe_with(subscription, monkeypatch)
    url, topology = cluster
    server_url, namespace = topo.split_url(url)
    client = ClusterClient(url)
    await client.start()
    admin = aioredis.Redis.from_url(server_url)
    try:
        moved = dict(topology.matching, AINR=1, BINR=0)
        await topo.store(admin, topo.Topology(namespace, MARKETS_TOML, moved, 2))
        for _ in range(100):
            if client.topology is not None and client.topology.version == topology.version + 1:
                break
            await asyncio.sleep(0.02)
        assert client.topology is not None and client.topology.matching_shard("AINR") == 1
        with pytest.raises(topo.ClusterConfigError, match="accounts shards"):
            await topo.store(admin, topo.Topology(namespace, MARKETS_TOML, moved, 3))
    finally:
        await admin.aclose()
        await client.close()


@pytest.mark.parametrize("subscription", ["lean", "redis-py"])
async def test_answers_reach_a_client_on_either_subscription(
    cluster: tuple[str, topo.Topology], subscription: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _subscribe_with(subscription, monkeypatch)
    async with _engines_and_client(cluster, snapshot_every=50_000) as (_, _, client):
        assert (client._subscriber is None) == (subscription == "redis-py")
        applied = await client.submit(Deposit(0, 1, "INR", 100))
        assert _kinds(applied.events) == ["Deposited"]


def _envelope(command: Command) -> bytes:
    from investo.cluster.records import ENCODER, Envelope

    return ENCODER.encode(Envelope(command))
