"""The Log seam: append-only logs of bytes with increasing offsets, and snapshots.

Open one by URL with :func:`open_log`; ``base.py`` states what every implementation
guarantees.
"""

from investo.log.base import (
    DEFAULT_KEEP_SNAPSHOTS,
    Entry,
    Log,
    LogClosedError,
    LogError,
    LogTrimmedError,
)
from investo.log.factory import SUPPORTED_URLS, open_log
from investo.log.memory import MemoryLog
from investo.log.redis import RedisLog
from investo.log.sqlite import SqliteLog

__all__ = [
    "DEFAULT_KEEP_SNAPSHOTS",
    "SUPPORTED_URLS",
    "Entry",
    "Log",
    "LogClosedError",
    "LogError",
    "LogTrimmedError",
    "MemoryLog",
    "RedisLog",
    "SqliteLog",
    "open_log",
]
