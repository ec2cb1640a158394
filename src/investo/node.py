"""One running Investo in one process: the engine host, its log, the SQL history and the keys.

``Node`` wires the parts the REST API needs and owns their lifecycle:

* start: migrate the database, open the log, load the writer's progress, rebuild
  the engines from the latest snapshot plus the log tail (with progress), seed
  market data (candles from SQL, depth ids from the engines), start the writer
  and the host;
* stop: stop taking commands, write a snapshot, flush the writer, close everything.

Registered API keys are cached in memory (:class:`~investo.api.keys.KeyCache`) so
that verifying a signature never waits for SQL; registering or revoking a key updates
SQL first, then the cache.

``Node`` is the embedded implementation of :class:`investo.api.nodes.ApiNode`: books and
balances are read straight from the engines, so every read is up to date at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from investo.api.keys import KeyCache
from investo.api.limits import RateLimits
from investo.core.matching import MatchingEngine
from investo.core.messages import Command
from investo.host import Applied, BatchObserver, EngineHost, HostStopped, ReplayProgress
from investo.log import open_log
from investo.log.base import Log
from investo.marketdata import Hub, MarketData
from investo.marketdata.user import ListenKeys, StreamSet, UserStreams
from investo.markets import MarketSpec
from investo.security.signing import ReplayGuard, RequestVerifier, SignedRequest
from investo.store.db import make_engine
from investo.store.migrate import upgrade
from investo.store.writer import HistoryWriter


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class NodeConfig:
    data_dir: Path
    markets: Mapping[str, MarketSpec]
    database_url: str | None = None  # default: sqlite file in data_dir
    log_url: str | None = None  # default: sqlite file in data_dir
    snapshot_every: int = 50_000
    demo_limits: Mapping[str, int] = field(default_factory=dict)  # asset -> units per day
    clock_ms: Callable[[], int] = wall_clock_ms
    ws_buffer_limit: int = 1 << 20  # bytes a WebSocket client may leave unsent before it is dropped
    market_tick_seconds: float = 1.0  # candle roll-over and 24h tickers


def default_demo_limits(markets: Mapping[str, MarketSpec]) -> dict[str, int]:
    """A day's demo funds: 1,000,000 of each quote asset and 10,000 of each base asset."""
    limits: dict[str, int] = {}
    for spec in markets.values():
        limits[spec.quote] = 1_000_000 * 10**spec.quote_decimals
        limits.setdefault(spec.base, 10_000 * 10**spec.base_decimals)
    return limits


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.markets = dict(config.markets)
        self.assets = assets_of(self.markets)
        self.clock_ms = config.clock_ms
        data_dir = config.data_dir
        self.database_url = config.database_url or f"sqlite:///{data_dir / 'history.db'}"
        self.log_url = config.log_url or f"sqlite:///{data_dir / 'log.db'}"
        self.demo_limits = dict(config.demo_limits) or default_demo_limits(self.markets)
        self.keys = KeyCache()
        self.verifier = RequestVerifier(self.keys.lookup, ReplayGuard())
        self.log: Log | None = None
        self.host: EngineHost | None = None
        self.writer: HistoryWriter | None = None
        self.db: AsyncEngine | None = None
        self.started_ms = 0
        self.ready = False
        self.user_locks: dict[int, asyncio.Lock] = {}
        self.rate_limits: RateLimits | None = None  # set by the HTTP app
        self.on_batch: BatchObserver | None = None  # metrics hook, set by the HTTP app
        self.market_data = MarketData(self.markets, self.clock_ms, tick_seconds=config.market_tick_seconds)
        self.listen_keys = ListenKeys(self.clock_ms)
        self.user_streams = UserStreams(self.markets, self.clock_ms, self.market_data.hub, self.listen_keys)
        self.stream_names: Collection[str] = StreamSet(lambda: self.market_data.streams, self.listen_keys)

    # ------------------------------------------------------------------ lifecycle

    async def start(self, progress: ReplayProgress | None = None) -> int:
        """Bring everything up; return how many log entries were replayed."""
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(upgrade, self.database_url)
        self.db = make_engine(self.database_url)
        self.log = open_log(self.log_url)
        # Small writes (each one's Python work runs on the event loop between requests), but
        # not one per order under a trickle: a write lingers 10 ms for company unless a reader waits.
        self.writer = HistoryWriter(self.db, self.markets, max_commands=256, linger_s=0.01)
        await self.writer.load_progress()
        self.writer.start()
        self.host = EngineHost(
            [spec.core for spec in self.markets.values()],
            self.log,
            clock_ms=self.clock_ms,
            snapshot_every=self.config.snapshot_every,
        )
        self.host.add_listener(self.writer)
        host = self.host
        self.market_data.attach(lambda: host.exchange)
        self.host.add_listener(self.market_data)
        self.user_streams.attach(lambda: host.exchange)
        self.host.add_listener(self.user_streams)
        self.host.on_batch = self.on_batch
        replayed = await self.host.recover(progress)
        await self.writer.wait_for(self.host.applied_offset)  # candles are seeded from SQL
        await self.market_data.start(self.db)
        self.user_streams.start()
        await self._load_keys()
        self.host.start()
        self.started_ms = self.clock_ms()
        self.ready = True
        return replayed

    async def stop(self) -> None:
        self.ready = False
        await self.market_data.stop()
        await self.user_streams.stop()
        if self.host is not None:
            await self.host.stop()
        if self.writer is not None:
            await self.writer.stop()
        if self.log is not None:
            await self.log.close()
        if self.db is not None:
            await self.db.dispose()

    # ------------------------------------------------------------------ keys

    def knows_key(self, key_id: str) -> bool:
        return key_id in self.keys

    async def fetch_key(self, key_id: str) -> None:
        """Nothing to do: every active key was loaded at start and is kept up to date here."""

    def user_of_key(self, key_id: str) -> int:
        return self.keys.user_of(key_id)

    async def _load_keys(self) -> None:
        assert self.db is not None
        await self.keys.load_all(self.db)

    def remember_key(self, key_id: str, user_id: int, pem: str) -> None:
        self.keys.remember(key_id, user_id, pem)

    async def forget_key(self, key_id: str) -> None:
        self.keys.forget(key_id)

    async def check_replay(self, key_id: str, request: SignedRequest) -> None:
        """Nothing to do: the verifier's replay guard sees every request of this one process."""

    async def submit_signed(self, command: Command, key_id: str, request: SignedRequest) -> Applied:
        """:meth:`submit`: the verifier's replay guard has already seen every request of this process."""
        return await self.submit(command)

    def demo_lock(self, user_id: int) -> asyncio.Lock:
        """A per-user lock, for read-check-write sequences such as demo claims."""
        return self.user_locks.setdefault(user_id, asyncio.Lock())

    # ------------------------------------------------------------------ the API's view

    @property
    def ws_buffer_limit(self) -> int:
        return self.config.ws_buffer_limit

    @property
    def hub(self) -> Hub:
        return self.market_data.hub

    def progress(self) -> int:
        return 0 if self.host is None else self.host.applied_offset

    def sql_lag(self) -> float:
        if self.host is None or self.writer is None:
            return 0.0
        return float(self.host.applied_offset - (self.writer.durable_offset or 0))

    async def state(self) -> dict[str, Any]:
        assert self.host is not None
        return {"offset": self.host.applied_offset, "stateHash": self.host.exchange.state_hash()}

    async def submit(self, command: Command) -> Applied:
        if self.host is None:
            raise HostStopped("the exchange is not running")
        return await self.host.submit(command)

    async def sync_books(self, symbols: Iterable[str]) -> None:
        """Nothing to wait for: the books are this process's engines."""

    def book(self, symbol: str) -> MatchingEngine:
        assert self.host is not None
        return self.host.exchange.matching(symbol)

    async def balances(self, user: int) -> dict[str, tuple[int, int]]:
        assert self.host is not None
        return self.host.exchange.accounts.balances(user)

    async def prepare_user_stream(self, user: int) -> None:
        """Nothing to wait for: the engines are in this process."""

    async def caught_up(self, *symbols: str) -> None:
        """Wait until SQL holds everything applied so far (read-your-writes), whatever the market."""
        assert self.host is not None and self.writer is not None
        await self.writer.wait_for(self.host.applied_offset)


def assets_of(markets: Mapping[str, MarketSpec]) -> dict[str, int]:
    """Every asset traded, with its decimals, in a stable order."""
    assets: dict[str, int] = {}
    for spec in markets.values():
        assets.setdefault(spec.base, spec.base_decimals)
        assets.setdefault(spec.quote, spec.quote_decimals)
    return assets
