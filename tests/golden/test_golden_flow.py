"""Golden flows: a fixed seeded flow through the Exchange gives pinned figures.

If a change to the engines alters what this flow produces, these numbers move and
the test fails: the change must then be deliberate, and the pins updated with it
(say why in the commit). A replay from a snapshot taken mid-run must give the
same events and the same final hash as the uninterrupted run.
"""

from __future__ import annotations

import random

from investo.core.exchange import Exchange
from investo.core.markets import Market
from investo.core.messages import (
    CancelAll,
    CancelOrder,
    Command,
    Deposit,
    Event,
    OrderType,
    PlaceOrder,
    Side,
    StpMode,
    TimeInForce,
    TradeExecuted,
    Withdraw,
)

MARKETS = [
    Market("TATAINR", "TATA", "INR", notional_unit=5, lot_units=1, maker_fee_bps=10, taker_fee_bps=20),
    Market("ZOMATOINR", "ZOMATO", "INR", notional_unit=1, lot_units=1, maker_fee_bps=10, taker_fee_bps=20),
]
MIDS = {"TATAINR": 19_000, "ZOMATOINR": 25_000}
USERS = range(1, 9)

# Pinned: change only together with a deliberate change of the engines' behaviour.
GOLDEN_COMMANDS = 6_000
GOLDEN_TRADES = 1726
GOLDEN_EVENTS = 15985
GOLDEN_HASH = "0c0207cf2e8c66d3a01c87ac02a45fdf87eea01d9bb6d5a93f5c8c0d91e7b310"


def golden_flow(seed: int = 20261125, n: int = GOLDEN_COMMANDS) -> list[Command]:
    """Deposits, then a mix of every order type, STP mode, cancels and withdrawals."""
    rng = random.Random(seed)
    commands: list[Command] = []
    for user in USERS:
        for asset, amount in (("INR", 50_000_000_00), ("TATA", 20_000), ("ZOMATO", 20_000)):
            commands.append(Deposit(0, user, asset, amount))
    placed: list[tuple[int, str, str]] = []  # (user, market, client order id)
    for i in range(n):
        ts = 1_700_000_000_000 + i * 7
        user = rng.choice(USERS)
        market = rng.choice(MARKETS).symbol
        r = rng.random()
        if r < 0.25 and placed:
            owner, symbol, client_id = rng.choice(placed)
            commands.append(CancelOrder(ts, owner, symbol, client_order_id=client_id))
        elif r < 0.27:
            commands.append(CancelAll(ts, user, market))
        elif r < 0.28:
            commands.append(Withdraw(ts, user, "INR", rng.randint(1, 5_000_00)))
        else:
            commands.append(_order(rng, ts, user, market, f"c{i}"))
            placed.append((user, market, f"c{i}"))
    return commands


def _order(rng: random.Random, ts: int, user: int, market: str, client_id: str) -> PlaceOrder:
    side = rng.choice((Side.BUY, Side.SELL))
    stp = rng.choice(list(StpMode))
    kind = rng.random()
    mid = MIDS[market]
    if kind < 0.08:
        if side == Side.BUY and rng.random() < 0.5:
            return PlaceOrder(ts, user, market, side, OrderType.MARKET, TimeInForce.IOC, 0, 0,
                              rng.randint(1_000_00, 50_000_00), client_id, stp)  # fmt: skip
        return PlaceOrder(ts, user, market, side, OrderType.MARKET, TimeInForce.IOC, 0,
                          rng.randint(1, 40), 0, client_id, stp)  # fmt: skip
    offset = rng.randint(-15, 40)  # mostly passive, some crossing
    price = mid - offset if side == Side.BUY else mid + offset
    order_type = OrderType.LIMIT_MAKER if kind < 0.15 else OrderType.LIMIT
    tif = TimeInForce.GTC
    if order_type == OrderType.LIMIT:
        tif = rng.choices((TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK), (8, 1, 1))[0]
    return PlaceOrder(ts, user, market, side, order_type, tif, price, rng.randint(1, 60), 0, client_id, stp)


def run(exchange: Exchange, commands: list[Command]) -> list[Event]:
    events: list[Event] = []
    for command in commands:
        events.extend(exchange.apply(command))
    return events


def test_golden_flow_gives_pinned_figures() -> None:
    exchange = Exchange(MARKETS)
    events = run(exchange, golden_flow())
    exchange.check_invariants()
    trades = sum(1 for e in events if isinstance(e, TradeExecuted))
    assert (trades, len(events), exchange.state_hash()) == (GOLDEN_TRADES, GOLDEN_EVENTS, GOLDEN_HASH)


def test_replay_from_a_mid_run_snapshot_gives_the_same_events_and_hash() -> None:
    commands = golden_flow()
    whole = Exchange(MARKETS)
    whole_events = run(whole, commands)

    half = len(commands) // 2
    first = Exchange(MARKETS)
    run(first, commands[:half])
    resumed = Exchange.restore(MARKETS, first.snapshot())
    assert resumed.state_hash() == first.state_hash()
    tail_events = run(resumed, commands[half:])

    replayed = Exchange(MARKETS)
    head_events = run(replayed, commands[:half])
    assert head_events + tail_events == whole_events
    assert resumed.state_hash() == whole.state_hash() == GOLDEN_HASH
