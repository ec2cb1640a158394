"""Group-commit throughput of the SQLite log: appends per second by batch size.

Run: ``.venv/bin/python bench/log_sqlite.py [--seconds 2] [--dir PATH]``

One appender awaits each append before the next (batch sizes 1, 16, 128), then 50
concurrent appenders with batches of 1 show the worker folding queued appends into
one commit. Every commit is fsynced (WAL, synchronous=FULL), so the figures depend
mostly on the disk under ``--dir`` (default: the system temp dir; a tmpfs there makes
fsync free and the figures meaningless for durability).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from investo.log import Log, open_log

PAYLOAD = b"x" * 120


async def appender(log: Log, batch_size: int, until: float, latencies: list[float]) -> int:
    batch = [PAYLOAD] * batch_size
    appended = 0
    while (start := time.perf_counter()) < until:
        await log.append(batch)
        latencies.append(time.perf_counter() - start)
        appended += batch_size
    return appended


async def measure(path: Path, batch_size: int, appenders: int, seconds: float) -> str:
    async with open_log(str(path)) as log:
        await log.append([PAYLOAD])  # warm up: schema, WAL file, statement cache
        latencies: list[float] = []
        start = time.perf_counter()
        counts = await asyncio.gather(
            *(appender(log, batch_size, start + seconds, latencies) for _ in range(appenders))
        )
        elapsed = time.perf_counter() - start
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)]
    return (
        f"batch {batch_size:>4}  appenders {appenders:>3}  "
        f"{sum(counts) / elapsed:>10,.0f} appends/s  {len(latencies) / elapsed:>8,.0f} append calls/s  "
        f"latency p50 {statistics.median(latencies) * 1e3:6.2f} ms  p99 {p99 * 1e3:6.2f} ms"
    )


async def main(seconds: float, directory: str | None) -> None:
    print(f"SQLite {sqlite3.sqlite_version}, Python {platform.python_version()}, {platform.platform()}")
    print(f"payload {len(PAYLOAD)} bytes, WAL + synchronous=FULL, {seconds:g} s per case")
    with tempfile.TemporaryDirectory(dir=directory, prefix="investo-bench-") as tmp:
        print(f"files in {tmp}")
        cases = [(1, 1), (16, 1), (128, 1), (1, 50)]
        for number, (batch_size, appenders) in enumerate(cases):
            print(await measure(Path(tmp) / f"log{number}.db", batch_size, appenders, seconds))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each case")
    parser.add_argument("--dir", default=None, help="directory for the temporary database files")
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.dir))
