"""The two endpoints of Binance's wallet API (``/sapi/v1``) that spot clients such as ccxt call.

* ``GET /sapi/v1/system/status`` (public): ``{"status": 0, "msg": "normal"}`` while the node
  takes orders, ``{"status": 1, "msg": "system_maintenance"}`` while it is starting or
  stopping (Binance's values; ccxt's ``fetch_status()`` reads them as ``ok`` / ``maintenance``).
* ``GET /sapi/v1/asset/tradeFee`` (signed; optional ``symbol``): each market's maker and taker
  fee as a decimal fraction, ``[{"symbol", "makerCommission", "takerCommission"}]`` (10 bps is
  ``"0.001"``), for ccxt's ``fetch_trading_fee(s)()``. Every user pays the market's fees.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request

from investo.api.nodes import ApiNode
from investo.api.signed import param_docs, verify


def fee_rate(bps: int) -> str:
    """A fee in basis points as Binance's decimal fraction: 10 → "0.001", 0 → "0"."""
    return format(Decimal(bps).scaleb(-4).normalize(), "f")


def router(node: ApiNode) -> APIRouter:
    api = APIRouter(tags=["wallet (sapi)"])

    @api.get("/sapi/v1/system/status")
    async def system_status() -> Any:
        """Whether the exchange takes orders: status 0 "normal", or 1 "system_maintenance"."""
        if node.ready:
            return {"status": 0, "msg": "normal"}
        return {"status": 1, "msg": "system_maintenance"}

    @api.get("/sapi/v1/asset/tradeFee", openapi_extra=param_docs("symbol", signed=True))
    async def trade_fee(request: Request) -> Any:
        """Maker and taker fees of one market (``symbol``) or of all of them."""
        call = await verify(node, request)
        p = call.params
        specs = [p.symbol(node.markets)] if p.has("symbol") else list(node.markets.values())
        return [
            {
                "symbol": spec.symbol,
                "makerCommission": fee_rate(spec.maker_fee_bps),
                "takerCommission": fee_rate(spec.taker_fee_bps),
            }
            for spec in specs
        ]

    return api
