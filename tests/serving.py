"""Loopback helpers for tests: a free port, and an ASGI app served on one in the test's own loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from investo.ws.protocol import UVICORN_OPTIONS


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def served(
    app: Any, ws_options: dict[str, Any] = UVICORN_OPTIONS, **options: Any
) -> AsyncIterator[int]:
    """Serve ``app`` with uvicorn until the block ends; yields the port.

    ``ws_options``: Investo's WebSocket protocol by default (``{}``: uvicorn's own)."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **ws_options, **options)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # it failed to start: raise why
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
