"""A gateway's view of the whole cluster: a replica of every shard, followed continuously.

:class:`ClusterView` keeps one :class:`~investo.cluster.replica.ShardReplica` per accounts
and matching shard, each following its shard's input in a task of its own. It reads like
the embedded :class:`~investo.core.exchange.Exchange`: :meth:`ClusterView.matching` gives a
market's book (the replica's matching engine), :attr:`ClusterView.accounts` the balances
and reservations of any user (the replica of the user's accounts shard), so the same
readers (the REST API, the user stream) work on either.

Read-your-writes
----------------
A replica may lag its engine by a few milliseconds. :meth:`ClusterView.sync` reads, in one
round trip, how far each shard concerned has got (``done``: what the engine published;
``next``: everything appended to its input) and waits until the replicas have stepped
that far. An answer a client got was published before it was sent, so a read that starts
afterwards and syncs to ``done`` sees it. Balances sync to the input's ``next``: a trade is
answered by its matching shard once the settlements are *in* the accounts shards' inputs,
not yet applied there. A sync that does not finish within ``timeout_s`` (an engine is down
or far behind) raises :class:`~investo.api.nodes.NotCaughtUp`.

The same ``MGET`` reads each shard's input epoch (:mod:`investo.cluster.topology`): a
replica whose state belongs to another epoch (Redis lost the cluster and ``investo
cluster rebuild`` restored it) reloads from the shard's latest snapshot before the read
goes on, so the offsets of the new epoch are never compared with those of the old one and
no read is answered from the state before the loss.

With ``wanted`` (the gateway's: "a user stream is open here"), the replicas are lazy
while it says False: they step only when a read syncs them (see
:mod:`investo.cluster.replica`), so a gateway that only takes orders does not repeat the
engines' work. A lazy replica looks at its shard only when a read syncs it; that sync's
epoch check is what makes a replica that rested through a rebuild reload rather than
serve the state from before the loss.

Invariants: every replica steps its shard's input in order and never passes ``done``;
the view never writes to Redis; a read is answered from the replica's state under the
shard's epoch as the sync read it (or a newer one). Costs: each shard's stepping again in
this process (the price of local reads; lazy replicas pay it only for the reads), one
``MGET`` per sync (marks and epochs of the shards concerned).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterable
from typing import Literal

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from investo.api.nodes import NotCaughtUp
from investo.cluster.replica import ShardReplica, Stepped
from investo.cluster.shards import AccountsShard, MatchingShard
from investo.cluster.topology import Role, Topology, parse_epoch
from investo.core.accounts import AccountsEngine, ReservedOrder
from investo.core.matching import MatchingEngine
from investo.tasks import cancel_and_wait

Mark = Literal["done", "next"]
ShardKey = tuple[Role, int]
BatchHandler = Callable[[ShardReplica, list[Stepped]], None]


class ClusterView:
    """Replicas of every shard; see the module docstring."""

    def __init__(
        self,
        server_url: str,
        topology: Topology,
        client: aioredis.Redis,
        *,
        on_batch: BatchHandler | None = None,
        on_reload: Callable[[], None] | None = None,
        timeout_s: float = 5.0,
        wanted: Callable[[], bool] = lambda: True,
    ) -> None:
        self.topology = topology
        self.timeout_s = timeout_s
        self._client = client
        self.replicas: dict[ShardKey, ShardReplica] = {}
        for role, shard in topology.every_output():
            replica = ShardReplica(server_url, topology, role, shard, on_reload=on_reload, wanted=wanted)
            if on_batch is not None:
                replica.on_batch = lambda batch, r=replica: on_batch(r, batch)
            self.replicas[(role, shard)] = replica
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load every shard's snapshot, step what the engines have published, then follow them."""
        for replica in self.replicas.values():
            await replica.start()
            await replica.catch_up()
        self._tasks = [
            asyncio.create_task(replica.follow(self._stop), name=f"replica-{role}-{shard}")
            for (role, shard), replica in self.replicas.items()
        ]

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks = []
        for replica in self.replicas.values():
            await replica.close()

    # ------------------------------------------------------------------ reading (like Exchange)

    def matching(self, symbol: str) -> MatchingEngine:
        """The book of ``symbol`` (KeyError if there is no such market)."""
        shard = self.topology.matching_shard(symbol)
        if shard is None:
            raise KeyError(symbol)
        replica = self.replicas[("matching", shard)].shard
        assert isinstance(replica, MatchingShard)
        return replica.engines[symbol]

    @property
    def accounts(self) -> ClusterView:
        """Balances and reservations of any user, as :class:`AccountsEngine` answers them."""
        return self

    def accounts_engine(self, shard: int) -> AccountsEngine:
        replica = self.replicas[("accounts", shard)].shard
        assert isinstance(replica, AccountsShard)
        return replica.engine

    def balance(self, user: int, asset: str) -> tuple[int, int]:
        return self.accounts_engine(self.topology.accounts_shard(user)).balance(user, asset)

    def balances(self, user: int) -> dict[str, tuple[int, int]]:
        return self.accounts_engine(self.topology.accounts_shard(user)).balances(user)

    def open_order(self, order_id: int) -> ReservedOrder | None:
        """An open order's reservation (order ids carry their accounts shard: id % N)."""
        return self.accounts_engine(order_id % self.topology.accounts_shards).open_order(order_id)

    # ------------------------------------------------------------------ read-your-writes

    def shards_of_markets(self, symbols: Iterable[str]) -> list[ShardKey]:
        shards = {self.topology.matching_shard(symbol) for symbol in symbols}
        return [("matching", shard) for shard in sorted(s for s in shards if s is not None)]

    async def sync(self, shards: Iterable[ShardKey], mark: Mark) -> None:
        """Wait until the replicas of ``shards`` have stepped what their shards held at the call."""
        keys = list(shards)
        if not keys:
            return
        topology = self.topology
        names = [
            topology.done_key(role, shard) if mark == "done" else f"{topology.input_prefix(role, shard)}:next"
            for role, shard in keys
        ]
        names += [topology.epoch_key(role, shard) for role, shard in keys]
        try:
            values = await self._client.mget(names)
        except RedisError as exc:
            raise NotCaughtUp(f"the cluster's Redis cannot be reached ({exc}); try again") from exc
        marks, epochs = values[: len(keys)], values[len(keys) :]
        behind = [
            (self.replicas[key], int(value or 0), parse_epoch(epoch))
            for key, value, epoch in zip(keys, marks, epochs, strict=True)
            if self.replicas[key].applied < int(value or 0) or self.replicas[key].epoch != parse_epoch(epoch)
        ]
        if not behind:
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                for replica, target, epoch in behind:
                    await replica.wait_epoch(epoch)  # the shard was rebuilt: reload first
                    await replica.wait_applied(target)
        except TimeoutError:
            late = ", ".join(f"{r.role} {r.shard_no}" for r, t, e in behind if r.applied < t or r.epoch != e)
            raise NotCaughtUp(
                f"the engines of shard(s) {late} did not catch up within {self.timeout_s:g} s; try again"
            ) from None

    async def sync_all(self) -> None:
        """Wait until every replica has stepped everything appended so far (a quiet cluster's state)."""
        await self.sync(self.replicas, "next")

    def poke(self) -> None:
        """Make every replica look at ``wanted`` and its shard now (a lazy one turns eager at once)."""
        for replica in self.replicas.values():
            replica.poke()

    # ------------------------------------------------------------------ progress

    def progress(self) -> int:
        """Input entries stepped, over every shard."""
        return sum(replica.applied for replica in self.replicas.values())

    def shard_states(self) -> list[dict[str, object]]:
        return [
            {"role": role, "shard": shard, "offset": replica.applied, "stateHash": replica.state_hash()}
            for (role, shard), replica in sorted(self.replicas.items())
        ]

    def state_hash(self) -> str:
        """One hash over every shard's, in (role, shard) order."""
        digest = hashlib.sha256()
        for (role, shard), replica in sorted(self.replicas.items()):
            digest.update(f"{role}:{shard}\0{replica.state_hash()}\0".encode())
        return digest.hexdigest()
