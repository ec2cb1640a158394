"""The Log seam: an append-only sequence of opaque payloads, and snapshots beside it.

Invariants (every implementation, checked by ``tests/integration/test_log.py``)
-------------------------------------------------------------------------------
* Offsets are assigned by the log: integers starting at 1, one per payload, each
  exactly one more than the previous. A log never skips or reuses an offset, not after
  a trim, not after trimming everything, not after reopening.
* ``append`` is atomic: a batch gets consecutive offsets and becomes visible all at
  once, or the call raises and none of it is stored. A durable log returns only after
  the batch survives a crash of the process or of the machine (acknowledge after
  durability). Concurrent appends from many coroutines serialise: batches never
  interleave. Cancelling an append does not withdraw it: the batch may still be stored,
  so a cancelled or failed append means "status unknown", never "not appended".
* The log holds one contiguous range ``first_offset() .. last_offset()``. ``trim`` drops
  a prefix of it, and only ever behind a snapshot. When the log holds nothing,
  ``first_offset() == last_offset() + 1`` (the next offset to be assigned).
* ``read(after, limit)`` returns entries in offset order with no gap. A reader whose
  position has been trimmed away gets :class:`LogTrimmedError` instead of silently
  skipping entries: it must load a snapshot (at least ``first_offset() - 1``) first.
* Snapshots are ``(offset, data)``: ``data`` is the state after applying every entry
  up to and including ``offset``. Only the latest ``keep_snapshots`` (by offset) are
  kept; ``latest_snapshot`` is the one with the highest offset.

Validation happens here, once, so every implementation rejects the same calls with the
same exceptions: programming errors raise ``TypeError`` / ``ValueError``; storage
failures raise :class:`LogError`; any call after ``close`` raises
:class:`LogClosedError`.

Costs depend on the implementation; see ``memory.py``, ``sqlite.py`` and ``redis.py``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from types import TracebackType
from typing import Self

DEFAULT_KEEP_SNAPSHOTS = 3

Entry = tuple[int, bytes]
"""``(offset, payload)``, as returned by :meth:`Log.read`."""


class LogError(Exception):
    """The log's storage failed or refused the operation."""


class LogClosedError(LogError):
    """The log was used after :meth:`Log.close`."""


class LogTrimmedError(LogError):
    """A read started at a position the log has trimmed away."""

    def __init__(self, after: int, first_offset: int) -> None:
        super().__init__(
            f"entries after offset {after} have been trimmed: the log now starts at {first_offset}; "
            f"load a snapshot at offset >= {first_offset - 1} and read from there"
        )
        self.after = after
        self.first_offset = first_offset


class Log(abc.ABC):
    """An append-only log of ``bytes`` with increasing offsets; use as ``async with``.

    Subclasses implement the underscored hooks; the public methods validate arguments
    and the open state, then delegate.
    """

    def __init__(self, *, keep_snapshots: int = DEFAULT_KEEP_SNAPSHOTS) -> None:
        if keep_snapshots < 1:
            raise ValueError(f"keep_snapshots must be at least 1, got {keep_snapshots}")
        self._keep_snapshots = keep_snapshots
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def append(self, payloads: Sequence[bytes]) -> list[int]:
        """Append a batch atomically (and durably, if the log is); return its offsets."""
        self._check_open()
        batch = _checked_payloads(payloads)
        if not batch:
            return []
        first = await self._append(batch)
        return list(range(first, first + len(batch)))

    async def read(self, after: int, limit: int) -> list[Entry]:
        """Up to ``limit`` entries with offset > ``after``, in order.

        Raises :class:`LogTrimmedError` if offset ``after + 1`` has been trimmed away.
        Reading past the end returns an empty list.
        """
        self._check_open()
        _check_offset("after", after)
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        first, entries = await self._read(after, limit)
        if after + 1 < first:
            raise LogTrimmedError(after, first)
        return entries

    async def last_offset(self) -> int:
        """The highest offset ever assigned; 0 for a log that never held anything."""
        self._check_open()
        return await self._last_offset()

    async def first_offset(self) -> int:
        """The oldest offset still held, or ``last_offset() + 1`` when the log holds none."""
        self._check_open()
        return await self._first_offset()

    async def trim(self, before: int) -> None:
        """Drop every entry with offset < ``before``; call it only behind a snapshot.

        ``before`` may be at most ``last_offset() + 1`` (drop everything); trimming at or
        below ``first_offset()`` does nothing.
        """
        self._check_open()
        _check_offset("before", before)
        await self._trim(before)

    async def save_snapshot(self, offset: int, data: bytes) -> None:
        """Store the state as of ``offset`` (0 .. ``last_offset()``); keep only the latest few."""
        self._check_open()
        _check_offset("offset", offset)
        if not isinstance(data, bytes):
            raise TypeError(f"snapshot data must be bytes, got {type(data).__name__}")
        await self._save_snapshot(offset, data)

    async def latest_snapshot(self) -> tuple[int, bytes] | None:
        """The snapshot with the highest offset, or None if there is none."""
        self._check_open()
        return await self._latest_snapshot()

    async def close(self) -> None:
        """Finish pending operations and release the storage. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError(f"{self!r} is closed")

    # Hooks. Arguments are already validated; each hook must be atomic on its own.

    @abc.abstractmethod
    async def _append(self, batch: list[bytes]) -> int:
        """Store a non-empty batch at consecutive offsets; return the first one."""

    @abc.abstractmethod
    async def _read(self, after: int, limit: int) -> tuple[int, list[Entry]]:
        """``(first_offset, entries)``, both read at the same instant."""

    @abc.abstractmethod
    async def _last_offset(self) -> int: ...

    @abc.abstractmethod
    async def _first_offset(self) -> int: ...

    @abc.abstractmethod
    async def _trim(self, before: int) -> None:
        """Raise ValueError (see :func:`check_trim`) when ``before`` is past the end."""

    @abc.abstractmethod
    async def _save_snapshot(self, offset: int, data: bytes) -> None:
        """Raise ValueError (see :func:`check_snapshot_offset`) for an offset past the end."""

    @abc.abstractmethod
    async def _latest_snapshot(self) -> tuple[int, bytes] | None: ...

    @abc.abstractmethod
    async def _close(self) -> None: ...


def check_trim(before: int, last_offset: int) -> None:
    """Shared by implementations, called where ``last_offset`` is read atomically."""
    if before > last_offset + 1:
        raise ValueError(f"cannot trim before {before}: the last offset is {last_offset}")


def check_snapshot_offset(offset: int, last_offset: int) -> None:
    """Shared by implementations, called where ``last_offset`` is read atomically."""
    if offset > last_offset:
        raise ValueError(f"cannot snapshot at offset {offset}: the last offset is {last_offset}")


def _check_offset(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value}")


def _checked_payloads(payloads: Sequence[bytes]) -> list[bytes]:
    if isinstance(payloads, bytes | bytearray | memoryview | str):
        raise TypeError("append takes a sequence of payloads, not a single bytes or str object")
    batch = list(payloads)
    for index, payload in enumerate(batch):
        if not isinstance(payload, bytes):
            raise TypeError(f"payload {index} must be bytes, got {type(payload).__name__}")
    return batch
