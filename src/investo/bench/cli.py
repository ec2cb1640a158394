"""`investo bench …` commands."""

from __future__ import annotations

import resource
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from investo.bench import engine_bench
from investo.bench.flow import FlowError, FlowLine, read_flow

app = typer.Typer(help="Benchmarks that print figures (see BENCHMARKS.md).", no_args_is_help=True)

FLOW_HELP = (
    "Order flow file (op,id,side,price,qty lines). Make one with "
    "`python ../shared/bench/orderflow.py -n 1000000 --seed 1 --out flow.csv`."
)


def _load(flow: Path) -> list[FlowLine]:
    if not flow.is_file():
        raise typer.BadParameter(f"no such file: {flow}", param_hint="--flow")
    try:
        return read_flow(flow)
    except FlowError as error:
        raise typer.BadParameter(str(error), param_hint="--flow") from None


@contextmanager
def _progress(label: str, total: int) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on a terminal; nothing when output is piped."""
    if not sys.stderr.isatty():
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _peak_rss_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


@app.command()
def engine(
    flow: Annotated[Path, typer.Option(help=FLOW_HELP)],
    trades_out: Annotated[
        Path | None, typer.Option(help="Write trades as taker_id,maker_id,price,qty lines.")
    ] = None,
    repeat: Annotated[int, typer.Option(min=1, help="Runs of each book; the best of each is reported.")] = 1,
) -> None:
    """One matching engine fed a flow, timed against a naive book in the same run."""
    lines = _load(flow)
    records = engine_bench.engine_records(lines)
    n = len(records)
    engine_runs, naive_runs = [], []
    for _ in range(repeat):
        with _progress("naive book", n) as progress:
            naive_runs.append(engine_bench.run_naive(lines, progress))
        with _progress("engine", n) as progress:
            engine_runs.append(engine_bench.run_engine(records, progress))
    best = min(engine_runs, key=lambda run: run.seconds)
    naive = min(naive_runs, key=lambda run: run.seconds)
    typer.echo(f"commands_per_sec={best.rate(n):.0f} trades={len(best.trades)}")
    typer.echo(
        f"naive_commands_per_sec={naive.rate(n):.0f} naive_trades={len(naive.trades)} "
        f"ratio={naive.seconds / best.seconds:.2f}"
    )
    typer.echo(f"commands={n} repeat={repeat} peak_rss_mb={_peak_rss_mb()}")
    if best.trades != naive.trades:
        typer.echo("warning: the engine's trades differ from the naive book's", err=True)
    if trades_out:
        engine_bench.write_trades(trades_out, best.trades)


@app.command()
def exchange(
    flow: Annotated[Path, typer.Option(help=FLOW_HELP)],
    repeat: Annotated[int, typer.Option(min=1, help="Runs of each kind; the best of each is reported.")] = 1,
) -> None:
    """The flow through the whole in-process exchange, 1,000 funded users: accounts, matching and
    the market-data builders (depth diffs, best bid/ask, candles, rolling day); then without market data."""
    lines = _load(flow)
    commands = engine_bench.exchange_commands(lines)
    del lines
    n = len(commands)
    full: list[float] = []  # seconds of each run with market data
    bare: list[float] = []  # and without
    first: list[tuple[int, int, int, int]] | None = None  # the first run's trades; later runs are compared
    differ = False
    for _ in range(repeat):
        for label, market_data, seconds in (
            ("exchange + market data", True, full),
            ("exchange alone", False, bare),
        ):
            with _progress(label, n) as progress:
                run = engine_bench.run_exchange(commands, progress, market_data=market_data)
            seconds.append(run.seconds)
            if first is None:
                first = run.trades
            differ |= run.trades != first
            del run  # one run's exchange and trades at a time (plus the first run's trades)
    typer.echo(
        f"commands_per_sec={n / min(full):.0f} trades={len(first or [])} (accounts + matching + market data)"
    )
    typer.echo(f"no_market_data_commands_per_sec={n / min(bare):.0f} (accounts + matching)")
    typer.echo(f"commands={n} users={engine_bench.USERS} repeat={repeat} peak_rss_mb={_peak_rss_mb()}")
    if differ:
        typer.echo("warning: the runs made different trades", err=True)


@app.command()
def api(
    url: Annotated[str | None, typer.Option(help="A running Investo; default: start one here.")] = None,
    rates: Annotated[
        str, typer.Option(help="Offered orders/s, comma-separated.")
    ] = "500,1000,2000,3000,4000",
    seconds: Annotated[float, typer.Option(help="Duration of each rate.")] = 10.0,
    users: Annotated[int, typer.Option(help="Funded users the orders come from.")] = 20,
    connections: Annotated[int, typer.Option(help="HTTP connections of the load generator.")] = 64,
) -> None:
    """Signed orders over HTTP, open-loop at fixed offered rates: orders/s and latency percentiles."""
    from investo.bench import api_bench

    offered = [int(r) for r in rates.split(",") if r.strip()]
    for result in api_bench.run(url, offered, seconds, users, connections):
        typer.echo(result.line())


@app.command()
def ws(
    url: Annotated[
        str | None, typer.Option(help="A running Investo; default: start one here (bots on).")
    ] = None,
    clients: Annotated[
        int, typer.Option(min=1, help="WebSocket clients (depth + trades of one market).")
    ] = 1_000,
    rate: Annotated[int, typer.Option(min=1, help="Orders per second placed over REST (the load).")] = 200,
    seconds: Annotated[float, typer.Option(help="How long the clients are measured.")] = 10.0,
    users: Annotated[int, typer.Option(help="Funded users the orders come from.")] = 10,
    processes: Annotated[int, typer.Option(min=1, help="Processes the clients are spread over.")] = 2,
    burst: Annotated[
        int, typer.Option(min=1, help="Single client: messages the gateway feed publishes per loop pass.")
    ] = 20,
) -> None:
    """K WebSocket clients on a busy market: messages/s, match-to-receipt latency, one client's max."""
    from investo.bench import ws_bench

    for line in ws_bench.run(url, clients, rate, seconds, users, processes, burst).lines():
        typer.echo(line)


class ClusterMode(StrEnum):
    pipeline = "pipeline"
    http = "http"
    both = "both"


class EngineProcesses(StrEnum):
    per_shard = "per-shard"
    together = "together"
    auto = "auto"


CLUSTER_HELP = (
    "A fresh cluster per shard count (new Redis namespace, new Postgres database, engine and DB "
    "writer processes), open loop at fixed offered rates.\n\n"
    "--mode pipeline (needs --flow): the flow's commands appended straight to the shard input "
    "streams until their events are committed in Postgres. Prints commands/s, answer latency "
    "p50/p99, the DB writer's lag and CPU ms per 1,000 commands per process.\n\n"
    "--mode http: two `investo gateway` processes too; funded users send signed "
    "POST /api/v3/order requests alternately to both, latency from each order's scheduled time. "
    "Prints per rate: achieved orders/s, p50/p99/p99.9/max, errors, how many entries Postgres "
    "was behind (most, at the end) and its catch-up time, CPU ms per order per process.\n\n"
    "--mode both: pipeline at --rates, then http at --http-rates."
)


@app.command(help=CLUSTER_HELP)
def cluster(
    flow: Annotated[Path | None, typer.Option(help=FLOW_HELP + " Needed by --mode pipeline.")] = None,
    mode: Annotated[
        ClusterMode, typer.Option(help="pipeline, http or both (see above).")
    ] = ClusterMode.pipeline,
    shards: Annotated[
        str, typer.Option(help="Matching (and accounts) shard counts, comma-separated.")
    ] = "1,2",
    rates: Annotated[
        str | None,
        typer.Option(
            help="Offered rates per second, comma-separated "
            "(default: pipeline 5000,10000,20000; http 500,1000,2000)."
        ),
    ] = None,
    http_rates: Annotated[
        str, typer.Option(help="Offered orders/s of --mode both's http part.")
    ] = "500,1000,2000",
    seconds: Annotated[float, typer.Option(help="Duration of each rate.")] = 5.0,
    users: Annotated[int, typer.Option(min=1, help="http: funded users the orders come from.")] = 20,
    connections: Annotated[int, typer.Option(min=1, help="http: connections to each gateway.")] = 64,
    engines: Annotated[
        EngineProcesses,
        typer.Option(
            help="One engine process per shard, one hosting every shard (`investo engine --shards all`), "
            "or auto: together unless the cores outnumber the engine processes (two per shard count)."
        ),
    ] = EngineProcesses.auto,
    repeat: Annotated[
        int,
        typer.Option(
            min=1,
            help="http: rounds of fresh clusters (every shard count each round), then each rate's "
            "median p50/p99 and every run's p99.",
        ),
    ] = 1,
    redis: Annotated[
        str, typer.Option(help="Redis server (a fresh namespace is used).")
    ] = "redis://127.0.0.1:6379/0",
    postgres: Annotated[
        str, typer.Option(help="A Postgres database to CREATE DATABASE from (a fresh one is used).")
    ] = "postgresql://postgres@127.0.0.1:5432/test",
) -> None:
    counts = _numbers(shards, "--shards")
    if mode is not ClusterMode.http:
        from investo.bench import cluster_bench

        if flow is None:
            raise typer.BadParameter("--mode pipeline needs a flow file", param_hint="--flow")
        lines = _load(flow)
        try:
            for result in cluster_bench.run(
                redis,
                postgres,
                counts,
                lines,
                _numbers(rates or "5000,10000,20000", "--rates"),
                seconds,
                engines.value,
            ):
                for line in result.lines():
                    typer.echo(line)
        except ValueError as error:
            raise typer.BadParameter(str(error)) from None
    if mode is not ClusterMode.pipeline:
        from investo.bench import cluster_http

        offered = _numbers(http_rates if mode is ClusterMode.both else rates or http_rates, "--rates")
        runs = []
        with _steps(repeat * len(counts) * (3 + len(offered))) as step:
            for run in cluster_http.run(
                redis, postgres, counts, offered, seconds, users, connections, step, repeat, engines.value
            ):
                runs.append(run)
                for line in run.lines():
                    typer.echo(line)
        if repeat > 1:
            for line in cluster_http.summary_lines(runs):
                typer.echo(line)


def _numbers(text: str, option: str) -> list[int]:
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"not a comma-separated list of whole numbers: {text!r}", param_hint=option
        ) from None
    if not numbers or min(numbers) <= 0:
        raise typer.BadParameter("give at least one number, each above 0", param_hint=option)
    return numbers


@contextmanager
def _steps(total: int) -> Iterator[Callable[[str], None]]:
    """A progress bar of named steps on a terminal (each call starts the next step); silent when piped."""
    if not sys.stderr.isatty():
        yield lambda _: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("starting", total=total)
        started = [False]

        def step(description: str) -> None:
            bar.update(task, description=description, advance=1 if started[0] else 0)
            started[0] = True

        yield step
