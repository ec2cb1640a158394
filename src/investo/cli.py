"""The `investo` command line."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated

import typer

import investo
from investo.bench.cli import app as bench_app
from investo.cluster import cli as cluster_cli

app = typer.Typer(help="Investo: a real-time stock exchange you can run.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
user_app = typer.Typer(help="Accounts on a running Investo.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(cluster_cli.app, name="cluster")
app.command("engine")(cluster_cli.engine)
app.command("dbwriter")(cluster_cli.dbwriter)
app.command("gateway")(cluster_cli.gateway)
app.command("marketdata")(cluster_cli.marketdata)
app.command("ws")(cluster_cli.ws)
candles_app = typer.Typer(help="The candles table of the SQL history.", no_args_is_help=True)
app.add_typer(candles_app, name="candles")


@app.callback()
def _root() -> None:
    """Investo: a real-time stock exchange you can run."""


@app.command()
def version() -> None:
    """Print Investo's version."""
    typer.echo(investo.__version__)


@app.command()
def up(
    port: Annotated[int, typer.Option(help="Port of the API and UI on 127.0.0.1.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    data_dir: Annotated[Path, typer.Option(help="Where the log, snapshots and history live.")] = Path(
        "investo-data"
    ),
    markets: Annotated[Path | None, typer.Option(help="Markets TOML file (default: built-in).")] = None,
    snapshot_every: Annotated[int, typer.Option(help="Commands between two snapshots.")] = 50_000,
    rate_limit: Annotated[int, typer.Option(help="Requests per minute per IP (0: none).")] = 60_000,
    order_limit: Annotated[int, typer.Option(help="Orders per 10 s per API key (0: none).")] = 10_000,
    log_level: Annotated[str, typer.Option(help="debug logs one line per request.")] = "warning",
    bots: Annotated[
        bool, typer.Option("--bots/--no-bots", help="Run the built-in market makers and traders.")
    ] = True,
    database: Annotated[
        str | None,
        typer.Option(
            "--database",
            "--database-url",
            help="The SQL history: sqlite:///FILE or postgresql://USER@HOST:PORT/DB "
            "(default: history.db in the data dir; with --redis a postgresql:// URL is required).",
        ),
    ] = None,
    redis: Annotated[
        str | None,
        typer.Option(
            help="Run distributed instead: engines, DB writer, gateway, market streams (and bots) as "
            "processes over "
            "this Redis (redis://HOST:PORT/DB?prefix=NAME) and the Postgres --database.",
        ),
    ] = None,
    matching_shards: Annotated[
        int | None,
        typer.Option(
            help="With --redis, for a new cluster: matching engines (markets are dealt; default 1)."
        ),
    ] = None,
    accounts_shards: Annotated[
        int | None,
        typer.Option(help="With --redis, for a new cluster: accounts engines (user u on u % N; default 1)."),
    ] = None,
    ws_port: Annotated[
        int | None,
        typer.Option(help="With --redis: port of the market streams (investo ws; default: --port + 1)."),
    ] = None,
    proxy_headers: Annotated[
        bool,
        typer.Option(help="Embedded mode behind a proxy on 127.0.0.1: the client's IP from X-Forwarded-For."),
    ] = False,
) -> None:
    """Start the whole exchange: in one process (embedded mode), or with --redis as a small cluster."""
    if redis is not None:
        from investo.cluster.up import ClusterUpOptions
        from investo.cluster.up import run as run_cluster

        if database is None:
            raise typer.BadParameter("--redis needs --database postgresql://…", param_hint="--database")
        cluster = ClusterUpOptions(
            redis, database, host, port, data_dir, markets, matching_shards, accounts_shards,
            snapshot_every, rate_limit, order_limit, log_level, bots,
        )  # fmt: skip
        cluster.ws_port = ws_port
        run_cluster(cluster)
        return
    from investo.server import UpOptions, run

    options = UpOptions(host, port, data_dir, markets, snapshot_every, rate_limit, order_limit, log_level)
    options.bots = bots
    options.database_url = database
    options.proxy_headers = proxy_headers
    run(options)


@app.command()
def marketmaker(
    url: Annotated[str, typer.Option(help="The running exchange.")] = "http://127.0.0.1:8000",
    seed: Annotated[int, typer.Option(help="Seeds every random choice of the bots.")] = 1,
    makers: Annotated[int, typer.Option(help="Market makers per market.")] = 2,
    traders: Annotated[int, typer.Option(help="Noise traders per market.")] = 2,
    rate: Annotated[float, typer.Option(help="Orders per second of each noise trader.")] = 1.5,
    levels: Annotated[int, typer.Option(help="Price levels per side of each maker.")] = 5,
    spread: Annotated[int, typer.Option(help="Least best-bid to best-ask distance, in ticks.")] = 4,
    spacing: Annotated[int, typer.Option(help="Ticks between two levels of one side.")] = 2,
    size: Annotated[int, typer.Option(help="Lots of a maker's first level.")] = 5,
    symbol: Annotated[list[str] | None, typer.Option(help="Only these markets (repeatable).")] = None,
    markets: Annotated[
        Path | None, typer.Option(help="Markets TOML file for initial prices (default: built-in).")
    ] = None,
    state_dir: Annotated[
        Path | None, typer.Option(help="Keep bot keys here and reuse them next time.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug shows every refused order.")] = "warning",
) -> None:
    """Run the built-in market makers and noise traders against any Investo, until Ctrl-C."""
    import logging

    from investo.bots import BotConfig, BotFleet
    from investo.markets import MarketConfigError, load_markets

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = BotConfig(
            seed=seed, makers=makers, traders=traders, trader_rate=rate, levels=levels,
            spread_ticks=spread, level_spacing_ticks=spacing, order_lots=size, state_dir=state_dir,
        )  # fmt: skip
        specs = load_markets(markets)
    except (ValueError, MarketConfigError) as error:
        raise typer.BadParameter(str(error)) from None
    prices = {s: spec.initial_price for s, spec in specs.items() if spec.initial_price is not None}
    fleet = BotFleet(url, config, initial_prices=prices, symbols=symbol or None)
    typer.echo(f"bots trading on {url} (seed {seed}); Ctrl-C stops them and cancels their orders")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(fleet.run())


@user_app.command("create")
def user_create(
    name: str,
    url: Annotated[str, typer.Option(help="The running exchange.")] = "http://127.0.0.1:8000",
    key_file: Annotated[Path | None, typer.Option(help="Where to write the private key PEM.")] = None,
    demo_funds: Annotated[bool, typer.Option(help="Also claim today's demo funds.")] = True,
) -> None:
    """Create an account: make an Ed25519 key here, register its public half, keep the PEM."""
    from investo.client import ApiError, InvestoClient
    from investo.security.signing import generate_key_pair, private_key_to_pem

    path = key_file or Path(f"{name}.pem")
    if path.exists():
        raise typer.BadParameter(f"{path} exists; choose another --key-file", param_hint="--key-file")
    private_key, _ = generate_key_pair()

    async def register() -> dict[str, object]:
        async with InvestoClient(url, private_key) as client:
            answer = await client.register(name)
            if demo_funds:
                answer["demoFunds"] = await client.claim_demo_funds()
            return answer

    try:
        answer = asyncio.run(register())
    except ApiError as error:
        typer.echo(f"refused: {error.msg} (code {error.code})", err=True)
        raise typer.Exit(1) from None
    except OSError as error:
        typer.echo(f"cannot reach {url}: {error}", err=True)
        raise typer.Exit(1) from None
    path.write_text(private_key_to_pem(private_key))
    path.chmod(0o600)
    typer.echo(
        f"user {answer['name']} (id {answer['userId']}) api key {answer['apiKey']}; private key in {path}"
    )


@candles_app.command("rebuild")
def candles_rebuild(
    data_dir: Annotated[Path, typer.Option(help="The data dir of the (stopped) server.")] = Path(
        "investo-data"
    ),
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            "--database",
            help="The history database, as given to `investo up` (default: history.db in the data dir).",
        ),
    ] = None,
) -> None:
    """Recompute every candle from the trades table (idempotent; run with the server stopped)."""
    import sys

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from investo.store.migrate import upgrade
    from investo.store.rebuild import rebuild_candles

    url = database_url or f"sqlite:///{data_dir / 'history.db'}"
    if database_url is None and not (data_dir / "history.db").exists():
        typer.echo(f"no history database in {data_dir}", err=True)
        raise typer.Exit(1)
    upgrade(url)
    if sys.stdout.isatty():
        columns = (TextColumn("rebuilding candles"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, transient=True) as bar:
            task = bar.add_task("rebuild", total=None)
            written = asyncio.run(
                rebuild_candles(url, lambda done, total: bar.update(task, completed=done, total=total))
            )
    else:
        written = asyncio.run(rebuild_candles(url))
    typer.echo(f"rebuilt {written} candles")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
