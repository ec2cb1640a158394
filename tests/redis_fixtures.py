"""The test Redis (127.0.0.1:6379, started before every session and CI run) under a fresh namespace.

``redis_namespace_url()`` is a context manager giving ``redis://127.0.0.1:6379/0?prefix=<unique>``
and deleting every key of that namespace afterwards. Without a reachable Redis the test
is skipped with the reason, except in CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import contextlib
import functools
import os
import uuid
from collections.abc import Iterator

import pytest
import redis

HOST, PORT, DB = "127.0.0.1", 6379, 0


@functools.cache
def unreachable() -> str | None:
    """Why the test Redis cannot be used, or None if it answers PING."""
    client = redis.Redis(host=HOST, port=PORT, db=DB, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return None


def require_redis() -> None:
    reason = unreachable()
    if reason is None:
        return
    message = f"no Redis at {HOST}:{PORT} ({reason})"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message}; CI must start one before the tests")
    pytest.skip(f"{message}; start redis-server to run these tests")


@contextlib.contextmanager
def redis_namespace_url() -> Iterator[str]:
    require_redis()
    namespace = f"investo-test-{uuid.uuid4().hex[:12]}"
    try:
        yield f"redis://{HOST}:{PORT}/{DB}?prefix={namespace}"
    finally:
        delete_namespace(namespace)


def delete_namespace(namespace: str) -> None:
    """Delete every key ``<namespace>:*`` of the test Redis."""
    client = redis.Redis(host=HOST, port=PORT, db=DB)
    try:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()
