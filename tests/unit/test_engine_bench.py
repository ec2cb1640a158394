"""`investo bench engine|exchange`: the engine, the exchange and the naive book agree on a flow.

The benchmark compares speeds only if the three do the same work, so this checks
that they produce the same trades, in the same order, on a seeded flow in the
shared format (limits near a drifting mid, some crossing, market orders, and
cancels of earlier orders, some of them already filled).
"""

from __future__ import annotations

import random

from investo.bench import engine_bench
from investo.bench.flow import FlowLine


def seeded_flow(n: int, seed: int) -> list[FlowLine]:
    rng = random.Random(seed)
    mid = 1_000
    live: list[FlowLine] = []
    flow: list[FlowLine] = []
    for order_id in range(1, n + 1):
        r = rng.random()
        if r < 0.3 and live:
            gone = live.pop(rng.randrange(len(live)))
            flow.append(FlowLine("C", gone.id, gone.buy, gone.price, gone.qty))
            continue
        buy = rng.random() < 0.5
        qty = rng.randint(1, 50)
        if r < 0.35:
            flow.append(FlowLine("M", order_id, buy, 0, qty))
            continue
        offset = -rng.randint(1, 3) if rng.random() < 0.2 else rng.randint(0, 10)
        line = FlowLine("L", order_id, buy, mid - offset if buy else mid + offset, qty)
        live.append(line)
        flow.append(line)
    return flow


def test_engine_and_naive_book_make_the_same_trades() -> None:
    flow = seeded_flow(5_000, seed=7)
    engine = engine_bench.run_engine(engine_bench.engine_records(flow))
    naive = engine_bench.run_naive(flow)
    assert len(naive.trades) > 500, "the flow should trade a lot"
    assert engine.trades == naive.trades
    assert engine.seconds > 0 and engine.rate(len(flow)) > 0


def test_exchange_makes_the_same_trades_as_the_naive_book() -> None:
    flow = seeded_flow(5_000, seed=8)
    exchange = engine_bench.run_exchange(engine_bench.exchange_commands(flow))
    naive = engine_bench.run_naive(flow)
    # The accounts engine numbers accepted orders 1, 2, 3, … in flow order (all are funded).
    flow_id = dict(enumerate((line.id for line in flow if line.op != "C"), start=1))
    renamed = [(flow_id[taker], flow_id[maker], price, qty) for taker, maker, price, qty in exchange.trades]
    assert len(naive.trades) > 500
    assert renamed == naive.trades


def test_exchange_with_and_without_market_data_make_the_same_trades() -> None:
    commands = engine_bench.exchange_commands(seeded_flow(3_000, seed=9))
    with_md = engine_bench.run_exchange(commands)
    without = engine_bench.run_exchange(commands, market_data=False)
    assert len(with_md.trades) > 300
    assert with_md.trades == without.trades
