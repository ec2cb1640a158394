"""Investo's own endpoints, for what Binance does on its website: accounts, keys, demo funds.

* ``POST /api/v1/investo/users`` — create an account by registering an Ed25519
  public key. The request is signed with the key being registered (proof that
  the caller holds the private key); the answer carries the API key id.
* ``POST /api/v1/investo/demo-funds`` (signed) — deposit demo funds, up to a
  daily limit per asset.
* ``GET|POST|DELETE /api/v1/investo/keys`` (signed) — list, add, revoke keys.
* ``GET /api/v1/investo/state`` — the engine's log offset and state hash.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from investo.api import errors, units
from investo.api.nodes import ApiNode
from investo.api.params import Params, amount, parse_query
from investo.api.signed import param_docs, raw_query, read_body, verify
from investo.api.trading import submit
from investo.core.messages import Deposit, Deposited
from investo.security.signing import SigningError, load_public_key, public_key_to_pem, verify_request
from investo.store import queries

DAY_MS = 86_400_000
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def _pem_of(text: str) -> str:
    """A public key given as PEM or raw base64, as PEM; clear errors otherwise (HMAC included)."""
    try:
        return public_key_to_pem(load_public_key(text))
    except SigningError as error:
        raise errors.ApiError(error.code, error.msg) from None
    except ValueError as error:
        raise errors.invalid_param("publicKey", str(error)) from None


def _name(text: str) -> str:
    if not 1 <= len(text) <= 64 or not set(text) <= _NAME_CHARS:
        raise errors.illegal_chars("name", "1-64 of A-Z a-z 0-9 _ - .")
    return text


def router(node: ApiNode) -> APIRouter:
    api = APIRouter(tags=["investo accounts and keys"])

    @api.post(
        "/api/v1/investo/users",
        openapi_extra=param_docs("name!", "publicKey!", "timestamp!", "signature!"),
    )
    async def create_user(request: Request) -> Any:
        """Create an account for an Ed25519 public key; the request is signed by that key."""
        body = await read_body(request)
        raw = Params({**parse_query(raw_query(request)), **parse_query(body)})
        name = _name(raw.text("name"))
        pem = _pem_of(raw.text("publicKey"))
        try:
            verify_request(raw_query(request), body, load_public_key(pem), node.clock_ms())
        except SigningError as error:
            raise errors.ApiError(error.code, error.msg) from None
        assert node.db is not None
        try:
            user_id, key_id = await queries.register_user(node.db, name, pem, raw.text("label", "default"))
        except queries.NameTaken:
            raise errors.invalid_param("name", f"The name '{name}' is taken.") from None
        node.remember_key(key_id, user_id, pem)
        return {"userId": user_id, "name": name, "apiKey": key_id}

    @api.post("/api/v1/investo/demo-funds", openapi_extra=param_docs("asset", "amount", signed=True))
    async def demo_funds(request: Request) -> Any:
        """Deposit demo funds (default: all that is left of today's limit for every asset)."""
        call = await verify(node, request)
        p = call.params
        assets = [p.text("asset").upper()] if p.has("asset") else list(node.demo_limits)
        for asset in assets:
            if asset not in node.demo_limits:
                raise errors.invalid_param("asset", f"No demo funds of '{asset}'.")
        assert node.db is not None
        deposits = []
        async with node.demo_lock(call.user_id):
            day_start = node.clock_ms() // DAY_MS * DAY_MS
            for asset in assets:
                decimals = node.assets[asset]
                claimed = await queries.demo_claimed_today(node.db, call.user_id, asset, day_start)
                left = node.demo_limits[asset] - claimed
                wanted = amount(p.decimal_text("amount"), decimals, "amount") if p.has("amount") else left
                if wanted <= 0 or wanted > left:
                    if p.has("asset"):
                        raise errors.invalid_param(
                            "amount",
                            f"Today's demo limit of {asset} leaves {units.format_amount(left, decimals)}.",
                        )
                    continue
                applied = await submit(node, Deposit(0, call.user_id, asset, wanted))
                if any(isinstance(e, Deposited) for e in applied.events):
                    await queries.record_demo_claim(node.db, call.user_id, asset, wanted, applied.command.ts)
                    deposits.append({"asset": asset, "amount": units.format_amount(wanted, decimals)})
        return {"deposits": deposits}

    @api.get("/api/v1/investo/keys", openapi_extra=param_docs(signed=True))
    async def list_keys(request: Request) -> Any:
        """Your API keys (revoked ones included, with their revocation time)."""
        call = await verify(node, request)
        assert node.db is not None
        rows = await queries.list_keys(node.db, call.user_id)
        return [
            {"apiKey": r.key_id, "label": r.label, "createTime": r.created_ms, "revokeTime": r.revoked_ms}
            for r in rows
        ]

    @api.post("/api/v1/investo/keys", openapi_extra=param_docs("publicKey!", "label", signed=True))
    async def add_key(request: Request) -> Any:
        """Register another Ed25519 public key for your account."""
        call = await verify(node, request)
        pem = _pem_of(call.params.text("publicKey"))
        assert node.db is not None
        key_id = await queries.add_key(node.db, call.user_id, pem, call.params.text("label", "default"))
        node.remember_key(key_id, call.user_id, pem)
        return {"apiKey": key_id}

    @api.delete("/api/v1/investo/keys", openapi_extra=param_docs("apiKey!", signed=True))
    async def revoke_key(request: Request) -> Any:
        """Revoke one of your keys (it may be the one signing this request)."""
        call = await verify(node, request)
        key_id = call.params.text("apiKey")
        assert node.db is not None
        if not await queries.revoke_key(node.db, call.user_id, key_id):
            raise errors.invalid_param("apiKey", "No such key of yours.")
        await node.forget_key(key_id)
        return {"apiKey": key_id, "revoked": True}

    @api.get("/api/v1/investo/state")
    async def state() -> Any:
        """The engine's applied log offset and state hash (equal after any restart)."""
        return await node.state()

    return api
