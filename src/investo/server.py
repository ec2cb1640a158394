"""`investo up`: the whole exchange in one process (embedded mode).

The node starts inside the HTTP server's lifespan: migrations, log, replay of
the log tail (with a progress bar on a terminal), then the API answers. Ctrl-C
or SIGTERM stops taking orders, writes a snapshot and closes the log; a kill -9
loses nothing acknowledged, because every acknowledged command is in the log.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from investo.api.app import create_app
from investo.api.limits import RateLimits
from investo.host import ReplayProgress
from investo.markets import load_markets
from investo.node import Node, NodeConfig


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


def build_app(options: UpOptions) -> FastAPI:
    markets = load_markets(options.markets_file)
    node = Node(NodeConfig(data_dir=options.data_dir, markets=markets, snapshot_every=options.snapshot_every))
    limits = RateLimits.default(options.rate_limit_per_minute, options.orders_per_10s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with replay_progress() as progress:
            replayed = await node.start(progress)
        base = f"http://{options.host}:{options.port}"
        print(
            f"Investo is up: API {base}/api/v3  docs {base}/docs  data {options.data_dir.resolve()}"
            + (f"  (replayed {replayed} log entries)" if replayed else ""),
            flush=True,
        )
        try:
            yield
        finally:
            await node.stop()

    app = create_app(node, limits)
    app.router.lifespan_context = lifespan
    return app


def run(options: UpOptions) -> None:
    app = build_app(options)
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        log_level=options.log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run()
