"""``investo up --redis URL --database URL``: a quick distributed run from one command.

The parent process:

1. checks that Redis and the database answer (a clear error otherwise), applies the
   migrations, and writes the shard map with ``--matching-shards`` / ``--accounts-shards``
   if the namespace (``?prefix=`` of the Redis URL) has none (as ``investo cluster init``
   would; an existing map is used as it is). If Redis has no map but the database holds
   the cluster's history (Redis restarted without its data), the cluster is first rebuilt
   from SQL (:mod:`investo.cluster.rebuild`, said loudly);
2. starts the roles as child processes of its own, each exactly the command an operator
   would run: one ``investo engine`` per shard and role, one ``investo dbwriter``, one
   ``investo gateway`` on ``--host``/``--port``, one ``investo marketdata`` (the public
   market streams' publisher) and one ``investo ws`` on ``--ws-port`` (default: the API's
   port + 1) and, unless ``--no-bots``, ``investo marketmaker`` against that gateway once
   it is ready. Their output is printed with the
   process's name in front (``matching-0 | …``);
3. prints one start-up line when the gateway and the ``investo ws`` node are ready;
4. supervises: a child that dies is reported loudly and started again (it recovers on its
   own: engines from their snapshots, the DB writer from its watermarks; an engine that finds
   Redis lost its data exits with code 4 and, started again with ``--database``, rebuilds
   the cluster from SQL); one that dies
   five times within a minute, or an engine fenced by another engine of its shard (exit
   code 3), stops the whole run with exit code 1;
5. on Ctrl-C or SIGTERM stops the children in order (bots, then the market streams, the
   gateway, the DB writer, the engines; each gets SIGINT/SIGTERM and ten seconds before SIGKILL) and exits.

Children run in their own process group (a Ctrl-C at the terminal reaches only the parent,
which stops them in order) and get SIGTERM if the parent dies (Linux), so none outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from investo.cluster import topology as topo
from investo.log.redis import redacted
from investo.markets import parse_config, read_text
from investo.store.db import redacted_url
from investo.store.migrate import upgrade

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
RESTART_LIMIT = 5  # deaths within RESTART_WINDOW_S before the run gives up
RESTART_WINDOW_S = 60.0
FENCED_EXIT = 3  # investo engine's exit code when another engine runs its shard


class UpError(RuntimeError):
    """The run cannot start (the message says why)."""


@dataclass
class ClusterUpOptions:
    redis_url: str
    database_url: str
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("investo-data")  # the bots' identities, per namespace
    markets_file: Path | None = None
    matching_shards: int | None = None  # for a new cluster (default 1); an existing one keeps its own
    accounts_shards: int | None = None
    snapshot_every: int = 50_000
    rate_limit_per_minute: int = 60_000
    orders_per_10s: int = 10_000
    log_level: str = "warning"
    bots: bool = True
    ws_port: int | None = None  # investo ws (default: port + 1)


@dataclass
class Child:
    """One role's process: how to start it, and how it stops."""

    name: str
    args: list[str]  # after `python -m investo.cli`
    stop_signal: signal.Signals = signal.SIGTERM
    process: asyncio.subprocess.Process | None = None
    deaths: deque[float] = field(default_factory=deque)
    echo: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid


def children(options: ClusterUpOptions, topology: topo.Topology) -> list[list[Child]]:
    """The processes of the run, in start order, grouped in stop order's reverse."""
    redis = ["--redis", options.redis_url]
    engines = [
        Child(f"{role}-{shard}", ["engine", *redis, "--role", role, "--shard", str(shard),
                                  "--snapshot-every", str(options.snapshot_every),
                                  "--database", options.database_url])
        for role, shard in topology.every_output()
    ]  # fmt: skip
    writer = Child("dbwriter", ["dbwriter", *redis, "--database", options.database_url])
    gateway = Child(
        "gateway",
        ["gateway", *redis, "--database", options.database_url, "--host", options.host,
         "--port", str(options.port), "--rate-limit", str(options.rate_limit_per_minute),
         "--order-limit", str(options.orders_per_10s), "--log-level", options.log_level,
         "--market-streams"],
    )  # fmt: skip
    market_streams = [
        Child("marketdata", ["marketdata", *redis, "--database", options.database_url,
                             "--log-level", options.log_level]),
        Child("ws", ["ws", *redis, "--host", options.host, "--port", str(ws_port(options)),
                     "--log-level", options.log_level]),
    ]  # fmt: skip
    groups = [engines, [writer], [gateway], market_streams]
    if options.bots:
        state = options.data_dir / f"bots-{topology.namespace}"
        url = f"http://{_loopback(options.host)}:{options.port}"
        groups.append(
            [Child("bots", ["marketmaker", "--url", url, "--state-dir", str(state)], signal.SIGINT)]
        )  # SIGINT: the makers cancel their orders before they exit
    return [group for group in groups if group]


def ws_port(options: ClusterUpOptions) -> int:
    return options.ws_port if options.ws_port is not None else options.port + 1


class Supervisor:
    """Starts, watches and stops the children; see the module docstring."""

    def __init__(self, options: ClusterUpOptions, groups: list[list[Child]]) -> None:
        self.options = options
        self.groups = groups
        self.stopping = False
        self.failure: str | None = None
        self._changed = asyncio.Event()
        self._watchers: list[asyncio.Task[None]] = []

    @property
    def all(self) -> list[Child]:
        return [child for group in self.groups for child in group]

    async def run(self, stop: asyncio.Event, announce: Callable[[], None]) -> int:
        """Start everything, announce once the gateway is ready, supervise until ``stop``; the exit code."""
        try:
            servers = [g for g in self.groups if g[0].name != "bots"]
            for child in (c for group in servers for c in group):
                await self._start(child)
            await self._wait_ready(stop)
            if not (self.failure or stop.is_set()):
                announce()
                for child in (c for group in self.groups if group not in servers for c in group):
                    await self._start(child)
            while not (stop.is_set() or self.failure):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await stop.wait()
        finally:
            await self.stop_all()
        if self.failure:
            _say(f"investo up: stopped: {self.failure}")
            return 1
        return 0

    async def _start(self, child: Child) -> None:
        child.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "investo.cli", *child.args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # Ctrl-C reaches the parent only: it stops them in order
            preexec_fn=_terminate_with_parent,
        )  # fmt: skip
        child.echo = asyncio.create_task(_echo(child), name=f"echo-{child.name}")
        self._watchers.append(
            asyncio.create_task(self._watch(child, child.process), name=f"watch-{child.name}")
        )

    async def _watch(self, child: Child, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        if child.echo is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(child.echo, 2.0)
        if self.stopping or child.process is not process:
            return
        _say(f"investo up: !!! the {child.name} process (pid {process.pid}) exited with code {code}")
        now = time.monotonic()
        child.deaths.append(now)
        while child.deaths and now - child.deaths[0] > RESTART_WINDOW_S:
            child.deaths.popleft()
        if code == FENCED_EXIT and child.args[0] == "engine":
            self.failure = f"{child.name} was fenced: another engine runs that shard"
        elif len(child.deaths) >= RESTART_LIMIT:
            self.failure = f"{child.name} died {len(child.deaths)} times within {RESTART_WINDOW_S:g} s"
        if self.failure:
            return
        await asyncio.sleep(1.0)
        if not self.stopping:
            await self._start(child)
            _say(f"investo up: {child.name} started again (pid {child.pid})")

    async def _wait_ready(self, stop: asyncio.Event) -> None:
        """Until the gateway's and the ws node's /health say ready (or the run fails, or is stopped)."""
        host = _loopback(self.options.host)
        waiting = {
            "gateway": f"http://{host}:{self.options.port}/health",
            "ws": f"http://{host}:{ws_port(self.options)}/health",
        }
        if not any(c.name == "ws" for c in self.all):
            del waiting["ws"]
        deadline = time.monotonic() + READY_TIMEOUT_S
        async with httpx.AsyncClient(timeout=2.0) as http:
            while not (stop.is_set() or self.failure):
                for name, url in list(waiting.items()):
                    with contextlib.suppress(httpx.HTTPError, ValueError):
                        response = await http.get(url)
                        if response.status_code == 200 and response.json().get("ready") is True:
                            del waiting[name]
                if not waiting:
                    return
                if time.monotonic() > deadline:
                    self.failure = (
                        f"the {' and the '.join(waiting)} was not ready within {READY_TIMEOUT_S:g} s"
                    )
                    return
                await asyncio.sleep(0.1)

    async def stop_all(self) -> None:
        """Stop the children, last started first, each group with its signal and a deadline."""
        self.stopping = True
        for group in reversed(self.groups):
            await asyncio.gather(*(_stop(child) for child in group))
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)


async def _stop(child: Child) -> None:
    process = child.process
    if process is None or process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(child.stop_signal)
    try:
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
    except TimeoutError:
        _say(f"investo up: {child.name} did not stop within {STOP_TIMEOUT_S:g} s: killing it")
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
    if child.echo is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(child.echo, 2.0)


async def _echo(child: Child) -> None:
    """Print the child's output, each line behind its name."""
    assert child.process is not None and child.process.stdout is not None
    width = 12
    while line := await child.process.stdout.readline():
        text = line.decode(errors="replace").rstrip()
        print(f"{child.name:<{width}}| {text}", flush=True)


def _terminate_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the parent dies (Linux), so nothing is orphaned."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _loopback(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- preparing


async def prepare(options: ClusterUpOptions) -> topo.Topology:
    """Check Redis and the database, migrate, and find or write the shard map."""
    if not options.database_url.startswith(("postgresql", "postgres:")):
        raise UpError("the distributed mode keeps its history in Postgres: --database postgresql://…")
    server_url, namespace = topo.split_url(options.redis_url)
    client = aioredis.Redis.from_url(server_url, socket_connect_timeout=5)
    try:
        try:
            await client.ping()
        except RedisError as exc:
            raise UpError(f"cannot reach Redis at {redacted(options.redis_url)}: {exc}") from exc
        try:
            await asyncio.to_thread(upgrade, options.database_url)
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UpError(f"cannot use the database {redacted_url(options.database_url)}: {first}") from exc
        try:
            return await topo.load(client, namespace)
        except topo.ClusterNotInitialised:
            pass
        if await _rebuilt_from_sql(server_url, namespace, options.database_url):
            return await topo.load(client, namespace)
        text, source = read_text(options.markets_file)
        specs = parse_config(text, source).markets
        try:
            matching = topo.spread(specs, options.matching_shards or 1)
            draft = topo.Topology(namespace, text, matching, options.accounts_shards or 1)
        except ValueError as exc:
            raise UpError(str(exc)) from exc
        stored = await topo.store(client, draft)
        _say(
            f"investo up: cluster {namespace!r} initialised: markets from {source}, "
            f"{stored.matching_shards} matching and {stored.accounts_shards} accounts shards"
        )
        return stored
    finally:
        await client.aclose()


async def _rebuilt_from_sql(server_url: str, namespace: str, database_url: str) -> bool:
    """Redis has no cluster here: if SQL holds one (Redis lost it), rebuild it (investo.cluster.rebuild)."""
    from investo.cluster.rebuild import RebuildRefused, RedisLost, ensure_rebuilt
    from investo.store.db import make_engine

    db = make_engine(database_url)
    try:
        return await ensure_rebuilt(server_url, namespace, db, say=_say)
    except (RebuildRefused, RedisLost, ValueError) as exc:
        raise UpError(f"Redis lost cluster {namespace!r} and it cannot be rebuilt from SQL: {exc}") from exc
    finally:
        await db.dispose()


def start_line(options: ClusterUpOptions, topology: topo.Topology, groups: list[list[Child]]) -> str:
    host, port = options.host, options.port
    base = f"http://{host}:{port}"
    names = " ".join(f"{c.name}({c.pid})" for group in groups for c in group if c.pid is not None)
    return (
        f"Investo is up (distributed): API {base}/api/v3  user streams ws://{host}:{port}/ws/<listenKey>  "
        f"market streams ws://{host}:{ws_port(options)}/ws/<stream>  "
        f"docs {base}/docs  cluster {redacted(options.redis_url)} ({topology.matching_shards} matching, "
        f"{topology.accounts_shards} accounts shards)  database {redacted_url(options.database_url)}  "
        f"processes: {names}"
    )


async def main(options: ClusterUpOptions) -> int:
    try:
        topology = await prepare(options)
    except UpError as error:
        _say(f"investo up: {error}")
        return 1
    asked = (options.matching_shards, options.accounts_shards)
    shape = (topology.matching_shards, topology.accounts_shards)
    if any(n is not None and n != has for n, has in zip(asked, shape, strict=True)):
        _say(
            f"investo up: the cluster {topology.namespace!r} exists with {topology.matching_shards} "
            f"matching and {topology.accounts_shards} accounts shards: running those "
            "(`investo cluster init` changes it)"
        )
    groups = children(options, topology)
    supervisor = Supervisor(options, groups)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return await supervisor.run(stop, lambda: print(start_line(options, topology, groups), flush=True))


def run(options: ClusterUpOptions) -> None:
    raise SystemExit(asyncio.run(main(options)))
