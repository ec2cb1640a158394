"""`investo bench cluster --mode http` end to end on a tiny load: real Redis, real Postgres, real processes.

Evidence (correctness, not speed): on a fresh 2 + 2 shard cluster with two gateways, 100
signed orders offered at 100/s are all answered 200 with no error, each latency is
measured, Postgres catches up with everything, and the CPU figures name every process
(both gateways served orders). The namespace and the database are gone afterwards.
"""

from __future__ import annotations

import asyncio

from cluster_fixtures import bench_leftovers
from investo.bench import cluster_http
from postgres_fixtures import POSTGRES_ADMIN_URL, require_postgres
from redis_fixtures import HOST, PORT, require_redis

REDIS = f"redis://{HOST}:{PORT}/0"


def test_http_mode_answers_every_order_through_two_gateways_and_cleans_up() -> None:
    require_redis()
    require_postgres()
    steps: list[str] = []
    runs = list(
        cluster_http.run(
            REDIS, POSTGRES_ADMIN_URL, [2], [100], 1.0, users=4, connections=2, step=steps.append
        )
    )
    assert [run.shards for run in runs] == [2]
    [rate] = runs[0].rates
    result = rate.result
    assert (result.offered, result.sent, result.ok, result.errors, result.first_error) == (
        100,
        100,
        100,
        0,
        "",
    )
    assert len(result.latencies_ms) == 100
    assert all(0 < ms < 10_000 for ms in result.latencies_ms)
    assert 0 < result.achieved <= 110
    assert 0 <= rate.writer_behind_end <= rate.writer_behind_max
    assert 0 <= rate.writer_catchup_s < 120
    processes = {"accounts-0", "accounts-1", "matching-0", "matching-1", "dbwriter", "gateway-0", "gateway-1"}
    assert processes <= set(rate.cpu_ms_per_order)
    assert rate.cpu_ms_per_order["gateway-0"] > 0 and rate.cpu_ms_per_order["gateway-1"] > 0
    assert steps[0] == "shards=2: starting the cluster" and steps[-1] == "shards=2: 100 orders/s for 1 s"
    lines = runs[0].lines()
    assert any("ok=100 errors=0" in line for line in lines)
    assert runs[0].namespace and runs[0].database
    leftovers = asyncio.run(bench_leftovers(REDIS, POSTGRES_ADMIN_URL))
    assert not {runs[0].namespace, runs[0].database} & leftovers  # both gone
