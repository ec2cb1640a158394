"""The cluster's shape, kept in Redis: markets, the shard map, and the names of every stream.

``investo cluster init`` writes one JSON document under ``<ns>:cluster`` (``ns`` is the
``?prefix=`` of the Redis URL, default ``investo``):

* ``markets_toml``: the markets file, so every process trades the same markets;
* ``matching``: market → matching shard (0 … M−1);
* ``accounts_shards``: N; user ``u`` belongs to accounts shard ``u % N`` (the accounts
  engine numbers orders by its shard, so N is fixed once orders exist);
* ``version``: +1 per change; a change is announced on ``<ns>:cluster:changed`` and
  gateways reload the map without a restart.

Streams (each one a :class:`~investo.log.redis.RedisLog`, so with dense offsets,
snapshots and trims): ``<ns>:accounts:<k>`` and ``<ns>:matching:<m>`` are the shards'
input logs, ``…:out`` their output logs, ``…:done`` the last input offset whose
outputs are published. Gateway ``g`` gets its answers on ``<ns>:reply:<g>``.

Input epochs: ``<ns>:<role>:<n>:epoch`` names the history a shard's input offsets belong
to. A cluster made by ``cluster init`` has no such key: epoch 0. ``investo cluster
rebuild`` (Redis lost the cluster) starts every shard's input afresh at offset 0 and writes
a new epoch, the Redis server's clock in microseconds (never 0, never one used before), so
an offset read under one epoch is never taken for the same offset of another. Epochs are
compared for equality only (:func:`parse_epoch`).

Announcements (pub/sub, at most once): ``<ns>:cluster:changed`` (a new shard map),
``<ns>:dbwriter:written`` (``"<output prefix> <offset>"``: a DB writer committed a stream
up to an offset), ``<ns>:keys:revoked`` (an API key id revoked on some gateway).

Invariants: every market has exactly one matching shard; shard numbers are dense
from 0; a stored document always parses (it is checked before it is written).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from investo.log.redis import parse_redis_url
from investo.markets import MarketSpec, parse_config

Role = Literal["accounts", "matching"]
ROLES: tuple[Role, ...] = ("accounts", "matching")


STREAMS_PER_OFFSET = 1024
"""Room for 512 accounts and 512 matching shards in the SQL offset of an output entry."""


class ClusterNotInitialised(RuntimeError):
    """Redis holds no cluster configuration under this namespace."""


class ClusterConfigError(ValueError):
    """A cluster configuration that cannot be used (the message says why)."""


class _Stored(msgspec.Struct, frozen=True):
    markets_toml: str
    matching: dict[str, int]
    accounts_shards: int
    version: int


@dataclass(frozen=True)
class Topology:
    """The cluster configuration of one namespace; see the module docstring."""

    namespace: str
    markets_toml: str
    matching: Mapping[str, int]
    accounts_shards: int
    version: int = 1
    markets: Mapping[str, MarketSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        markets = dict(parse_config(self.markets_toml, "cluster markets").markets)
        object.__setattr__(self, "markets", markets)
        _check(markets, self.matching, self.accounts_shards)

    # ------------------------------------------------------------------ routing

    @property
    def matching_shards(self) -> int:
        return max(self.matching.values()) + 1

    def shard_count(self, role: Role) -> int:
        return self.accounts_shards if role == "accounts" else self.matching_shards

    def accounts_shard(self, user: int) -> int:
        return user % self.accounts_shards

    def matching_shard(self, market: str) -> int | None:
        return self.matching.get(market)

    def markets_of(self, shard: int) -> list[str]:
        """The markets matching shard ``shard`` trades, sorted."""
        return sorted(symbol for symbol, owner in self.matching.items() if owner == shard)

    # ------------------------------------------------------------------ names

    def input_prefix(self, role: Role, shard: int) -> str:
        return f"{self.namespace}:{role}:{shard}"

    def output_prefix(self, role: Role, shard: int) -> str:
        return f"{self.input_prefix(role, shard)}:out"

    def done_key(self, role: Role, shard: int) -> str:
        return f"{self.input_prefix(role, shard)}:done"

    def epoch_key(self, role: Role, shard: int) -> str:
        """The shard's input epoch (see the module docstring): absent, 0, until a rebuild."""
        return f"{self.input_prefix(role, shard)}:epoch"

    def reply_channel(self, gateway_id: str) -> str:
        return f"{self.namespace}:reply:{gateway_id}"

    def stream_number(self, role: Role, shard: int) -> int:
        """A number unique to each output stream, below :data:`STREAMS_PER_OFFSET`.

        SQL rows are keyed by a log offset; the DB writer stores an output entry's
        offset ``o`` of stream ``n`` as ``o * STREAMS_PER_OFFSET + n``, unique across streams
        and increasing within each one.
        """
        return 2 * shard + (1 if role == "matching" else 0)

    def every_output(self) -> list[tuple[Role, int]]:
        return [(role, shard) for role in ROLES for shard in range(self.shard_count(role))]

    # ------------------------------------------------------------------ storage

    def encode(self) -> bytes:
        return msgspec.json.encode(
            _Stored(
                self.markets_toml, dict(sorted(self.matching.items())), self.accounts_shards, self.version
            )
        )

    @classmethod
    def decode(cls, namespace: str, data: bytes | str) -> Topology:
        stored = msgspec.json.decode(data, type=_Stored)
        return cls(namespace, stored.markets_toml, stored.matching, stored.accounts_shards, stored.version)


def parse_epoch(value: bytes | str | int | None) -> int:
    """An epoch as Redis holds it: no key is the cluster's first epoch, 0."""
    return int(value or 0)


def config_key(namespace: str) -> str:
    return f"{namespace}:cluster"


def changes_channel(namespace: str) -> str:
    return f"{namespace}:cluster:changed"


def written_channel(namespace: str) -> str:
    """Where DB writers announce ``"<output prefix> <offset>"`` after each commit."""
    return f"{namespace}:dbwriter:written"


def revoked_keys_channel(namespace: str) -> str:
    """Where a gateway announces the id of an API key it revoked."""
    return f"{namespace}:keys:revoked"


def _check(markets: Mapping[str, MarketSpec], matching: Mapping[str, int], accounts_shards: int) -> None:
    if accounts_shards < 1:
        raise ClusterConfigError(f"accounts shards must be at least 1, got {accounts_shards}")
    missing = sorted(set(markets) - set(matching))
    unknown = sorted(set(matching) - set(markets))
    if missing or unknown:
        raise ClusterConfigError(f"shard map: markets without a shard {missing}, unknown markets {unknown}")
    if accounts_shards > STREAMS_PER_OFFSET // 2:
        raise ClusterConfigError(f"at most {STREAMS_PER_OFFSET // 2} accounts shards")
    shards = sorted(set(matching.values()))
    if len(shards) > STREAMS_PER_OFFSET // 2:
        raise ClusterConfigError(f"at most {STREAMS_PER_OFFSET // 2} matching shards")
    if shards != list(range(len(shards))):
        raise ClusterConfigError(f"matching shards must be numbered 0, 1, 2, … without gaps; got {shards}")


def spread(markets: Mapping[str, MarketSpec], matching_shards: int) -> dict[str, int]:
    """Markets dealt to ``matching_shards`` shards in symbol order (round robin)."""
    if not 1 <= matching_shards <= len(markets):
        raise ClusterConfigError(
            f"matching shards must be between 1 and {len(markets)} (one market each at least)"
        )
    return {symbol: index % matching_shards for index, symbol in enumerate(sorted(markets))}


def split_url(redis_url: str) -> tuple[str, str]:
    """``redis://host:port/db?prefix=ns`` → (URL for redis-py, namespace)."""
    return parse_redis_url(redis_url)


def log_url(server_url: str, prefix: str) -> str:
    """The RedisLog URL of stream ``prefix`` on ``server_url``."""
    parts = urlsplit(server_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "prefix"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("prefix", prefix)])))


async def load(client: aioredis.Redis, namespace: str) -> Topology:
    """The stored configuration (raises :class:`ClusterNotInitialised` if there is none)."""
    data = await client.get(config_key(namespace))
    if data is None:
        raise ClusterNotInitialised(
            f"no cluster configuration under {config_key(namespace)!r}: run `investo cluster init` first "
            "(or, if Redis lost an existing cluster, `investo cluster rebuild`)"
        )
    return Topology.decode(namespace, data)


async def load_when_reachable(
    client: aioredis.Redis, namespace: str, on_wait: Callable[[Exception], None] | None = None
) -> Topology:
    """:func:`load`, waiting (every second) while Redis cannot be reached: a process may start first."""
    while True:
        try:
            return await load(client, namespace)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            if on_wait is not None:
                on_wait(exc)
            await asyncio.sleep(1.0)


async def store(client: aioredis.Redis, topology: Topology) -> Topology:
    """Write ``topology`` (version = stored + 1) and announce it; refuse to change accounts shards.

    Changing the number of accounts shards would move users between shards, so it
    is refused once a configuration exists.
    """
    key = config_key(topology.namespace)
    async with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(key)
                old = await pipe.get(key)
                version = 1
                if old is not None:
                    previous = Topology.decode(topology.namespace, old)
                    if previous.accounts_shards != topology.accounts_shards:
                        raise ClusterConfigError(
                            f"the cluster has {previous.accounts_shards} accounts shards; changing that "
                            "would move users between shards (start a new namespace instead)"
                        )
                    version = previous.version + 1
                new = Topology(
                    topology.namespace,
                    topology.markets_toml,
                    topology.matching,
                    topology.accounts_shards,
                    version,
                )
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.set(key, new.encode())
                pipe.publish(changes_channel(topology.namespace), str(version))
                await pipe.execute()
                return new
            except aioredis.WatchError:
                continue
