"""Restore a cluster into a Redis that lost it, from the SQL history (``investo cluster rebuild``).

Redis holds the cluster's live state: the configuration, every shard's input stream,
snapshots and output stream. If Redis restarts *without* its data (no AOF, disk lost,
``FLUSHALL``), the engines cannot recover from it; but the DB writer has written every
committed output to SQL. :func:`rebuild_cluster` then:

1. takes the configuration saved in SQL (``cluster_configs``; the DB writer saves it);
2. checks that Redis lost the cluster: no shard has a snapshot or published anything
   (:class:`RebuildRefused` otherwise: there is nothing to rebuild, and a rebuild over
   live state would fork it);
3. reads each shard's committed state (:mod:`investo.cluster.history`) and rebuilds
   its engines (:mod:`investo.core.rebuild`, which checks their invariants);
4. for each shard: saves the engines' snapshot at input offset 0, then writes a new
   input epoch under ``<shard>:epoch`` (the Redis server's clock in µs; see
   :mod:`investo.cluster.topology`): the input streams start afresh, and whatever
   gateways appended meanwhile is applied after the snapshot. Replicas (gateways, the
   market data publisher) compare the epoch with the one they loaded under, in the same
   round trip as ``done``, and reload from the new snapshot, so none takes the new
   offsets for a continuation of the history it stepped; engines check it in every
   publish. It moves the output stream's counter to the committed watermark, so new
   output offsets continue after what SQL holds (the DB writer's idempotence on
   offsets stays true: nothing is stored twice, nothing new is skipped);
5. checks that no DB writer committed meanwhile (one may still be finishing a batch it
   read before the loss: :class:`HistoryMoved`, read again), then writes the
   configuration last: engines and gateways wait for it, so none starts on a
   half-rebuilt cluster (an interrupted rebuild is simply run again).

What cannot come back: whatever the DB writer had not committed when Redis lost its
data (commands answered, even trades, but not yet in SQL). That is why the shipped
Redis configuration is AOF with ``appendfsync always``: this rebuild is the last resort.

Concurrency: a lock (``<ns>:rebuild-lock``) lets one process rebuild while the others
(engines started with ``--database``) wait for the configuration to appear.

Costs: the history reads (per shard, the ledger and the trades, aggregated in SQL), the
snapshot encodes, a few Redis writes per shard.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from investo.cluster import history
from investo.cluster import topology as topo
from investo.cluster.shards import AccountsShard, MatchingShard, Shard
from investo.cluster.topology import Role, Topology
from investo.core.markets import Market
from investo.core.rebuild import rebuild_accounts, rebuild_matching
from investo.log.redis import RedisLog

log = logging.getLogger(__name__)

LOCK_MS = 120_000


class RebuildRefused(RuntimeError):
    """A rebuild that must not run (the message says why)."""


class LockHeld(RebuildRefused):
    """Another process is rebuilding the cluster."""


class HistoryMoved(RebuildRefused):
    """A DB writer committed while the rebuild read the history (it was finishing a batch): read again."""


class RedisLost(RuntimeError):
    """Redis lost the cluster's state while SQL holds its history (``investo cluster rebuild``)."""


@dataclass
class ShardReport:
    role: Role
    shard: int
    written: int  # the output offset new outputs continue after
    open_orders: int
    users: int
    balances: dict[str, int]  # asset -> total held on the shard
    state_hash: str


@dataclass
class RebuildReport:
    topology: Topology
    shards: list[ShardReport] = field(default_factory=list)
    written: bool = False  # False for a dry run

    def lines(self) -> list[str]:
        verb = "rebuilt" if self.written else "would rebuild"
        out = [f"cluster {self.topology.namespace!r} version {self.topology.version}: {verb} from SQL"]
        for s in self.shards:
            held = ", ".join(f"{a} {v}" for a, v in sorted(s.balances.items())) or "-"
            out.append(
                f"  {s.role} {s.shard}: {s.open_orders} open orders, {s.users} users, holdings {held}; "
                f"output continues after {s.written}; state {s.state_hash[:16]}"
            )
        return out


def config_missing_key(namespace: str) -> str:
    return f"{namespace}:rebuild-lock"


async def lost_shards(client: aioredis.Redis, topology: Topology) -> list[tuple[Role, int]]:
    """The shards with no state in Redis: nothing published and no snapshot, except, while
    Redis has no configuration (an interrupted rebuild), one at offset 0."""
    interrupted = await client.get(topo.config_key(topology.namespace)) is None
    lost = []
    for role, shard in topology.every_output():
        done = int(await client.get(topology.done_key(role, shard)) or 0)
        snapshots = await client.hkeys(f"{topology.input_prefix(role, shard)}:snapshots")
        if not done and (not snapshots or (interrupted and all(int(o) == 0 for o in snapshots))):
            lost.append((role, shard))
    return lost


def build_shard(topology: Topology, data: history.ShardHistory) -> Shard:
    """The shard's engines rebuilt from its history (invariants checked; ValueError if impossible)."""
    markets: dict[str, Market] = {s: spec.core for s, spec in topology.markets.items()}
    if data.role == "matching":
        shard = MatchingShard(topology, data.shard)
        for symbol in shard.engines:
            seq, last_trade = data.market_seqs.get(symbol, (0, 0))
            orders = [o for o in data.orders if o.market == symbol]
            shard.engines[symbol] = rebuild_matching(markets[symbol], seq, last_trade, orders)
        return shard
    engine = rebuild_accounts(
        markets, data.shard, topology.accounts_shards,
        holdings=data.holdings, orders=data.orders, deposited=data.deposited, withdrawn=data.withdrawn,
        seq=data.seq, next_local=data.next_local,
    )  # fmt: skip
    return AccountsShard(topology, data.shard, engine)


async def rebuild_cluster(
    server_url: str,
    namespace: str,
    db: AsyncEngine,
    *,
    dry_run: bool = False,
    say: Callable[[str], None] = lambda _: None,
    on_locked: Callable[[], None] = lambda: None,
) -> RebuildReport:
    """Restore the cluster ``namespace`` into Redis from SQL; see the module docstring.

    ``on_locked`` runs once this process holds the rebuild lock and Redis holds none of the
    cluster's shards (never on a dry run): the rebuild is this process's to do.
    """
    topology = await history.load_config(db, namespace)
    if topology is None:
        raise RebuildRefused(
            f"the database holds no configuration of cluster {namespace!r} (a DB writer saves it at start)"
        )
    client: aioredis.Redis = aioredis.Redis.from_url(server_url)
    lock = config_missing_key(namespace)
    holder = secrets.token_hex(8)
    try:
        if not dry_run and not await client.set(lock, holder, nx=True, px=LOCK_MS):
            raise LockHeld(f"another process is rebuilding {namespace!r} ({lock} is held)")
        try:
            lost = await lost_shards(client, topology)
            if len(lost) != len(topology.every_output()):
                kept = sorted(set(topology.every_output()) - set(lost))
                raise RebuildRefused(f"Redis still holds the state of shards {kept}: nothing to rebuild")
            if not dry_run:
                on_locked()
            report = RebuildReport(topology, written=not dry_run)
            built: list[tuple[Role, int, Shard, int]] = []
            for role, number in topology.every_output():
                data = await history.read_shard(db, topology, role, number)
                shard = build_shard(topology, data)
                built.append((role, number, shard, data.written))
                report.shards.append(_report(data, shard))
                say(report.lines()[-1])
            if dry_run:
                return report
            epoch = await new_epoch(client)
            for role, number, shard, written in built:
                await _install(server_url, client, topology, role, number, shard, written, epoch)
            for role, number, _, written in built:  # a writer finishing a batch read before the loss
                now = await history.written_offset(db, topology, role, number)
                if now != written:
                    raise HistoryMoved(f"{role} {number}: SQL moved from {written} to {now} meanwhile")
            await client.set(topo.config_key(namespace), topology.encode())
            await client.publish(topo.changes_channel(namespace), str(topology.version))
            log.warning("cluster %r rebuilt into Redis from SQL: %d shards", namespace, len(built))
            return report
        finally:
            if not dry_run:
                await client.delete(lock)  # held by us: the set above succeeded
    finally:
        await client.aclose()


async def _install(
    server_url: str,
    client: aioredis.Redis,
    topology: Topology,
    role: Role,
    number: int,
    shard: Shard,
    written: int,
    epoch: int,
) -> None:
    """The shard's snapshot at input offset 0 under ``epoch``; its output counter at ``written``; its status.

    The epoch is written after the snapshot: a replica that sees the new epoch finds its snapshot.
    """
    inputs = RedisLog(topo.log_url(server_url, topology.input_prefix(role, number)))
    try:
        await inputs.save_snapshot(0, shard.snapshot())
    finally:
        await inputs.close()
    await client.set(topology.epoch_key(role, number), epoch)
    out = topology.output_prefix(role, number)
    current = int(await client.get(f"{out}:next") or 0)
    if current < written:
        await client.set(f"{out}:next", written)
        await client.set(f"{out}:first", written + 1)
    await client.hset(
        f"{topology.input_prefix(role, number)}:status",
        mapping={"applied": 0, "state_hash": shard.state_hash(), "rebuilt_from_sql": 1},
    )


async def new_epoch(client: aioredis.Redis) -> int:
    """A new input epoch: the Redis server's clock in µs (it moves on even when Redis loses its data)."""
    seconds, micros = await client.time()
    return int(seconds) * 1_000_000 + int(micros)


def _report(data: history.ShardHistory, shard: Shard) -> ShardReport:
    balances: dict[str, int] = {}
    for (_, asset), total in data.holdings.items():
        balances[asset] = balances.get(asset, 0) + total
    users = len({user for user, _ in data.holdings} | {o.user for o in data.orders})
    return ShardReport(
        data.role, data.shard, data.written, len(data.orders), users, balances, shard.state_hash()
    )


async def ensure_rebuilt(
    server_url: str, namespace: str, db: AsyncEngine, *, say: Callable[[str], None], poll_s: float = 0.5
) -> bool:
    """If Redis lost the cluster and SQL holds it: rebuild it (or wait while another process does).

    Returns True if the cluster was rebuilt here. Called by ``investo engine --database``
    and ``investo up`` when Redis has no configuration for the namespace.
    """
    client: aioredis.Redis = aioredis.Redis.from_url(server_url)
    try:
        while await client.get(topo.config_key(namespace)) is None:
            if await history.load_config(db, namespace) is None:
                return False  # a new cluster: nothing to rebuild
            if not await client.exists(config_missing_key(namespace)):
                banner = (
                    f"REDIS LOST CLUSTER {namespace!r}: its configuration is gone but SQL holds its history; "
                    "rebuilding books and balances from SQL (what the DB writer had not committed is lost)"
                )
                try:
                    report = await rebuild_cluster(
                        server_url, namespace, db, say=say, on_locked=functools.partial(say, banner)
                    )
                except LockHeld:
                    await asyncio.sleep(poll_s)
                    continue
                except HistoryMoved as exc:
                    say(f"reading the history again: {exc}")
                    await asyncio.sleep(poll_s)
                    continue
                except RebuildRefused as exc:
                    if await client.exists(topo.config_key(namespace)):
                        continue  # another process finished the rebuild between our two reads
                    raise RedisLost(f"cluster {namespace!r} has no configuration in Redis: {exc}") from exc
                say(f"cluster {namespace!r} rebuilt from SQL: {len(report.shards)} shards")
                return True
            await asyncio.sleep(poll_s)
        return False
    finally:
        await client.aclose()
