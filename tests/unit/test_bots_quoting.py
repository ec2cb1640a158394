"""The bots' pure quoting logic (investo.bots.quoting) on fake market states: ladders on the tick and
lot grid, skew against inventory, never crossing its own quotes, funding, refresh plans, the seeded
walk, and the noise trader's orders."""

from __future__ import annotations

import itertools
import random
from decimal import Decimal

import pytest

from investo.bots.config import BotConfig
from investo.bots.quoting import (
    BUY,
    SELL,
    BotMarket,
    FairValue,
    LadderShape,
    OpenOrder,
    Plan,
    Quote,
    crossed,
    fund,
    ladder,
    plan,
    skew_ticks,
)
from investo.bots.trader import NoiseTrader
from investo.bots.user import BotUser
from investo.markets import load_markets

TATA = BotMarket("TATAINR", "TATA", "INR", Decimal("0.05"), Decimal("1"), 1, 2_000_000, 1, 1_000_000,
                 Decimal("10"), Decimal("950.00"))  # fmt: skip
SHAPE = LadderShape(levels=5, spread_ticks=4, level_spacing_ticks=2, order_lots=5, skew_lots_per_tick=20)
FAIR = 19_000  # 950.00 in ticks of 0.05


def sides(quotes: list[Quote]) -> tuple[list[Quote], list[Quote]]:
    return [q for q in quotes if q.side == BUY], [q for q in quotes if q.side == SELL]


def test_ladder_is_on_the_grid_and_spaced() -> None:
    quotes = ladder(TATA, FAIR, 0, SHAPE)
    bids, asks = sides(quotes)
    assert len(bids) == len(asks) == 5
    assert [b.ticks for b in bids] == sorted((b.ticks for b in bids), reverse=True)
    assert [a.ticks for a in asks] == sorted(a.ticks for a in asks)
    for side in (bids, asks):
        assert all(abs(x.ticks - y.ticks) == SHAPE.level_spacing_ticks for x, y in itertools.pairwise(side))
        assert all(q.ticks % SHAPE.level_spacing_ticks == 0 for q in side)
    assert asks[0].ticks - bids[0].ticks >= SHAPE.spread_ticks
    assert bids[0].ticks < FAIR < asks[0].ticks
    assert [q.lots for q in bids] == [5, 7, 10, 12, 15]
    # exact decimal strings on the tick and lot
    assert TATA.price(bids[0].ticks) == "949.90000000"
    assert TATA.qty(bids[0].lots) == "5.00000000"
    assert TATA.ticks_of(TATA.price(asks[-1].ticks)) == asks[-1].ticks


@pytest.mark.parametrize("fair", [37, 19_000, 19_001, 19_003, 250_01])
@pytest.mark.parametrize("inventory", [-10_000, -25, 0, 19, 20, 399, 5_000])
def test_ladder_never_crosses_itself(fair: int, inventory: int) -> None:
    for shape in (SHAPE, LadderShape(levels=3, spread_ticks=1, level_spacing_ticks=3, order_lots=1)):
        quotes = ladder(TATA, fair, inventory, shape)
        assert not crossed(quotes)
        bids, asks = sides(quotes)
        if bids and asks:
            assert asks[0].ticks - bids[0].ticks >= shape.spread_ticks


def test_skew_is_against_inventory_and_bounded() -> None:
    assert skew_ticks(0, SHAPE) == 0
    assert skew_ticks(19, SHAPE) == 0 and skew_ticks(-19, SHAPE) == 0
    assert skew_ticks(40, SHAPE) == -2  # long base: lower prices
    assert skew_ticks(-40, SHAPE) == 2  # short base: higher prices
    assert skew_ticks(10**6, SHAPE) == -SHAPE.max_skew_ticks
    flat, long, short = (ladder(TATA, FAIR, inv, SHAPE) for inv in (0, 200, -200))
    best = {name: (sides(q)[0][0].ticks, sides(q)[1][0].ticks) for name, q in
            (("flat", flat), ("long", long), ("short", short))}  # fmt: skip
    assert best["long"][0] < best["flat"][0] and best["long"][1] < best["flat"][1]
    assert best["short"][0] > best["flat"][0] and best["short"][1] > best["flat"][1]


def test_min_notional_and_price_range_are_respected() -> None:
    cheap = BotMarket("X", "B", "Q", Decimal("0.01"), Decimal("1"), min_notional=Decimal("10"))
    quotes = ladder(cheap, 30, 0, LadderShape(levels=5, order_lots=1))  # 0.30 a share: 34+ lots for 10
    assert quotes, "the asks still fit"
    for q in quotes:
        assert q.ticks >= cheap.min_price_ticks
        assert cheap.notional(q.ticks, q.lots) >= cheap.min_notional
        assert q.lots >= cheap.min_lots_at(q.ticks)
    assert cheap.min_lots_at(25) == 40  # exactly 10.00
    assert cheap.min_lots_at(30) == 34  # 10.20; 33 lots would be 9.90
    low = ladder(TATA, 3, 0, SHAPE)
    assert all(q.ticks >= 1 for q in low) and len(sides(low)[0]) < 5


def test_fund_keeps_the_nearest_levels_it_can_pay_for() -> None:
    quotes = ladder(TATA, FAIR, 0, SHAPE)
    everything = fund(TATA, quotes, Decimal("1000000"), 10_000, 100)
    assert everything == quotes
    no_cash = fund(TATA, quotes, Decimal("0"), 10_000, 100)
    assert sides(no_cash)[0] == [] and sides(no_cash)[1] == sides(quotes)[1]
    no_shares = fund(TATA, quotes, Decimal("1000000"), 0, 100)
    assert sides(no_shares)[1] == [] and sides(no_shares)[0] == sides(quotes)[0]
    # two levels of bids: 5 × 949.90 + 7 × 949.80 = 11,398.10, plus 1 % fee headroom = 11,512.081
    two = fund(TATA, quotes, Decimal("11512.081"), 12, 100)
    assert [q.ticks for q in sides(two)[0]] == [q.ticks for q in sides(quotes)[0][:2]]
    assert [q.lots for q in sides(two)[1]] == [5, 7]
    short_by_a_paisa = fund(TATA, quotes, Decimal("11512.08"), 0, 100)
    assert len(sides(short_by_a_paisa)[0]) == 1


def test_plan_changes_only_what_moved() -> None:
    before = ladder(TATA, FAIR, 0, SHAPE)
    opened = [OpenOrder(i, q.side, q.ticks, q.lots) for i, q in enumerate(before)]
    assert plan(before, opened, 10) == Plan([], [], [])
    after = ladder(TATA, FAIR + 2, 0, SHAPE)  # one grid step up
    todo = plan(after, opened, 10)
    assert len(todo.cancel) == 2 and len(todo.place) == 2  # one level leaves each side, one joins
    remaining = [o for o in opened if o.order_id not in todo.cancel]
    final = remaining + [OpenOrder(-1, q.side, q.ticks, q.lots) for q in todo.place]
    assert sorted((o.side, o.ticks) for o in final) == sorted((q.side, q.ticks) for q in after)
    assert not crossed(final) and not crossed(remaining)
    assert todo.cancel_first == []  # a one-step move: the new quotes meet no stale order
    jump = plan(ladder(TATA, FAIR + 40, 0, SHAPE), opened, 10)  # far up: old asks are in the way
    survivors = [o for o in opened if o.order_id not in jump.cancel_first]
    midway = survivors + [OpenOrder(-1, q.side, q.ticks, q.lots) for q in jump.place]
    assert not crossed(midway), "never crosses itself half-way through a refresh"
    assert {o.side for o in survivors} == {BUY}, "the old bids stay until the new ones are in"


def test_plan_replaces_depleted_and_duplicate_orders_and_bounds_the_count() -> None:
    wanted = ladder(TATA, FAIR, 0, SHAPE)
    best_bid = wanted[0]
    opened = [
        OpenOrder(1, BUY, best_bid.ticks, 2),  # 2 of 5 left: replaced
        OpenOrder(2, SELL, 1, 5),  # not wanted
    ]
    todo = plan(wanted, opened, 10)
    assert set(todo.cancel) == {1, 2} and todo.place == wanted
    dup = [OpenOrder(1, BUY, best_bid.ticks, 5), OpenOrder(2, BUY, best_bid.ticks, 5)]
    assert plan(wanted, dup, 10).cancel == [2]
    many = [OpenOrder(i, BUY, 1 + i, 1) for i in range(11)]
    assert plan(wanted, many, 10) == Plan(list(range(11)), wanted, [])


def test_fair_value_walk_is_seeded_on_ticks_and_in_range() -> None:
    def walk(seed: int) -> list[int]:
        fair = FairValue(TATA, FAIR, random.Random(seed), 2)
        return [fair.step() for _ in range(500)]

    assert walk(7) == walk(7) and walk(7) != walk(8)
    steps = {b - a for a, b in itertools.pairwise(walk(7))}
    assert steps <= {-3, -4, 0, 3, 4} and steps & {-3, -4} and steps & {3, 4}  # 2 bps of ~19,000
    floor = FairValue(TATA, 2, random.Random(1), 2)
    assert min(floor.step() for _ in range(200)) >= TATA.min_price_ticks


def test_market_from_exchange_info_matches_the_markets_file() -> None:
    from investo.api.public import symbol_info

    for spec in load_markets(None).values():
        market = BotMarket.from_symbol_info(symbol_info(spec), spec.initial_price)
        assert (market.tick_size, market.lot_size, market.min_notional) == (
            spec.tick_size, spec.lot_size, spec.min_notional,
        )  # fmt: skip
        assert market.min_price_ticks == spec.core.min_price and market.max_lots == spec.core.max_qty


def test_noise_orders_are_exact_marketable_and_seeded() -> None:
    config = BotConfig(seed=3)

    def orders(seed: int) -> list[dict[str, object]]:
        fair = FairValue(TATA, FAIR, random.Random(0), 2)
        user = BotUser("http://127.0.0.1:9", "nt-TATAINR-1")
        trader = NoiseTrader(user, TATA, fair, config, random.Random(seed))
        return [trader.next_order() for _ in range(300)]

    made = orders(5)
    assert made == orders(5)
    assert {o["side"] for o in made} == {BUY, SELL} and {o["type"] for o in made} == {"MARKET", "LIMIT"}
    for o in made:
        lots = TATA.lots_of(str(o["quantity"]))
        assert 1 <= lots <= config.trader_max_lots
        if o["type"] == "LIMIT":
            ticks = TATA.ticks_of(str(o["price"]))
            assert o["timeInForce"] == "IOC"
            assert ticks >= FAIR + 2 if o["side"] == BUY else ticks <= FAIR - 2
        else:
            assert "price" not in o


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="levels"):
        BotConfig(levels=0)
    with pytest.raises(ValueError, match="stp_mode"):
        BotConfig(stp_mode="NONE")
    with pytest.raises(ValueError, match="trader_rate"):
        BotConfig(trader_rate=0)
