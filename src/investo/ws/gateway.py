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

Output and slow clients
-----------------------
Stream messages reach a client as frames built once for every subscriber
(:mod:`investo.marketdata.hub`) and are written straight to its connection's
transport, all of one event-loop pass in one write (:mod:`investo.ws.client`). A
client whose connection holds more than ``buffer_limit`` unsent bytes is dropped on
the spot: unsubscribed from everything and closed with code 1008 and a reason. So a
client that reads slowly, or not at all, never delays the engine or the other
clients; it loses its connection and must resubscribe (and resync its book from a
snapshot). Replies to control messages take the same path, after what was sent before.

The direct path needs uvicorn to run :class:`investo.ws.protocol.FanoutProtocol`
(``uvicorn.Config(app, **UVICORN_OPTIONS)``, as ``investo up`` does); under any other
server a connection is accepted and closed at once with 1011 and a reason.

Liveness: the server (uvicorn, ``ws_ping_interval``/``ws_ping_timeout``, 20 s each in
``investo up``) sends ping frames and drops clients that stop answering them.

Costs: a published message costs each subscriber one ``list.append``; the text was
serialised and framed once for all of them; each client with messages costs one
write per loop pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.websockets import WebSocket, WebSocketDisconnect

from investo.marketdata.hub import Hub
from investo.ws.client import CLOSE_SERVER_ERROR, Flusher, WsClient
from investo.ws.protocol import EXTENSION, FrameSink

log = logging.getLogger("investo.ws")

MAX_STREAMS = 1024  # per connection, as Binance
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
NO_DIRECT_PATH = "server misconfigured: run uvicorn with investo.ws.protocol.UVICORN_OPTIONS"


@dataclass
class Connections:
    """The gateway's open clients and what they share: the hub, the flusher, the bound."""

    hub: Hub
    buffer_limit: int
    on_count: Callable[[int], None] | None = None
    flusher: Flusher = field(default_factory=Flusher)
    clients: set[WsClient] = field(default_factory=set)

    async def accept(self, websocket: WebSocket, combined: bool) -> WsClient | None:
        """Complete the handshake and register a client; None (closed 1011) without the direct path."""
        sink: FrameSink | None = websocket.scope.get("extensions", {}).get(EXTENSION)
        await websocket.accept()
        if sink is None:
            log.error("websocket refused: %s", NO_DIRECT_PATH)
            await websocket.close(CLOSE_SERVER_ERROR, NO_DIRECT_PATH[:120])
            return None
        client = WsClient(sink, self.hub, self.flusher, self.buffer_limit, combined)
        self.clients.add(client)
        self._counted()
        return client

    def release(self, client: WsClient) -> None:
        client.finish()
        self.clients.discard(client)
        self._counted()
        if client.dropped is not None:
            log.info("dropped a websocket client: %s", client.dropped)

    def _counted(self) -> None:
        if self.on_count is not None:
            self.on_count(len(self.clients))


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
    buffer_limit: int = 1 << 20,
    on_count: Callable[[int], None] | None = None,
) -> Connections:
    """Add ``/ws``, ``/ws/<anything>`` and ``/stream`` to ``app`` (see the module docstring).

    ``streams()`` gives the valid stream names; ``buffer_limit`` is the most bytes a
    client's connection may hold unsent before it is dropped; ``on_count`` is told the
    number of open clients whenever it changes (the ``investo_websocket_clients``
    gauge). Returns the gateway's :class:`Connections` (also ``app.state.ws``).
    """
    connections = Connections(hub, buffer_limit, on_count)

    async def serve(websocket: WebSocket, initial: list[str], combined: bool) -> None:
        known = streams()
        client = await connections.accept(websocket, combined)
        if client is None:
            return
        try:
            client.subscribe([s for s in initial if s in known][:MAX_STREAMS])
            receiver = asyncio.ensure_future(_receive(websocket, client, known))
            closed = asyncio.ensure_future(client.closed.wait())
            _, pending = await asyncio.wait({receiver, closed}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        finally:
            connections.release(client)

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
    app.state.ws = connections
    app.state.ws_clients = connections.clients
    return connections


async def _receive(websocket: WebSocket, client: WsClient, known: Collection[str]) -> None:
    try:
        while client.dropped is None:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                data = message.get("bytes") or b""
                text = data.decode("utf-8", "replace")
            client.send_json(handle_control(client, text, known))
    except (WebSocketDisconnect, RuntimeError):
        return
