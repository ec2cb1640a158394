"""The WebSocket gateway: Binance's market streams on the HTTP app.

Routes (added by :func:`mount_ws`):

* ``/ws/<stream>``: a raw stream; messages are the payloads themselves. Any other
  path under ``/ws`` (``/ws``, ``/ws/0`` as ccxt.pro uses) connects with no stream.
* ``/stream?streams=a/b/c``: combined streams; each message is
  ``{"stream": name, "data": payload}``.

On either, a client may send Binance's control messages: ``SUBSCRIBE`` /
``UNSUBSCRIBE`` (``params``: stream names), ``LIST_SUBSCRIPTIONS``,
``SET_PROPERTY`` / ``GET_PROPERTY`` (``combined``), answered ``{"result": …,
"id": …}``; a bad request is answered ``{"error": {"code": 2, "msg": "Invalid
request: …"}, "id": …}`` (code 3 for invalid JSON, code 0 for an unknown property).

Slow clients
------------
Each client has a bounded queue (``queue_limit`` messages) and its own sender task.
Publishing (inside the engine host's listener call) only does ``put_nowait``; a
client whose queue is full is dropped on the spot: unsubscribed from everything,
its sender cancelled, and closed with code 1008 and a reason. So a client that
reads slowly, or not at all, never delays the engine or the other clients; it
loses its connection and must resubscribe (and resync its book from a snapshot).

Liveness: the server (uvicorn, ``ws_ping_interval``/``ws_ping_timeout``, 20 s each in
``investo up``) sends ping frames and drops clients that stop answering them.

Costs: a published message costs each subscriber one ``put_nowait``; the text was
serialised once for all of them (:mod:`investo.marketdata.hub`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.websockets import WebSocket, WebSocketDisconnect

from investo.marketdata.hub import Hub

log = logging.getLogger("investo.ws")

MAX_STREAMS = 1024  # per connection, as Binance
CLOSE_POLICY = 1008
CLOSE_TIMEOUT = 2.0
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")


class WsClient:
    """One connection: its subscriptions, bounded send queue and sender task."""

    def __init__(self, websocket: WebSocket, hub: Hub, queue_limit: int, combined: bool) -> None:
        self.websocket = websocket
        self.hub = hub
        self.combined = combined
        self.streams: dict[str, None] = {}  # in subscription order
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_limit)
        self.dropped: str | None = None  # the reason, once dropped
        self.closed = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ sending

    def push(self, text: str) -> None:
        """Queue a message; drop the client if its queue is full. Never blocks."""
        if self.dropped is not None:
            return
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.drop(f"client too slow: more than {self.queue.maxsize} messages queued")

    def start(self) -> None:
        self._sender = asyncio.create_task(self._send_loop(), name="ws-sender")

    async def _send_loop(self) -> None:
        queue, send = self.queue, self.websocket.send_text
        try:
            while True:
                await send(await queue.get())
        except asyncio.CancelledError:
            raise
        except Exception:  # the connection is gone: the receive loop will see it
            self.closed.set()

    def drop(self, reason: str) -> None:
        """Stop sending, forget every subscription and close with 1008 (from any task)."""
        if self.dropped is not None:
            return
        self.dropped = reason
        self.hub.unsubscribe_all(self, self.streams)
        if self._sender is not None:
            self._sender.cancel()
        asyncio.get_running_loop().create_task(self._close(reason))

    async def _close(self, reason: str) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.websocket.close(CLOSE_POLICY, reason[:120]), CLOSE_TIMEOUT)
        self.closed.set()

    async def finish(self) -> None:
        self.hub.unsubscribe_all(self, self.streams)
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(BaseException):
                await self._sender

    # ------------------------------------------------------------------ subscriptions

    def subscribe(self, names: list[str]) -> None:
        for name in names:
            if name not in self.streams:
                self.streams[name] = None
                self.hub.subscribe(name, self)

    def unsubscribe(self, names: list[str]) -> None:
        for name in names:
            if name in self.streams:
                del self.streams[name]
                self.hub.unsubscribe(name, self)


class ControlError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def _invalid(msg: str) -> ControlError:
    return ControlError(2, f"Invalid request: {msg}")


def handle_control(client: WsClient, text: str, known: Collection[str]) -> bytes:
    """Apply one control message; return the reply (``result`` or ``error``)."""
    request_id: Any = None
    try:
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError as error:
            raise ControlError(3, f"Invalid JSON: {error}") from None
        if not isinstance(message, dict):
            raise _invalid("expected a JSON object")
        request_id = message.get("id")
        if request_id is not None and not (
            isinstance(request_id, int | str) and not isinstance(request_id, bool)
        ):
            request_id = None
            raise _invalid("request ID must be an unsigned integer or a string")
        if isinstance(request_id, int) and request_id < 0:
            request_id = None
            raise _invalid("request ID must be an unsigned integer or a string")
        method = message.get("method")
        if method not in METHODS:
            raise _invalid(f"unknown method {method!r}, expected one of {', '.join(METHODS)}")
        params = message.get("params")
        result: Any = None
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            names = _stream_params(params, known)
            if method == "SUBSCRIBE":
                if len(set(client.streams) | set(names)) > MAX_STREAMS:
                    raise _invalid(f"too many streams (at most {MAX_STREAMS} per connection)")
                client.subscribe(names)
            else:
                client.unsubscribe(names)
        elif method == "LIST_SUBSCRIPTIONS":
            result = list(client.streams)
        elif method == "SET_PROPERTY":
            if not (isinstance(params, list) and len(params) == 2 and isinstance(params[0], str)):
                raise _invalid('params must be ["combined", true|false]')
            if params[0] != "combined":
                raise ControlError(0, "Unknown property")
            if not isinstance(params[1], bool):
                raise ControlError(1, "Invalid value type: expected Boolean")
            client.combined = params[1]
        else:  # GET_PROPERTY
            if not (isinstance(params, list) and len(params) == 1 and isinstance(params[0], str)):
                raise _invalid('params must be ["combined"]')
            if params[0] != "combined":
                raise ControlError(0, "Unknown property")
            result = client.combined
        return orjson.dumps({"result": result, "id": request_id})
    except ControlError as error:
        return orjson.dumps({"error": {"code": error.code, "msg": error.msg}, "id": request_id})


def _stream_params(params: Any, known: Collection[str]) -> list[str]:
    if not isinstance(params, list) or not params or not all(isinstance(p, str) for p in params):
        raise _invalid("params must be a non-empty array of stream names")
    unknown = [p for p in params if p not in known]
    if unknown:
        raise _invalid(f"unknown stream {unknown[0]!r}")
    return list(params)


def mount_ws(
    app: Starlette,
    hub: Hub,
    streams: Callable[[], Collection[str]],
    *,
    queue_limit: int = 1_000,
    on_count: Callable[[int], None] | None = None,
) -> None:
    """Add ``/ws``, ``/ws/<anything>`` and ``/stream`` to ``app`` (see the module docstring).

    ``streams()`` gives the valid stream names; ``on_count`` is told the number of
    open clients whenever it changes (the ``investo_websocket_clients`` gauge).
    """
    clients: set[WsClient] = set()

    async def serve(websocket: WebSocket, initial: list[str], combined: bool) -> None:
        known = streams()
        await websocket.accept()
        client = WsClient(websocket, hub, queue_limit, combined)
        clients.add(client)
        if on_count is not None:
            on_count(len(clients))
        try:
            client.subscribe([s for s in initial if s in known][:MAX_STREAMS])
            client.start()
            receiver = asyncio.ensure_future(_receive(client, known))
            closed = asyncio.ensure_future(client.closed.wait())
            _, pending = await asyncio.wait({receiver, closed}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        finally:
            await client.finish()
            clients.discard(client)
            if on_count is not None:
                on_count(len(clients))
            if client.dropped is not None:
                log.info("dropped a websocket client: %s", client.dropped)

    async def raw(websocket: WebSocket) -> None:
        path: str = websocket.scope["path"]
        rest = path[len("/ws") :].strip("/")
        await serve(websocket, [rest] if rest else [], combined=False)

    async def combined(websocket: WebSocket) -> None:
        names = [s for s in websocket.query_params.get("streams", "").split("/") if s]
        await serve(websocket, names, combined=True)

    app.router.add_websocket_route("/ws", raw)
    app.router.add_websocket_route("/ws/{rest:path}", raw)
    app.router.add_websocket_route("/stream", combined)
    app.state.ws_clients = clients


async def _receive(client: WsClient, known: Collection[str]) -> None:
    websocket = client.websocket
    try:
        while client.dropped is None:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                data = message.get("bytes") or b""
                text = data.decode("utf-8", "replace")
            client.push(handle_control(client, text, known).decode())
    except (WebSocketDisconnect, RuntimeError):
        return
