"""`investo cluster rebuild` and `cluster init --database` on real Redis and Postgres: the guards.

A rebuild needs the cluster's configuration in SQL (a DB writer saves it), writes nothing on
a dry run, restores every shard (snapshot at input offset 0, a new input epoch, output
counters, configuration last; run again if it was interrupted: another new epoch), and
refuses to run over a Redis that still holds the cluster. `cluster init --database`
refuses to start afresh a cluster that Redis lost while SQL holds it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis
from typer.testing import CliRunner

from cluster_fixtures import MARKETS_TOML, MATCHING
from investo.cli import app
from investo.cluster import topology as topo
from investo.cluster.history import save_config
from investo.store.db import make_engine
from investo.store.migrate import upgrade
from redis_fixtures import redis_namespace_url

runner = CliRunner()


@pytest.fixture
def cluster_url() -> Iterator[str]:
    with redis_namespace_url() as url:
        yield url


def _save(database_url: str, topology: topo.Topology) -> None:
    async def save() -> None:
        db = make_engine(database_url)
        try:
            await save_config(db, topology)
        finally:
            await db.dispose()

    asyncio.run(save())


def test_rebuild_guards_dry_run_and_restore(cluster_url: str, postgres_url: str) -> None:
    upgrade(postgres_url)
    server_url, namespace = topo.split_url(cluster_url)
    args = ["cluster", "rebuild", "--redis", cluster_url, "--database", postgres_url]
    nothing = runner.invoke(app, args)
    assert nothing.exit_code == 1 and "holds no configuration" in nothing.output

    topology = topo.Topology(namespace, MARKETS_TOML, MATCHING, 2)
    _save(postgres_url, topology)
    init = ["cluster", "init", "--redis", cluster_url, "--matching-shards", "2", "--accounts-shards", "2"]
    refused = runner.invoke(app, [*init, "--database", postgres_url])
    assert refused.exit_code == 1 and "Redis lost it" in refused.output

    client = redis.Redis.from_url(server_url)
    try:
        dry = runner.invoke(app, [*args, "--dry-run"])
        assert dry.exit_code == 0, dry.output
        assert "would rebuild from SQL" in dry.output
        assert dry.output.count("0 open orders") == 4
        assert not list(client.scan_iter(match=f"{namespace}:*"))  # a dry run writes nothing

        done = runner.invoke(app, args)
        assert done.exit_code == 0 and "rebuilt from SQL" in done.output, done.output
        assert topo.Topology.decode(namespace, client.get(topo.config_key(namespace))) == topology  # type: ignore[arg-type]
        epochs = set()
        for role, shard in topology.every_output():
            assert client.hlen(f"{topology.input_prefix(role, shard)}:snapshots") == 1
            epochs.add(topo.parse_epoch(client.get(topology.epoch_key(role, shard))))  # type: ignore[arg-type]
        assert len(epochs) == 1 and 0 not in epochs  # a new input epoch, the same for every shard

        again = runner.invoke(app, args)
        assert again.exit_code == 1 and "nothing to rebuild" in again.output
        client.delete(topo.config_key(namespace))  # as if the rebuild died before its last write
        redone = runner.invoke(app, args)
        assert redone.exit_code == 0 and "rebuilt from SQL" in redone.output, redone.output
        for role, shard in topology.every_output():  # each rebuild starts an epoch of its own
            assert topo.parse_epoch(client.get(topology.epoch_key(role, shard))) not in epochs  # type: ignore[arg-type]
        assert runner.invoke(app, [*init, "--database", postgres_url]).exit_code == 0  # Redis has it now
    finally:
        client.close()
