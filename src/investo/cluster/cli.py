"""The distributed mode's commands: ``investo cluster init|status|rebuild``, ``investo engine``,
``investo dbwriter``, ``investo gateway``.

Every process takes ``--redis redis://host:port/db?prefix=<namespace>`` and finds the
markets and the shard map there (written by ``investo cluster init``). Each long-running
command runs on uvloop (where installed: fewer steps per wake-up and socket write than the
standard loop) and stops cleanly on SIGTERM or Ctrl-C (an engine saves a snapshot first).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import redis.asyncio as aioredis
import typer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import ProgrammingError

from investo.cluster import topology as topo
from investo.tasks import run_on_fast_loop, settle_heap

if TYPE_CHECKING:
    from investo.cluster.engine import ShardEngine

app = typer.Typer(help="The distributed mode's shard map (Redis).", no_args_is_help=True)

DEFAULT_REDIS = "redis://127.0.0.1:6379/0?prefix=investo"
RedisOption = Annotated[str, typer.Option("--redis", help="Redis URL; ?prefix= names the cluster.")]


def _run_until_stopped(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a role's ``main`` on uvloop (it stops itself on SIGTERM); no cluster yet: a clear
    error, exit 1."""
    with contextlib.suppress(KeyboardInterrupt):
        try:
            run_on_fast_loop(main())
        except topo.ClusterNotInitialised as error:
            typer.echo(str(error), err=True)
            raise typer.Exit(1) from None


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


@app.command("init")
def init(
    redis: RedisOption = DEFAULT_REDIS,
    markets: Annotated[Path | None, typer.Option(help="Markets TOML file (default: built-in).")] = None,
    matching_shards: Annotated[int, typer.Option(help="Matching engines; markets are dealt to them.")] = 1,
    accounts_shards: Annotated[int, typer.Option(help="Accounts engines; user u is on shard u % N.")] = 1,
    database: Annotated[
        str | None,
        typer.Option(
            help="The SQL history: refuse to start afresh a cluster Redis lost (see cluster rebuild)."
        ),
    ] = None,
) -> None:
    """Write (or change) the cluster's markets and shard map; running gateways pick it up."""
    from investo.markets import MarketConfigError, parse_config, read_text

    try:
        text, source = read_text(markets)
        specs = parse_config(text, source).markets
        matching = topo.spread(specs, matching_shards)
        server_url, namespace = topo.split_url(redis)
        draft = topo.Topology(namespace, text, matching, accounts_shards)
    except (MarketConfigError, ValueError) as error:
        raise typer.BadParameter(str(error)) from None

    async def write() -> topo.Topology:
        client = aioredis.Redis.from_url(server_url)
        try:
            if database is not None and await client.get(topo.config_key(namespace)) is None:
                await _refuse_if_lost(namespace, database)
            return await topo.store(client, draft)
        finally:
            await client.aclose()

    try:
        stored = asyncio.run(write())
    except topo.ClusterConfigError as error:
        typer.echo(f"refused: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"cluster {namespace!r} version {stored.version}: markets from {source}")
    for shard in range(stored.matching_shards):
        typer.echo(f"  matching shard {shard}: {', '.join(stored.markets_of(shard))}")
    typer.echo(f"  accounts shards: {stored.accounts_shards} (user u on shard u % {stored.accounts_shards})")


async def _refuse_if_lost(namespace: str, database: str) -> None:
    from investo.cluster.history import load_config
    from investo.store.db import make_engine

    db = make_engine(database)
    try:
        saved = await load_config(db, namespace)
    except ProgrammingError:  # not migrated yet: a new database holds no cluster
        saved = None
    finally:
        await db.dispose()
    if saved is not None:
        raise topo.ClusterConfigError(
            f"Redis has no cluster {namespace!r} but the database holds its history: Redis lost it. "
            "Restore it with `investo cluster rebuild` (a fresh cluster would start with empty books)"
        )


@app.command("status")
def status(redis: RedisOption = DEFAULT_REDIS) -> None:
    """Each shard's input, progress and output, and who writes it to SQL."""

    async def read() -> list[str]:
        server_url, namespace = topo.split_url(redis)
        client = aioredis.Redis.from_url(server_url)
        try:
            topology = await topo.load(client, namespace)
            lines = [f"cluster {namespace!r} version {topology.version}"]
            for role, shard in topology.every_output():
                prefix = topology.input_prefix(role, shard)
                got, done, out, holder = await asyncio.gather(
                    client.get(f"{prefix}:next"),
                    client.get(topology.done_key(role, shard)),
                    client.get(f"{topology.output_prefix(role, shard)}:next"),
                    client.get(f"{topology.output_prefix(role, shard)}:dbwriter-lease"),
                )
                writer = holder.decode() if isinstance(holder, bytes) else (holder or "-")
                lines.append(
                    f"  {role} {shard}: input {int(got or 0)}, processed {int(done or 0)}, "
                    f"output {int(out or 0)}, db writer {writer}"
                )
            return lines
        finally:
            await client.aclose()

    try:
        typer.echo("\n".join(asyncio.run(read())))
    except topo.ClusterNotInitialised as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None


@app.command("rebuild")
def rebuild(
    redis: RedisOption = DEFAULT_REDIS,
    database: Annotated[str, typer.Option(help="The cluster's SQL history (postgresql://…).")] = (
        "postgresql://127.0.0.1/investo"
    ),
    dry_run: Annotated[bool, typer.Option(help="Only say what would be rebuilt; write nothing.")] = False,
) -> None:
    """Restore a cluster Redis lost (restarted without its data) from the SQL history."""
    from investo.cluster.rebuild import RebuildRefused, rebuild_cluster
    from investo.store.db import make_engine

    async def run() -> list[str]:
        server_url, namespace = topo.split_url(redis)
        db = make_engine(database)
        try:
            return (await rebuild_cluster(server_url, namespace, db, dry_run=dry_run)).lines()
        finally:
            await db.dispose()

    try:
        typer.echo("\n".join(asyncio.run(run())))
    except (RebuildRefused, ValueError) as error:
        typer.echo(f"refused: {error}", err=True)
        raise typer.Exit(1) from None


async def _rebuild_if_lost(server_url: str, namespace: str, database: str) -> None:
    """``investo engine --database``: restore the cluster from SQL if Redis lost it (see cluster.rebuild)."""
    from investo.cluster.rebuild import ensure_rebuilt
    from investo.store.db import make_engine

    db = make_engine(database)
    try:
        while True:
            try:
                await ensure_rebuilt(server_url, namespace, db, say=lambda line: typer.echo(line, err=True))
                return
            except (RedisConnectionError, RedisTimeoutError) as exc:
                typer.echo(f"waiting for Redis: {exc}", err=True)
                await asyncio.sleep(1.0)
    finally:
        await db.dispose()


async def _check_shard_not_lost(topology: topo.Topology, role: topo.Role, shard: int, database: str) -> None:
    """An engine starting empty while SQL holds its shard's output: Redis lost it, and the
    configuration was written again meanwhile (``cluster init``): refuse rather than start afresh."""
    from investo.cluster.history import written_offset
    from investo.cluster.rebuild import RedisLost
    from investo.store.db import make_engine

    db = make_engine(database)
    try:
        written = await written_offset(db, topology, role, shard)
    finally:
        await db.dispose()
    if written:
        raise RedisLost(
            f"{role} shard {shard} has no state in Redis but SQL holds its output up to {written}: "
            "Redis lost it; delete the namespace's configuration and run `investo cluster rebuild`"
        )


def engine(
    role: Annotated[
        str | None, typer.Option(help="accounts or matching (or give several shards with --shards).")
    ] = None,
    shard: Annotated[int, typer.Option(help="Which shard of that role.")] = 0,
    shards: Annotated[
        str | None,
        typer.Option(
            help="Host several shards in this one process instead: ROLE:N,… (e.g. "
            "accounts:0,matching:0) or all (every shard of the cluster)."
        ),
    ] = None,
    redis: RedisOption = DEFAULT_REDIS,
    snapshot_every: Annotated[int, typer.Option(help="Input entries between two snapshots.")] = 50_000,
    database: Annotated[
        str | None,
        typer.Option(help="The SQL history: if Redis lost the cluster, rebuild it from there first."),
    ] = None,
) -> None:
    """Run engine shards over their Redis input streams until SIGTERM: one (--role, --shard), or several in one process (--shards).

    Shards hosted together keep their own input, state, snapshots and fencing and share the process's event loop: a small host runs fewer, busier processes (on 2 cores, one process for the four shards of a 2 + 2 cluster answers orders faster than four). The process stops when any of its shards must (fenced, or its state lost), as that shard's own process would.
    """  # noqa: E501 (typer shows each docstring line as a line)
    from investo.cluster.engine import Fenced, StateLost
    from investo.cluster.rebuild import RedisLost

    try:
        run_on_fast_loop(_run_engines(_shard_choice(role, shard, shards), redis, snapshot_every, database))
    except (topo.ClusterNotInitialised, RedisLost, ValueError) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    except StateLost as error:
        typer.echo(f"stopped: {error}", err=True)
        raise typer.Exit(4) from None
    except Fenced as error:
        typer.echo(f"stopped: {error}", err=True)
        raise typer.Exit(3) from None


ALL_SHARDS = "all"
ShardChoice = list[tuple[topo.Role, int]] | None  # None: every shard of the cluster


def _shard_choice(role: str | None, shard: int, shards: str | None) -> ShardChoice:
    """The shards ``investo engine`` hosts (``--role/--shard`` or ``--shards``); BadParameter if unclear."""
    if shards is not None:
        if role is not None:
            raise typer.BadParameter("give either --role (and --shard) or --shards, not both")
        if shards.strip() == ALL_SHARDS:
            return None
        chosen: list[tuple[topo.Role, int]] = []
        for part in shards.split(","):
            name, _, number = part.strip().partition(":")
            if name not in topo.ROLES or not number.isdigit():
                raise typer.BadParameter(
                    f"{part.strip()!r} is not ROLE:N (accounts:0, matching:1, …)", param_hint="--shards"
                )
            chosen.append(("accounts" if name == "accounts" else "matching", int(number)))
        if len(set(chosen)) != len(chosen):
            raise typer.BadParameter("a shard is named twice", param_hint="--shards")
        return chosen
    if role is None:
        raise typer.BadParameter("give --role accounts|matching (and --shard N), or --shards")
    if role not in topo.ROLES:
        raise typer.BadParameter(f"--role must be accounts or matching, not {role!r}")
    return [("accounts" if role == "accounts" else "matching", shard)]


async def _run_engines(choice: ShardChoice, redis: str, snapshot_every: int, database: str | None) -> None:
    """Recover the chosen shards, then run them side by side until SIGTERM (or one must stop)."""
    from investo.cluster.engine import ShardEngine

    server_url, namespace = topo.split_url(redis)
    if database is not None:
        await _rebuild_if_lost(server_url, namespace, database)
    client = aioredis.Redis.from_url(server_url)
    try:
        topology = await topo.load_when_reachable(
            client, namespace, lambda exc: typer.echo(f"waiting for Redis: {exc}", err=True)
        )
    finally:
        await client.aclose()
    chosen = topology.every_output() if choice is None else choice
    engines = [
        ShardEngine(server_url, topology, role, shard, snapshot_every=snapshot_every)
        for role, shard in chosen
    ]
    stop = asyncio.Event()
    _stop_on_signals(stop)
    try:
        for (role, shard), shard_engine in zip(chosen, engines, strict=True):
            replayed = await shard_engine.recover()
            if database is not None and not shard_engine.from_snapshot and shard_engine.applied == 0:
                await _check_shard_not_lost(topology, role, shard, database)
            typer.echo(f"{role} shard {shard}: replayed {replayed}, at input offset {shard_engine.applied}")
        settle_heap()
        for shard_engine in engines:
            await shard_engine.write_status()  # also says "up" to operators and tests
        await _run_side_by_side(engines, stop)
        for shard_engine in engines:
            await shard_engine.try_snapshot()  # its input's pooled connection may predate a Redis restart
            await shard_engine.write_status()
    finally:
        for shard_engine in engines:
            await shard_engine.close()


async def _run_side_by_side(engines: Sequence[ShardEngine], stop: asyncio.Event) -> None:
    """Run every engine until ``stop``; the first to fail stops the others and its error is raised."""
    runs = [asyncio.create_task(shard_engine.run(stop), name=repr(shard_engine)) for shard_engine in engines]
    try:
        await asyncio.wait(runs, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        stop.set()  # the others finish their batch and return
        await asyncio.gather(*runs, return_exceptions=True)
    for run in runs:
        error = None if run.cancelled() else run.exception()
        if error is not None:
            raise error


def dbwriter(
    redis: RedisOption = DEFAULT_REDIS,
    database: Annotated[
        str, typer.Option(help="SQL history (postgresql://…).")
    ] = "postgresql://127.0.0.1/investo",
    lease_ms: Annotated[int, typer.Option(help="A dead writer's streams are taken over after this.")] = 10000,
    linger_ms: Annotated[
        int, typer.Option(help="Wait up to this long to gather a full batch: fewer, larger transactions.")
    ] = 50,
) -> None:
    """Write every shard's output stream into SQL until SIGTERM; run several for fail-over."""
    from investo.cluster.dbwriter import DbWriter
    from investo.log.redis import redacted
    from investo.store.db import redacted_url

    async def run() -> None:
        writer = DbWriter(redis, database, lease_ms=lease_ms, linger_s=linger_ms / 1000)
        stop = asyncio.Event()
        _stop_on_signals(stop)
        try:
            await writer.start()
            settle_heap()
            typer.echo(f"db writer {writer.writer_id}: {redacted(redis)} -> {redacted_url(database)}")
            await writer.run(stop)
            for prefix, stats in writer.written.items():
                typer.echo(
                    f"db writer {writer.writer_id}: {prefix}: {stats.commands} entries in "
                    f"{stats.transactions} transactions, {stats.rows} rows, {stats.seconds:.2f} s writing"
                )
        finally:
            await writer.close()

    _run_until_stopped(run)


def gateway(
    redis: RedisOption = DEFAULT_REDIS,
    database: Annotated[
        str, typer.Option("--database", "--database-url", help="The cluster's SQL history (postgresql://…).")
    ] = "postgresql://127.0.0.1/investo",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the API.")] = 8000,
    rate_limit: Annotated[int, typer.Option(help="Requests per minute per IP (0: none).")] = 60_000,
    order_limit: Annotated[int, typer.Option(help="Orders per 10 s per API key (0: none).")] = 10_000,
    reply_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for an engine's answer before 'status unknown'.")
    ] = 5.0,
    log_level: Annotated[str, typer.Option(help="debug logs one line per request.")] = "warning",
    market_streams: Annotated[
        bool, typer.Option(help="Also serve the public market streams (as investo ws does).")
    ] = False,
    proxy_headers: Annotated[
        bool, typer.Option(help="Behind a proxy on 127.0.0.1: the client's IP from X-Forwarded-For.")
    ] = False,
) -> None:
    """Serve the REST API (and user data streams) over a cluster; run as many as you like."""
    from investo.server import GatewayOptions, run_gateway

    options = GatewayOptions(redis, database, host, port, rate_limit, order_limit, log_level)
    options.reply_timeout_s = reply_timeout
    options.market_streams = market_streams
    options.proxy_headers = proxy_headers
    run_gateway(options)


def marketdata(
    redis: RedisOption = DEFAULT_REDIS,
    database: Annotated[
        str | None,
        typer.Option("--database", "--database-url", help="SQL history: candles start from it."),
    ] = None,
    lease_ms: Annotated[int, typer.Option(help="A standby takes over after this.")] = 3000,
    snapshot_s: Annotated[float, typer.Option(help="Seconds between two book snapshots of a market.")] = 5.0,
    log_level: Annotated[str, typer.Option(help="info logs each snapshot request.")] = "warning",
) -> None:
    """Build the public market streams and publish them to the `investo ws` nodes; run two for fail-over."""
    import logging

    from investo.cluster.mdpublisher import MarketDataPublisher, PublisherConfig
    from investo.log.redis import redacted

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")

    async def run() -> None:
        publisher = MarketDataPublisher(
            PublisherConfig(redis, database, lease_ms=lease_ms, snapshot_s=snapshot_s)
        )
        stop = asyncio.Event()
        _stop_on_signals(stop)
        try:
            typer.echo(f"market data publisher {publisher.publisher_id}: {redacted(redis)}")
            settle_heap()
            await publisher.run(stop)
        finally:
            await publisher.close()

    _run_until_stopped(run)


def ws(
    redis: RedisOption = DEFAULT_REDIS,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the market streams.")] = 8001,
    buffer_limit: Annotated[
        int, typer.Option(help="Bytes a client may leave unsent before it is dropped.")
    ] = 1 << 20,
    ping_seconds: Annotated[float, typer.Option(help="Ping interval and timeout.")] = 20.0,
    log_level: Annotated[str, typer.Option(help="info logs each resync.")] = "warning",
) -> None:
    """Serve the public market streams (/ws/<stream>, /stream) from `investo marketdata`; run many."""
    from investo.cluster.wsnode import WsNode, WsNodeConfig, build_ws_app
    from investo.log.redis import redacted
    from investo.server import serve

    node = WsNode(WsNodeConfig(redis, buffer_limit=buffer_limit))

    def announce() -> None:
        typer.echo(
            f"Investo ws is up: market streams ws://{host}:{port}/ws/<stream> and /stream?streams=  "
            f"cluster {redacted(redis)} ({len(node.feeds) - 1} markets)"
        )

    serve(build_ws_app(node, print_line=announce), host, port, log_level, ping_seconds)
