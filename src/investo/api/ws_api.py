"""Binance's WebSocket API at ``/ws-api/v3``: the signed user data stream subscription.

Binance retired the REST listen key for spot user data in favour of this: a client opens
``/ws-api/v3`` and sends a **signed** request, so the user stream needs no unsigned call at
all (ccxt.pro's ``watch_orders`` / ``watch_balance`` / ``watch_my_trades`` do exactly this
for spot markets). Requests are JSON text frames ``{"id", "method", "params"}``, answered
``{"id", "status": 200, "result": …}`` or ``{"id", "status": 4xx, "error": {"code", "msg"}}``:

* ``userDataStream.subscribe.signature``: ``params`` = ``apiKey``, ``timestamp``, optional
  ``recvWindow``, ``signature`` (base64 Ed25519 over the other params sorted by name, as
  ``name=value`` pairs joined by ``&``: Binance's WebSocket API payload). Checked by the same
  verifier as every signed REST call (key, window, signature, replay). Answers
  ``{"subscriptionId": n}``; the user's events then arrive as ``{"subscriptionId": n,
  "event": <executionReport | outboundAccountPosition | balanceUpdate>}``, the very
  payloads of the REST listen key's stream.
* ``userDataStream.unsubscribe`` (optional ``subscriptionId``; all when absent): ends the
  subscription(s), each with a last ``eventStreamTerminated`` event.
* ``session.subscriptions``: ``[{"subscriptionId": n}, …]``; ``ping``: ``{}``; ``time``:
  ``{"serverTime": ms}``.

How events reach a subscription: through the user's listen key (:mod:`investo.marketdata.user`
publishes a user's events only on it), which the subscription creates or reuses and keeps
alive while it lasts; if that key is closed (``DELETE /api/v3/userDataStream``) the
subscription moves to a fresh key at once. Once a second it checks that the API key that
signed it is still registered: a revoked key ends its subscriptions (``eventStreamTerminated``).

Every request counts against the IP's request limit like a REST call (429 / -1003 over it).
Sending goes through the gateway's client output (:mod:`investo.ws.client`), bounded in
unsent bytes: a client that does not read is dropped (1008), as on the market streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any
from urllib.parse import quote

import orjson
from starlette.applications import Starlette
from starlette.websockets import WebSocket, WebSocketDisconnect

from investo.api import errors
from investo.api.nodes import ApiNode, NotCaughtUp
from investo.api.params import MAX_PARAMS
from investo.api.signed import MAX_BODY_BYTES
from investo.security.signing import SigningError
from investo.ws.client import WsClient
from investo.ws.gateway import Connections

PATH = "/ws-api/v3"
METHODS = (
    "userDataStream.subscribe.signature",
    "userDataStream.unsubscribe",
    "session.subscriptions",
    "ping",
    "time",
)
MAX_SUBSCRIPTIONS = 1_000  # active per connection, as Binance
CHECK_SECONDS = 1.0  # how often a subscription re-checks its API key and keeps its listen key alive
_EXPIRED_PREFIX = b'{"e":"listenKeyExpired"'


def _status(error: errors.ApiError) -> int:
    return error.status if 400 <= error.status < 600 else 400


class Subscription:
    """One user data subscription: a hub subscriber on the user's listen key (module docstring)."""

    combined = False  # the hub sends raw payloads; we wrap them ourselves

    def __init__(self, session: Session, subscription_id: int, user: int, api_key: str) -> None:
        self.session = session
        self.id = subscription_id
        self.user = user
        self.api_key = api_key
        self.key = ""
        self._prefix = b'{"subscriptionId":' + str(subscription_id).encode() + b',"event":'

    def attach(self) -> None:
        """Listen on the user's live listen key (created or extended)."""
        key = self.session.node.listen_keys.create(self.user)
        if key != self.key:
            hub = self.session.node.hub
            if self.key:
                hub.unsubscribe(self.key, self)
            hub.subscribe(key, self)
            self.key = key

    def detach(self) -> None:
        if self.key:
            self.session.node.hub.unsubscribe(self.key, self)
            self.key = ""

    def push(self, frame: bytes, payload: bytes) -> None:
        """A message of the user's stream (never blocks or raises: called while publishing)."""
        if payload.startswith(_EXPIRED_PREFIX):  # the listen key was closed: move to a fresh one
            with contextlib.suppress(Exception):
                self.attach()
            return
        self.session.client.send_json(self._prefix + payload + b"}")

    def keep_alive(self) -> bool:
        """Whether the subscription may go on (its API key is still registered); keep its key alive."""
        node = self.session.node
        if not node.knows_key(self.api_key):
            return False
        if not node.listen_keys.keep_alive(self.user, self.key):
            self.attach()
        return True

    def terminate(self) -> None:
        self.detach()
        event = {"e": "eventStreamTerminated", "E": self.session.node.clock_ms()}
        self.session.client.send_json(self._prefix + orjson.dumps(event) + b"}")


class Session:
    """One ``/ws-api/v3`` connection: its subscriptions and its client (bounded output)."""

    def __init__(self, node: ApiNode, client: WsClient, ip: str) -> None:
        self.node = node
        self.client = client
        self.ip = ip
        self.subscriptions: dict[int, Subscription] = {}
        self._ids = itertools.count()

    async def answer(self, text: str) -> bytes:
        """The response to one request frame."""
        request_id: Any = None
        try:
            if len(text) > MAX_BODY_BYTES:
                raise errors.ApiError(-1000, f"Request too large (at most {MAX_BODY_BYTES} bytes).")
            try:
                message = orjson.loads(text)
            except orjson.JSONDecodeError:
                raise errors.illegal_chars("request", "a JSON object: id, method, params") from None
            if not isinstance(message, dict):
                raise errors.illegal_chars("request", "a JSON object: id, method, params")
            request_id = message.get("id")
            if not (request_id is None or isinstance(request_id, int | str)) or isinstance(request_id, bool):
                request_id = None
                raise errors.illegal_chars("id", "an integer, a string or null")
            if self.node.rate_limits:
                self.node.rate_limits.per_ip.hit(self.ip, self.node.clock_ms())
            method = message.get("method")
            if not isinstance(method, str) or not method:
                raise errors.missing("method")
            params = message.get("params", {})
            if not isinstance(params, dict):
                raise errors.illegal_chars("params", "a JSON object")
            if len(params) > MAX_PARAMS:
                raise errors.too_many_params()
            result = await self._call(method.removeprefix("v3/"), params)
            return orjson.dumps({"id": request_id, "status": 200, "result": result})
        except (errors.ApiError, NotCaughtUp) as caught:
            error = caught if isinstance(caught, errors.ApiError) else errors.service_unavailable(str(caught))
            failed = {"code": error.code, "msg": error.msg}
            return orjson.dumps({"id": request_id, "status": _status(error), "error": failed})

    async def _call(self, method: str, params: dict[str, Any]) -> Any:
        if method == "ping":
            return {}
        if method == "time":
            return {"serverTime": self.node.clock_ms()}
        if method == "session.subscriptions":
            return [{"subscriptionId": n} for n in self.subscriptions]
        if method == "userDataStream.subscribe.signature":
            return await self._subscribe(params)
        if method == "userDataStream.unsubscribe":
            return self._unsubscribe(params)
        raise errors.illegal_chars("method", ", ".join(METHODS))

    async def _subscribe(self, params: dict[str, Any]) -> dict[str, int]:
        api_key = params.get("apiKey")
        if not isinstance(api_key, str) or not api_key:
            raise errors.missing("apiKey")
        query = _signed_query(params)
        if not self.node.knows_key(api_key):
            await self.node.fetch_key(api_key)
        try:
            signed = self.node.verifier.verify(api_key, query, "", self.node.clock_ms())
            await self.node.check_replay(api_key, signed)
        except SigningError as error:
            status = 401 if error.code in (-2014, -2015) else 400
            raise errors.ApiError(error.code, error.msg, status) from None
        user = self.node.user_of_key(api_key)
        if any(s.user == user for s in self.subscriptions.values()):
            raise errors.ApiError(-2035, "User Data Stream subscription already active.")
        if len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
            raise errors.ApiError(-1191, f"Too many subscriptions (at most {MAX_SUBSCRIPTIONS}).")
        await self.node.prepare_user_stream(user)  # the stream starts after everything answered
        subscription = Subscription(self, next(self._ids), user, api_key)
        subscription.attach()
        self.subscriptions[subscription.id] = subscription
        return {"subscriptionId": subscription.id}

    def _unsubscribe(self, params: dict[str, Any]) -> dict[str, Any]:
        wanted = params.get("subscriptionId")
        if wanted is None:
            ended = list(self.subscriptions)
        elif isinstance(wanted, int) and not isinstance(wanted, bool) and wanted in self.subscriptions:
            ended = [wanted]
        elif isinstance(wanted, int | str) and not isinstance(wanted, bool):
            raise errors.ApiError(-2036, "User Data Stream subscription not active.")
        else:
            raise errors.illegal_chars("subscriptionId", "an integer")
        for n in ended:
            self.subscriptions.pop(n).terminate()
        return {}

    def check(self) -> None:
        """End subscriptions whose API key was revoked; keep the others' listen keys alive."""
        for n, subscription in list(self.subscriptions.items()):
            if not subscription.keep_alive():
                del self.subscriptions[n]
                subscription.terminate()

    def close(self) -> None:
        for subscription in self.subscriptions.values():
            subscription.detach()
        self.subscriptions.clear()


def _param_text(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str):
        return str(value)
    raise errors.illegal_chars(name, "a string, an integer or a boolean")


def _signed_query(params: dict[str, Any]) -> str:
    """The params as a query string for the REST verifier: sorted by name, percent-encoded.

    The verifier tries the decoded text too, which is Binance's WebSocket API payload
    (``name=value`` pairs, sorted, unencoded); ``signature`` goes last, percent-encoded.
    """
    signature = params.get("signature")
    if not isinstance(signature, str) or not signature:
        raise errors.missing("signature")
    pairs = [
        f"{quote(str(name), safe='')}={quote(_param_text(str(name), value), safe='')}"
        for name, value in sorted(params.items())
        if name != "signature"
    ]
    return "&".join([*pairs, "signature=" + quote(signature, safe="")])


def mount(app: Starlette, node: ApiNode, connections: Connections) -> None:
    """Add ``/ws-api/v3`` to ``app``; its clients are ``connections``' (the market streams')."""

    async def serve(websocket: WebSocket) -> None:
        client = await connections.accept(websocket, combined=False)
        if client is None:
            return
        peer = websocket.client
        session = Session(node, client, peer.host if peer else "unknown")
        tasks = [
            asyncio.ensure_future(_receive(websocket, session)),
            asyncio.ensure_future(client.closed.wait()),
            asyncio.ensure_future(_check(session)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            session.close()
            connections.release(client)

    app.router.add_websocket_route(PATH, serve)


async def _check(session: Session) -> None:
    while True:
        await asyncio.sleep(CHECK_SECONDS)
        session.check()


async def _receive(websocket: WebSocket, session: Session) -> None:
    try:
        while session.client.dropped is None:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                text = (message.get("bytes") or b"").decode("utf-8", "replace")
            session.client.send_json(await session.answer(text))
    except (WebSocketDisconnect, RuntimeError):
        return
