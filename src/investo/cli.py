"""The `investo` command line."""

from __future__ import annotations

import typer

import investo
from investo.bench.cli import app as bench_app

app = typer.Typer(help="Investo: a real-time stock exchange you can run.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@app.callback()
def _root() -> None:
    """Investo: a real-time stock exchange you can run."""


@app.command()
def version() -> None:
    """Print Investo's version."""
    typer.echo(investo.__version__)


def main() -> None:
    app()
