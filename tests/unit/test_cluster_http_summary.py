"""`bench cluster --mode http --repeat N`: the summary over runs (pure; no cluster)."""

from __future__ import annotations

from investo.bench.api_bench import RateResult
from investo.bench.cluster_http import HttpRate, HttpRun, summary_lines


def _run(shards: int, latencies_by_rate: dict[int, list[float]], errors: int = 0) -> HttpRun:
    rates = [
        HttpRate(shards, RateResult(offered, len(ms), len(ms) - errors, errors, 1.0, ms), 0, 0, 0.0)
        for offered, ms in latencies_by_rate.items()
    ]
    return HttpRun(shards, rates, load_average=0.0)


def test_summary_gives_each_rate_the_median_and_every_p99_worst_last() -> None:
    # 100 latencies each: the p99 by rank (index 99) is the largest
    def ms(p50: float, p99: float) -> list[float]:
        return [p50] * 60 + [p50 + 1] * 39 + [p99]

    runs = [
        _run(1, {2000: ms(5, 40)}),
        _run(2, {2000: ms(9, 80)}),
        _run(1, {2000: ms(4, 18)}, errors=1),
        _run(2, {2000: ms(8, 30)}),
        _run(1, {2000: ms(6, 22)}),
    ]
    assert summary_lines(runs) == [
        "shards=1 offered=2000/s runs=3 p50_ms_median=5.00 p99_ms_median=22.00 "
        "p99_ms_each=18.0,22.0,40.0 errors=1",
        "shards=2 offered=2000/s runs=2 p50_ms_median=8.50 p99_ms_median=55.00 "
        "p99_ms_each=30.0,80.0 errors=0",
    ]


def test_summary_keeps_rates_apart() -> None:
    runs = [_run(1, {1000: [1.0] * 100, 2000: [2.0] * 100}), _run(1, {1000: [3.0] * 100, 2000: [4.0] * 100})]
    lines = summary_lines(runs)
    assert [line.split(" runs=")[0] for line in lines] == [
        "shards=1 offered=1000/s",
        "shards=1 offered=2000/s",
    ]
    assert "p99_ms_each=1.0,3.0" in lines[0] and "p99_ms_each=2.0,4.0" in lines[1]
