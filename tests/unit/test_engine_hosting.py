"""`investo engine`: which shards a process hosts, and how shards hosted together stop."""

from __future__ import annotations

import asyncio

import pytest
import typer
from typer.testing import CliRunner

from investo.bench.cli import EngineProcesses
from investo.bench.cluster_bench import ENGINE_LAYOUTS, together_in_one_process
from investo.cli import app
from investo.cluster.cli import _run_side_by_side, _shard_choice
from investo.cluster.engine import Fenced


def test_one_shard_by_role_and_number() -> None:
    assert _shard_choice("matching", 1, None) == [("matching", 1)]
    assert _shard_choice("accounts", 0, None) == [("accounts", 0)]


def test_several_shards_by_name_or_all() -> None:
    assert _shard_choice(None, 0, "accounts:0, matching:1") == [("accounts", 0), ("matching", 1)]
    assert _shard_choice(None, 0, "all") is None  # every shard of the cluster, read at start-up


@pytest.mark.parametrize(
    ("role", "shards", "says"),
    [
        (None, None, "give --role"),
        ("bank", None, "must be accounts or matching"),
        ("accounts", "matching:0", "not both"),
        (None, "matching", "is not ROLE:N"),
        (None, "matching:x", "is not ROLE:N"),
        (None, "ledger:0", "is not ROLE:N"),
        (None, "matching:0,matching:0", "named twice"),
    ],
)
def test_unclear_choices_are_refused(role: str | None, shards: str | None, says: str) -> None:
    with pytest.raises(typer.BadParameter, match=says):
        _shard_choice(role, 0, shards)


def test_the_command_refuses_an_unclear_choice_before_touching_redis() -> None:
    result = CliRunner().invoke(
        app, ["engine", "--shards", "matching:one", "--redis", "redis://127.0.0.1:1/0"]
    )
    assert result.exit_code == 2, result.output
    assert "is not ROLE:N" in result.output


class _Steady:
    """Runs until told to stop, as a shard with nothing wrong does."""

    def __init__(self) -> None:
        self.stopped_cleanly = False

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.stopped_cleanly = True


class _FencedAfter:
    """Is fenced (another engine took its shard over) after a moment."""

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.sleep(0.01)
        raise Fenced("matching shard 1 was taken over")


async def test_a_fenced_shard_stops_the_shards_beside_it_and_its_error_comes_out() -> None:
    steady = [_Steady(), _Steady()]
    stop = asyncio.Event()
    with pytest.raises(Fenced, match="taken over"):
        await asyncio.wait_for(_run_side_by_side([steady[0], _FencedAfter(), steady[1]], stop), 5)  # type: ignore[list-item]
    assert stop.is_set()
    assert all(engine.stopped_cleanly for engine in steady)


async def test_shards_side_by_side_end_when_told_to_stop() -> None:
    steady = [_Steady(), _Steady()]
    stop = asyncio.Event()
    running = asyncio.create_task(_run_side_by_side(steady, stop))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(running, 5)
    assert all(engine.stopped_cleanly for engine in steady)


def test_the_benchmark_hosts_engines_together_unless_they_leave_a_core_free() -> None:
    assert together_in_one_process("auto", 1, cores=2)  # 1 + 1 would take both cores
    assert together_in_one_process("auto", 2, cores=2)
    assert together_in_one_process("auto", 2, cores=4)
    assert not together_in_one_process("auto", 1, cores=4)  # a core each, two left over
    assert not together_in_one_process("auto", 2, cores=8)
    assert together_in_one_process("together", 1, cores=8)
    assert not together_in_one_process("per-shard", 4, cores=1)
    with pytest.raises(ValueError, match="use one of per-shard, together, auto"):
        together_in_one_process("one-each", 1)


def test_bench_cluster_offers_every_engine_layout_and_no_other() -> None:
    # the CLI spells the layouts itself: importing the cluster bench would cost every `investo` command ~0.5 s
    assert tuple(layout.value for layout in EngineProcesses) == ENGINE_LAYOUTS
