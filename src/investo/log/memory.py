"""The in-memory Log: the twin of the durable logs, for unit tests (``memory://``).

Invariants
----------
* The same semantics as every Log (see ``base.py``), minus durability: everything is
  gone when the object is. Each ``open_log("memory://")`` is a fresh, empty log.
* The entries are one Python list of payloads, ``_payloads[i]`` holding offset
  ``_first + i``; the log is contiguous by construction.
* Every hook runs without awaiting, so on one event loop each operation is atomic and
  concurrent appends serialise in the order they were called.

Costs
-----
* ``append``: O(k) for k payloads. ``read``: O(k) for k entries returned.
* ``last_offset`` / ``first_offset``: O(1).
* ``trim``: O(n) for the n entries kept (the list shifts down).
* ``save_snapshot`` / ``latest_snapshot``: O(s log s) / O(s) for the s snapshots kept
  (a handful).
"""

from __future__ import annotations

from investo.log.base import DEFAULT_KEEP_SNAPSHOTS, Entry, Log, check_snapshot_offset, check_trim


class MemoryLog(Log):
    def __init__(self, *, keep_snapshots: int = DEFAULT_KEEP_SNAPSHOTS) -> None:
        super().__init__(keep_snapshots=keep_snapshots)
        self._first = 1
        self._payloads: list[bytes] = []
        self._snapshots: dict[int, bytes] = {}

    def __repr__(self) -> str:
        return f"<MemoryLog {self._first}..{self._last()}>"

    def _last(self) -> int:
        return self._first + len(self._payloads) - 1

    async def _append(self, batch: list[bytes]) -> int:
        first = self._last() + 1
        self._payloads.extend(batch)
        return first

    async def _read(self, after: int, limit: int) -> tuple[int, list[Entry]]:
        start = max(after + 1, self._first)
        index = start - self._first
        chunk = self._payloads[index : index + limit]
        return self._first, list(zip(range(start, start + len(chunk)), chunk, strict=True))

    async def _last_offset(self) -> int:
        return self._last()

    async def _first_offset(self) -> int:
        return self._first

    async def _trim(self, before: int) -> None:
        check_trim(before, self._last())
        if before > self._first:
            del self._payloads[: before - self._first]
            self._first = before

    async def _save_snapshot(self, offset: int, data: bytes) -> None:
        check_snapshot_offset(offset, self._last())
        self._snapshots[offset] = data
        for old in sorted(self._snapshots, reverse=True)[self._keep_snapshots :]:
            del self._snapshots[old]

    async def _latest_snapshot(self) -> tuple[int, bytes] | None:
        if not self._snapshots:
            return None
        offset = max(self._snapshots)
        return offset, self._snapshots[offset]

    async def _close(self) -> None:
        self._payloads = []
        self._snapshots = {}
