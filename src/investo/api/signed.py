"""Signed requests: from raw HTTP to (user, parameters), with Binance's errors.

The signature is checked over the raw query string and body exactly as they
arrived (see :mod:`investo.security.signing`); only then are the parameters
read. A request that fails here has touched nothing.

Query string, headers and body are read straight from the ASGI scope and ``receive``
(each once per request), not through Starlette's ``Request.headers``/``Request.body``:
on a signed order, those helpers cost more than the parsing they feed. So the body of
a request can be read once only (:func:`read_body`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from investo.api import errors
from investo.api.nodes import ApiNode
from investo.api.params import MAX_PARAMS, Params, parse_query
from investo.security.signing import API_KEY_HEADER, SignedRequest, SigningError

MAX_BODY_BYTES = 16 * 1024
_KEY_ERRORS = (-2014, -2015)
_API_KEY_NAME = API_KEY_HEADER.lower().encode("latin-1")  # as ASGI servers pass header names


@dataclass(frozen=True, slots=True)
class SignedCall:
    user_id: int
    key_id: str
    params: Params
    signed: SignedRequest
    replay_checked: bool = True  # False: the caller checks (ApiNode.submit_signed or check_replay)


async def read_body(request: Request) -> str:
    """The form body as ASCII text; 413 past ``MAX_BODY_BYTES`` (announced or received).

    Read from ASGI ``receive``, once: a second call would wait for a body that never comes.
    """
    length = header(request, b"content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        raise _body_too_large()
    body = await _receive_body(request.receive)
    try:
        return body.decode("ascii")
    except UnicodeDecodeError:
        raise errors.illegal_chars("body", "ASCII, form-urlencoded") from None


async def _receive_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _body_too_large()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _body_too_large() -> errors.ApiError:
    return errors.ApiError(-1000, f"Request body too large (at most {MAX_BODY_BYTES} bytes).", 413)


def header(request: Request, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case), as Starlette's ``request.headers.get``
    would give it, without building a ``Headers`` object."""
    for key, value in request.scope["headers"]:
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None


def raw_query(request: Request) -> str:
    """The query string exactly as sent (what a signature covers); -1100 unless it is UTF-8.

    (Read from the ASGI scope: ``request.url`` would build and parse a whole URL first.)
    """
    try:
        return bytes(request.scope.get("query_string", b"")).decode()
    except UnicodeDecodeError:
        raise errors.illegal_chars("query string", "UTF-8, percent-encoded") from None


async def unsigned_params(request: Request) -> Params:
    """Parameters of a public request (query string and form body)."""
    values = parse_query(raw_query(request))
    if request.method != "GET":
        for name, value in parse_query(await read_body(request)).items():
            if name in values:
                raise errors.duplicate_param(name)
            values[name] = value
    return Params(values)


async def verify(node: ApiNode, request: Request, *, replay_checked_by_submit: bool = False) -> SignedCall:
    """Check the API key and signature of ``request``; return who sent what.

    ``replay_checked_by_submit``: leave the cluster-wide replay check (this node's own guard
    has checked) to the caller, who submits with :meth:`ApiNode.submit_signed`, or calls
    :func:`check_replay` if it ends up submitting nothing.
    """
    body = await read_body(request)
    query = raw_query(request)
    if query.count("&") + body.count("&") > 2 * MAX_PARAMS:
        raise errors.too_many_params()
    key = header(request, _API_KEY_NAME)
    if key and not node.knows_key(key):
        await node.fetch_key(key)  # registered on another gateway of the cluster, or unknown
    try:
        signed = node.verifier.verify(key, query, body, node.clock_ms())
        assert key is not None
        if not replay_checked_by_submit:
            await node.check_replay(key, signed)
    except SigningError as error:
        raise refused(error) from None
    return SignedCall(node.user_of_key(key), key, Params(signed.params), signed, not replay_checked_by_submit)


async def check_replay(node: ApiNode, call: SignedCall) -> None:
    """The cluster-wide replay check ``verify`` left to the caller (nothing if it made it)."""
    if not call.replay_checked:
        try:
            await node.check_replay(call.key_id, call.signed)
        except SigningError as error:
            raise refused(error) from None


def refused(error: SigningError) -> errors.ApiError:
    """The answer to a refused key or signature (401 for a key, else 400)."""
    return errors.ApiError(error.code, error.msg, 401 if error.code in _KEY_ERRORS else 400)


def param_docs(*names: str, signed: bool = False) -> dict[str, Any]:
    """OpenAPI parameter docs for an endpoint that reads its parameters by hand."""
    params = [{"name": n.rstrip("!"), "in": "query", "required": n.endswith("!")} for n in names]
    for p in params:
        p["schema"] = {"type": "string"}
    if signed:
        params += [
            {"name": "timestamp", "in": "query", "required": True, "schema": {"type": "integer"}},
            {"name": "recvWindow", "in": "query", "required": False, "schema": {"type": "integer"}},
            {"name": "signature", "in": "query", "required": True, "schema": {"type": "string"}},
            {"name": API_KEY_HEADER, "in": "header", "required": True, "schema": {"type": "string"}},
        ]
    return {"parameters": params}
