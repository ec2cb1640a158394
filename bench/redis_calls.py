"""What one Redis round trip costs the calling process: redis-py's asyncio client against bare sockets.

Run: ``.venv/bin/python bench/redis_calls.py [--url redis://127.0.0.1:6379/0] [--calls 5000]``

The cluster's processes wake per small batch and make one or two Redis calls each time
(an engine: ``XREAD`` and its publish script; a gateway: its append script, its reply
channel), so at a few thousand orders per second their CPU goes mostly to round trips, not
to the engines. This prints the client CPU (user + system, from ``getrusage``) and the wall
time per call, one call in flight at a time, on uvloop as the services run, for:

* ``redis-py GET`` / ``EVALSHA`` / ``XREAD``: ``redis.asyncio.Redis`` as the services use it
  (connection pool, retries, health checks);
* ``redis-py connection, packed once``: one ``Connection`` with the command packed ahead and
  no health check (the least redis-py does per call);
* ``bare asyncio stream``: the same ``GET`` written and read with ``asyncio.open_connection``
  (the floor: the event loop and the system calls).

The gap between the first lines and the last is what a leaner client for the hot calls could
save per round trip. It writes the keys ``investo-bench-redis-calls:*`` and deletes them.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import uvloop
from redis.asyncio.connection import Connection

PREFIX = "investo-bench-redis-calls"
Call = Callable[[], Awaitable[object]]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(label: str, call: Call, calls: int) -> None:
    for _ in range(min(calls, 200)):  # warm up
        await call()
    cpu, wall = _cpu_seconds(), time.perf_counter()
    for _ in range(calls):
        await call()
    cpu, wall = _cpu_seconds() - cpu, time.perf_counter() - wall
    print(f"{label:<36} {cpu / calls * 1e6:7.1f} us CPU  {wall / calls * 1e6:7.1f} us wall per call")


async def main(url: str, calls: int) -> None:
    key, stream = f"{PREFIX}:key", f"{PREFIX}:stream"
    client = aioredis.Redis.from_url(url)
    try:
        await client.set(key, b"1")
        script = client.register_script("return 1")
        payload = b"p" * 150
        await _measure("redis-py GET", lambda: client.get(key), calls)
        await _measure("redis-py EVALSHA (a 150-byte arg)", lambda: script(keys=[key], args=[payload]), calls)
        await _measure("redis-py XREAD (empty)", lambda: client.xread({stream: "0-0"}, count=1), calls)

        parts = urlsplit(url)
        connection = Connection(host=parts.hostname or "127.0.0.1", port=parts.port or 6379)
        await connection.connect()  # type: ignore[no-untyped-call]
        packed = connection.pack_command("GET", key)

        async def packed_get() -> object:
            await connection.send_packed_command(packed, check_health=False)
            return await connection.read_response()

        await _measure("redis-py connection, packed once", packed_get, calls)
        await connection.disconnect()

        reader, writer = await asyncio.open_connection(parts.hostname or "127.0.0.1", parts.port or 6379)
        raw = f"*2\r\n$3\r\nGET\r\n${len(key)}\r\n{key}\r\n".encode()

        async def bare_get() -> object:
            writer.write(raw)
            await reader.readuntil(b"\r\n")  # $1
            return await reader.readuntil(b"\r\n")  # the value

        await _measure("bare asyncio stream GET", bare_get, calls)
        writer.close()
        await writer.wait_closed()
    finally:
        await client.delete(key, stream)
        await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--calls", type=int, default=5000)
    options = parser.parse_args()
    uvloop.run(main(options.url, options.calls))
