"""The engine host over a real log: acknowledge after durability, recovery, snapshots, stop."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from investo.core.markets import Market
from investo.core.messages import Deposit, OrderType, PlaceOrder, Side, StpMode, TimeInForce
from investo.host import Applied, EngineHost, HostStopped
from investo.log import open_log

MARKETS = [Market("TATAINR", "TATA", "INR", notional_unit=5, lot_units=1, maker_fee_bps=10, taker_fee_bps=20)]


class Recorder:
    """A listener that remembers offsets, with a settable durable watermark."""

    def __init__(self, durable: int | None = None) -> None:
        self.offsets: list[int] = []
        self.replayed: list[int] = []
        self.durable = durable

    def on_applied(self, batch: Sequence[Applied]) -> None:
        for applied in batch:
            (self.replayed if applied.replayed else self.offsets).append(applied.offset)
            if self.durable is not None:
                self.durable = applied.offset

    @property
    def durable_offset(self) -> int | None:
        return self.durable


def order(user: int, side: Side, price: int, qty: int) -> PlaceOrder:
    return PlaceOrder(
        0, user, "TATAINR", side, OrderType.LIMIT, TimeInForce.GTC, price, qty, 0, "", StpMode.NONE
    )


async def fill(host: EngineHost, n: int) -> list[Applied]:
    out = [await host.submit(Deposit(0, u, a, 10**9)) for u in (1, 2) for a in ("INR", "TATA")]
    jobs = [host.submit(order(1 + i % 2, Side(i % 2), 19_000 + i % 3, 1 + i % 5)) for i in range(n)]
    return out + list(await asyncio.gather(*jobs))


async def test_acknowledged_commands_survive_and_replay_to_the_same_hash(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    host = EngineHost(MARKETS, open_log(url), clock_ms=lambda: 1_000, snapshot_every=10**9)
    host.start()
    acked = await fill(host, 200)
    assert [a.offset for a in acked] == list(range(1, 205))  # contiguous, in log order
    state = host.exchange.state_hash()
    host._accepting = False  # as after a kill -9: no stop(), no final snapshot
    await host.log.close()

    again = EngineHost(MARKETS, open_log(url), clock_ms=lambda: 500)
    recorder = Recorder()
    again.add_listener(recorder)
    assert await again.recover() == 204
    assert again.exchange.state_hash() == state
    assert recorder.replayed == list(range(1, 205))
    again.start()
    later = await again.submit(Deposit(0, 1, "INR", 1))
    assert later.offset == 205 and later.command.ts >= 1_000  # time never runs backwards
    await again.stop()
    await again.log.close()


async def test_snapshot_waits_for_durable_listeners_and_bounds_the_replay(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    host = EngineHost(MARKETS, open_log(url), snapshot_every=50)
    slow = Recorder(durable=0)
    host.add_listener(slow)
    host.start()
    await fill(host, 100)
    await host.stop()
    offset, _ = await host.log.latest_snapshot() or (0, b"")
    assert offset == 104
    state = host.exchange.state_hash()
    await host.log.close()

    again = EngineHost(MARKETS, open_log(url))
    again.add_listener(Recorder(durable=104))
    assert await again.recover() == 0  # everything was in the snapshot
    assert again.exchange.state_hash() == state
    await again.log.close()

    behind = Recorder(durable=60)  # e.g. the history database lost its last commits
    third = EngineHost(MARKETS, open_log(url))
    third.add_listener(behind)
    assert await third.recover() == 104  # the snapshot is skipped: the whole log is replayed
    assert third.exchange.state_hash() == state
    await third.log.close()


async def test_stop_finishes_queued_commands_then_refuses_new_ones() -> None:
    host = EngineHost(MARKETS, open_log("memory://"))
    host.start()
    jobs = [asyncio.ensure_future(host.submit(Deposit(0, 1, "INR", i + 1))) for i in range(50)]
    await asyncio.sleep(0)
    await host.stop()
    assert all(job.done() and job.result().offset for job in jobs)
    try:
        await host.submit(Deposit(0, 1, "INR", 1))
    except HostStopped:
        pass
    else:
        raise AssertionError("a stopped host took a command")
