"""Acknowledged appends to the SQLite log survive SIGKILL.

This file is also the child: run as a script, it appends batches to the log from
several concurrent producers (so group commits are in flight) and prints one line per
acknowledged batch. The test kills it with SIGKILL mid-stream, three times over on
the same file, then reopens the file and checks that every acknowledged batch is
there with its exact payloads, every stored batch is whole, nothing is duplicated,
and offsets are contiguous from 1.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path

from investo.log import open_log

PRODUCERS = 4
ROUNDS = 3
PAYLOAD_SIZE = 600  # large enough that the WAL passes a checkpoint during the test


def batch(rnd: int, producer: int, seq: int) -> list[bytes]:
    """The payloads of one batch, a pure function of its key; 1 to 40 payloads."""
    size = 1 + (seq * 7 + producer * 13 + rnd) % 40
    return [f"r{rnd}:p{producer}:s{seq}:{i}/{size}:".encode().ljust(PAYLOAD_SIZE, b".") for i in range(size)]


def parse(payload: bytes) -> tuple[tuple[int, int, int], int]:
    rnd, producer, seq, position, _ = payload.decode().split(":", 4)
    return (int(rnd[1:]), int(producer[1:]), int(seq[1:])), int(position.split("/")[0])


# --------------------------------------------------------------------------------
# The child
# --------------------------------------------------------------------------------


async def child(path: str, rnd: int) -> None:
    log = open_log(path)

    async def produce(producer: int) -> None:
        for seq in range(1_000_000):
            offsets = await log.append(batch(rnd, producer, seq))
            print(rnd, producer, seq, offsets[0], offsets[-1], flush=True)

    await asyncio.gather(*(produce(p) for p in range(PRODUCERS)))


# --------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------

Ack = tuple[tuple[int, int, int], int, int]  # (round, producer, seq), first offset, last offset


def run_and_kill(path: Path, rnd: int, acks_before_kill: int) -> list[Ack]:
    proc = subprocess.Popen(
        [sys.executable, __file__, str(path), str(rnd)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    watchdog = threading.Timer(20, proc.kill)
    watchdog.start()
    try:
        lines = [proc.stdout.readline() for _ in range(acks_before_kill)]
        proc.kill()  # SIGKILL on POSIX: no cleanup, no close, mid-commit
        lines += proc.stdout.readlines()  # acknowledged before it died: they count too
        proc.wait()
    finally:
        watchdog.cancel()
    stderr = proc.stderr.read()
    complete = [line for line in lines if line.endswith("\n")]
    assert len(complete) >= acks_before_kill, f"the child stopped early:\n{stderr}"
    acks = []
    for line in complete:
        r, p, s, first, last = map(int, line.split())
        acks.append(((r, p, s), first, last))
    return acks


async def stored_entries(path: Path) -> list[tuple[int, bytes]]:
    async with open_log(str(path)) as log:
        entries = await log.read(0, 10_000_000)
        assert await log.last_offset() == len(entries)
        return entries


def test_acknowledged_appends_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    acks: list[Ack] = []
    for rnd in range(ROUNDS):
        acks += run_and_kill(path, rnd, acks_before_kill=60 + 90 * rnd)

    entries = asyncio.run(stored_entries(path))
    assert [offset for offset, _ in entries] == list(range(1, len(entries) + 1))

    # The log is a sequence of whole batches, each stored once.
    where: dict[tuple[int, int, int], tuple[int, int]] = {}
    index = 0
    while index < len(entries):
        key, position = parse(entries[index][1])
        assert position == 0, f"offset {index + 1} starts in the middle of batch {key}"
        payloads = batch(*key)
        stored = [payload for _, payload in entries[index : index + len(payloads)]]
        assert stored == payloads, f"batch {key} at offset {index + 1} is torn or altered"
        assert key not in where, f"batch {key} is stored twice"
        where[key] = (index + 1, index + len(payloads))
        index += len(payloads)

    # Every acknowledged batch is there, at the offsets its append returned.
    for key, first, last in acks:
        assert where.get(key) == (first, last), f"acknowledged batch {key} at {first}..{last} is lost"

    # A producer awaits each append before the next, so its stored batches are 0..n.
    seqs: dict[tuple[int, int], list[int]] = defaultdict(list)
    for rnd, producer, seq in where:
        seqs[rnd, producer].append(seq)
    for found in seqs.values():
        assert sorted(found) == list(range(len(found)))
    assert {rnd for rnd, _ in seqs} == set(range(ROUNDS))


if __name__ == "__main__":
    asyncio.run(child(sys.argv[1], int(sys.argv[2])))
