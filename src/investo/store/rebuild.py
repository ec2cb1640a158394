"""Rebuild the ``candles`` table from the ``trades`` table (``investo candles rebuild``).

The history writer keeps candles incrementally (one upsert per touched candle per
transaction). If that table is ever lost or suspect, every candle can be recomputed
from the trades, which are the source of truth:

* in one transaction: delete every candle, read the trades of each symbol in trade id
  order (= match order), aggregate them into every interval of
  :data:`investo.store.models.INTERVALS` exactly as the writer does (open = first
  trade, close = last, high/low, volume in lots, quote volume, trade count), insert;
* idempotent: running it twice gives the same table; nothing else is touched;
* run it with the server stopped (a running writer would wait for the transaction
  and then add the batches it commits afterwards, which is still correct, but the
  rebuild reads a snapshot of the trades as of its start). On SQLite the rebuild's
  delete takes the database's write lock; on Postgres it first locks the candles
  table (``EXCLUSIVE``: reads go on, writes wait), so a writer's transaction, which
  upserts candles after inserting its trades, commits either wholly before the
  rebuild reads any trade or wholly after it commits: no trade is counted twice.

Cost: one pass over the trades (streamed in pages of ``page`` rows), memory O(candles
of one symbol).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import Table, delete, func, insert, select, text

from investo.store.db import make_engine
from investo.store.models import INTERVALS, Candle, Trade

Progress = Callable[[int, int], None]  # (trades done, trades in all)

_candles = cast(Table, Candle.__table__)
_trades = cast(Table, Trade.__table__)


async def rebuild_candles(database_url: str, progress: Progress | None = None, page: int = 10_000) -> int:
    """Recompute every candle from the trades; return how many candle rows were written."""
    engine = make_engine(database_url)
    written = 0
    try:
        async with engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # see the module docstring
                await conn.execute(text("LOCK TABLE candles IN EXCLUSIVE MODE"))
            total = (await conn.execute(select(func.count()).select_from(_trades))).scalar_one()
            symbols = [r[0] for r in await conn.execute(select(_trades.c.symbol).distinct())]
            await conn.execute(delete(_candles))
            done = 0
            if progress is not None:
                progress(0, total)
            t = _trades.c
            for symbol in sorted(symbols):
                candles: dict[tuple[str, int], list[int]] = {}
                after = 0
                while True:
                    rows = (
                        await conn.execute(
                            select(t.trade_id, t.price_ticks, t.qty_lots, t.quote_qty, t.time_ms)
                            .where(t.symbol == symbol, t.trade_id > after)
                            .order_by(t.trade_id)
                            .limit(page)
                        )
                    ).all()
                    if not rows:
                        break
                    for _, price, qty, quote, ts in rows:
                        for name, length in INTERVALS.items():
                            key = (name, ts - ts % length)
                            c = candles.get(key)
                            if c is None:
                                candles[key] = [price, price, price, price, qty, quote, 1]
                            else:
                                if price > c[1]:
                                    c[1] = price
                                if price < c[2]:
                                    c[2] = price
                                c[3] = price
                                c[4] += qty
                                c[5] += quote
                                c[6] += 1
                    after = rows[-1][0]
                    done += len(rows)
                    if progress is not None:
                        progress(done, total)
                values: list[dict[str, Any]] = [
                    {
                        "symbol": symbol, "interval": name, "open_time_ms": open_time,
                        "open": c[0], "high": c[1], "low": c[2], "close": c[3],
                        "volume": c[4], "quote_volume": c[5], "trades": c[6],
                        "close_time_ms": open_time + INTERVALS[name] - 1,
                    }
                    for (name, open_time), c in sorted(candles.items())
                ]  # fmt: skip
                for start in range(0, len(values), page):
                    await conn.execute(insert(_candles), values[start : start + page])
                written += len(values)
    finally:
        await engine.dispose()
    return written
