"""`investo up`: the whole exchange in one process (embedded mode); and `investo gateway`, the same
HTTP API over a cluster (see :mod:`investo.cluster.gateway`).

The node starts inside the HTTP server's lifespan: migrations, log, replay of
the log tail (with a progress bar on a terminal), then the API answers. Unless
``bots`` is off (``--no-bots``), the built-in bots (:mod:`investo.bots`) then start as a
task of the same event loop and trade over loopback HTTP like any client; they stop
before the node does. Ctrl-C or SIGTERM stops taking orders, writes a snapshot and
closes the log; a kill -9 loses nothing acknowledged, because every acknowledged
command is in the log.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from starlette.applications import Starlette

from investo.api.app import create_app
from investo.api.limits import RateLimits
from investo.host import ReplayProgress
from investo.markets import MarketSpec, load_markets
from investo.node import Node, NodeConfig
from investo.tasks import cancel_and_wait, settle_heap
from investo.ws.protocol import UVICORN_OPTIONS


@dataclass
class UpOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("investo-data")
    markets_file: Path | None = None
    snapshot_every: int = 50_000
    rate_limit_per_minute: int = 60_000
    orders_per_10s: int = 10_000
    log_level: str = "warning"
    ws_buffer_limit: int = 1 << 20
    ws_ping_seconds: float = 20.0
    bots: bool = True  # run the built-in market makers and noise traders (investo.bots)
    database_url: str | None = None  # the SQL history (default: history.db in data_dir)
    proxy_headers: bool = False  # trust X-Forwarded-For from 127.0.0.1 (see serve)


@contextmanager
def replay_progress() -> Iterator[ReplayProgress]:
    """A progress bar for a long replay on a terminal; a line per 10% otherwise."""
    if sys.stderr.isatty():
        columns = (TextColumn("replaying log"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, transient=True) as bar:
            task = bar.add_task("replay", total=None)

            def on_tty(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            yield on_tty
        return
    shown = [-1]

    def on_pipe(done: int, total: int) -> None:
        tenth = done * 10 // max(total, 1)
        if total >= 10_000 and tenth != shown[0]:
            shown[0] = tenth
            print(f"replaying log: {done}/{total}", file=sys.stderr, flush=True)

    yield on_pipe


def loopback_url(options: UpOptions) -> str:
    """Where in-process clients reach this server: its own address, or 127.0.0.1 for a wildcard."""
    host = options.host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{options.port}"


def start_bots(options: UpOptions, markets: Mapping[str, MarketSpec]) -> asyncio.Task[None]:
    """The built-in bots as a task of this process, talking to the API over loopback HTTP.

    Their identities live in ``<data dir>/bots`` so a restart reuses them and cancels what
    they left in the book; they do not cancel on stop (the API stops answering first).
    """
    from investo.bots import BotConfig, BotFleet

    config = BotConfig(state_dir=options.data_dir / "bots", cancel_on_stop=False)
    prices = {s: spec.initial_price for s, spec in markets.items() if spec.initial_price is not None}
    fleet = BotFleet(loopback_url(options), config, initial_prices=prices)
    return asyncio.create_task(fleet.run(), name="investo-bots")


def build_app(options: UpOptions) -> FastAPI:
    markets = load_markets(options.markets_file)
    node = Node(
        NodeConfig(
            data_dir=options.data_dir,
            markets=markets,
            database_url=options.database_url,
            snapshot_every=options.snapshot_every,
            ws_buffer_limit=options.ws_buffer_limit,
        )
    )
    limits = RateLimits.default(options.rate_limit_per_minute, options.orders_per_10s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with replay_progress() as progress:
            replayed = await node.start(progress)
        settle_heap()  # full collections would otherwise stall requests for tens of ms
        base = f"http://{options.host}:{options.port}"
        print(
            f"Investo is up: trading screen {base}/  API {base}/api/v3  "
            f"streams ws://{options.host}:{options.port}/ws  "
            f"docs {base}/docs  data {options.data_dir.resolve()}"
            + (f"  (replayed {replayed} log entries)" if replayed else ""),
            flush=True,
        )
        bots = start_bots(options, markets) if options.bots else None
        try:
            yield
        finally:
            await cancel_and_wait(bots)
            await node.stop()

    app = create_app(node, limits)
    app.router.lifespan_context = lifespan
    return app


def serve(
    app: Starlette, host: str, port: int, log_level: str, ws_ping_seconds: float, proxy_headers: bool = False
) -> None:
    """Serve ``app`` with uvicorn (uvloop and httptools, which the project depends on).

    ``proxy_headers``: take the client's address from ``X-Forwarded-For`` when a proxy on
    127.0.0.1 sends it (uvicorn's ``ProxyHeadersMiddleware``: a layer on every request, so
    only when asked for); otherwise the per-IP rate limit counts the socket's peer.
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        proxy_headers=proxy_headers,
        lifespan="on",
        timeout_graceful_shutdown=5,
        **UVICORN_OPTIONS,  # frames built once, written straight to each connection
        ws_ping_interval=ws_ping_seconds,  # ping frames; a client that stops answering
        ws_ping_timeout=ws_ping_seconds,  # within this time is dropped
    )
    uvicorn.Server(config).run()


def run(options: UpOptions) -> None:
    serve(
        build_app(options),
        options.host,
        options.port,
        options.log_level,
        options.ws_ping_seconds,
        options.proxy_headers,
    )


# --------------------------------------------------------------------------- investo gateway


@dataclass
class GatewayOptions:
    redis_url: str
    database_url: str
    host: str = "127.0.0.1"
    port: int = 8000
    rate_limit_per_minute: int = 60_000
    orders_per_10s: int = 10_000
    log_level: str = "warning"
    ws_buffer_limit: int = 1 << 20  # bytes a WebSocket client may leave unsent before it is dropped
    ws_ping_seconds: float = 20.0
    reply_timeout_s: float = 5.0
    market_streams: bool = False
    proxy_headers: bool = False  # trust X-Forwarded-For from 127.0.0.1 (see serve)


def build_gateway_app(options: GatewayOptions) -> FastAPI:
    """The API of ``investo up`` over a cluster: a :class:`~investo.cluster.gateway.GatewayNode`."""
    from investo.cluster.gateway import GatewayConfig, GatewayNode
    from investo.log.redis import redacted
    from investo.store.db import redacted_url

    node = GatewayNode(
        GatewayConfig(
            options.redis_url,
            options.database_url,
            ws_buffer_limit=options.ws_buffer_limit,
            reply_timeout_s=options.reply_timeout_s,
            market_streams=options.market_streams,
        )
    )
    limits = RateLimits.default(options.rate_limit_per_minute, options.orders_per_10s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await node.start()
        settle_heap()  # full collections would otherwise stall requests for tens of ms
        topology = node.topology
        assert topology is not None
        base = f"http://{options.host}:{options.port}"
        market = "market streams /ws/<stream> and /stream  " if options.market_streams else ""
        print(
            f"Investo gateway {node.client.gateway_id} is up: API {base}/api/v3  "
            f"user streams ws://{options.host}:{options.port}/ws/<listenKey> and /ws-api/v3  {market}"
            f"docs {base}/docs  cluster {redacted(options.redis_url)} (shard map version {topology.version}: "
            f"{topology.matching_shards} matching, {topology.accounts_shards} accounts shards)  "
            f"database {redacted_url(options.database_url)}",
            flush=True,
        )
        try:
            yield
        finally:
            await node.stop()

    app = create_app(node, limits)
    app.router.lifespan_context = lifespan
    return app


def run_gateway(options: GatewayOptions) -> None:
    app = build_gateway_app(options)
    serve(app, options.host, options.port, options.log_level, options.ws_ping_seconds, options.proxy_headers)
