"""`investo bench cluster` (pipeline mode) on a tiny load: real Redis, real Postgres, real processes.

Evidence (correctness, not speed): on a fresh 1 + 1 shard cluster, a small flow offered at
two rates is answered in full, every command's output reaches Postgres, the committed rate
is timed from the first append (so it cannot read above what was offered), the CPU figures
name every process, and the bench leaves no namespace or database behind.
"""

from __future__ import annotations

import asyncio

from cluster_fixtures import bench_leftovers
from investo.bench import cluster_bench
from investo.bench.flow import FlowLine
from postgres_fixtures import POSTGRES_ADMIN_URL, require_postgres
from redis_fixtures import HOST, PORT, require_redis

REDIS = f"redis://{HOST}:{PORT}/0"
RATES = (200, 300)  # commands per second, one second each


def small_flow(count: int) -> list[FlowLine]:
    """Limits on both sides of 100.00 (some cross), a market order and a cancel now and then."""
    flow: list[FlowLine] = []
    for order_id in range(1, count + 1):
        buy = order_id % 2 == 0
        if order_id % 10 == 0:
            flow.append(FlowLine("C", order_id - 3, not buy, 0, 0))  # cancels an earlier order by its id
        elif order_id % 7 == 0:
            flow.append(FlowLine("M", order_id, buy, 0, 1 + order_id % 5))
        else:
            flow.append(FlowLine("L", order_id, buy, 10_000 + (order_id % 9) - 4, 1 + order_id % 20))
    return flow


def test_pipeline_mode_answers_and_commits_every_command_and_cleans_up() -> None:
    require_redis()
    require_postgres()
    before = asyncio.run(bench_leftovers(REDIS, POSTGRES_ADMIN_URL))
    runs = list(cluster_bench.run(REDIS, POSTGRES_ADMIN_URL, [1], small_flow(600), RATES, 1.0, "together"))

    [run] = runs
    offered = sum(RATES)
    assert [(r.offered, r.sent, r.answered) for r in run.rates] == [(rate, rate, rate) for rate in RATES]
    assert all(len(r.latencies_ms) == r.answered for r in run.rates)
    assert all(0 < ms < 10_000 for r in run.rates for ms in r.latencies_ms)
    assert run.committed == offered
    # timed from the first append: both rates' second at least, so never above the rates offered
    assert run.seconds_to_commit >= len(RATES) * 1.0 * 0.95
    assert run.committed / run.seconds_to_commit <= max(RATES)
    assert 0 <= run.writer_lag_s < run.seconds_to_commit
    assert {"engines", "dbwriter", "bench", "postgres"} <= set(run.cpu_ms_per_1k)
    assert run.cpu_ms_per_1k["engines"] > 0 and run.cpu_ms_per_1k["dbwriter"] > 0
    assert any(":matching:0:out:" in line and " transactions, " in line for line in run.writer_stats)
    lines = run.lines()
    assert lines[0].startswith("shards=1 offered=200/s") and f"committed_to_postgres={offered}" in lines[2]
    assert asyncio.run(bench_leftovers(REDIS, POSTGRES_ADMIN_URL)) <= before  # nothing of this run is left
