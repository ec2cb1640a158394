"""The user data stream's listen keys: ``POST``/``PUT``/``DELETE /api/v3/userDataStream``.

Binance needs only the API key header here; Investo is zero-trust and requires a
valid signature as on every private call. ``POST`` returns the caller's live key
(creating it, or extending the one it has); ``PUT`` extends it for 60 minutes;
``DELETE`` closes it. A key that is not live or belongs to somebody else is
answered ``-1125 This listenKey does not exist.`` (see :mod:`investo.marketdata.user`).
A new stream carries only what happens after it was asked for: in a cluster, ``POST``
first waits until the gateway's replica of the caller's accounts shard holds every
command answered before it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from investo.api import errors
from investo.api.nodes import ApiNode
from investo.api.signed import param_docs, verify

PATH = "/api/v3/userDataStream"


def _no_such_key() -> errors.ApiError:
    return errors.ApiError(-1125, "This listenKey does not exist.")


def router(node: ApiNode) -> APIRouter:
    api = APIRouter(tags=["user data stream (signed)"])

    @api.post(PATH, openapi_extra=param_docs(signed=True))
    async def create(request: Request) -> Any:
        """Start (or extend) your user data stream; connect to ``/ws/<listenKey>``."""
        call = await verify(node, request)
        # The stream starts after everything already answered: in a cluster, wait until the
        # gateway's replicas hold it (an earlier deposit must not show up on the new stream as
        # if it had just happened).
        await node.prepare_user_stream(call.user_id)
        return {"listenKey": node.listen_keys.create(call.user_id)}

    @api.put(PATH, openapi_extra=param_docs("listenKey!", signed=True))
    async def keep_alive(request: Request) -> Any:
        """Keep a listen key alive for another 60 minutes."""
        call = await verify(node, request)
        if not node.listen_keys.keep_alive(call.user_id, call.params.text("listenKey")):
            raise _no_such_key()
        return {}

    @api.delete(PATH, openapi_extra=param_docs("listenKey!", signed=True))
    async def close(request: Request) -> Any:
        """Close a listen key: its stream gets ``listenKeyExpired`` and nothing more."""
        call = await verify(node, request)
        if not node.listen_keys.close(call.user_id, call.params.text("listenKey")):
            raise _no_such_key()
        return {}

    return api
