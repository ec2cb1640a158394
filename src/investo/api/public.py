"""Public market-data endpoints of Binance's spot API v3.

The order book and book ticker are read from the matching engines' memory (the
book and its ``lastUpdateId`` in the same step, so they always agree); trades,
candles and 24h statistics from the SQL history once it has caught up.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from investo.api import errors, formats, units
from investo.api.nodes import ApiNode
from investo.api.params import Params
from investo.api.signed import param_docs, unsigned_params
from investo.markets import MarketSpec
from investo.store import queries
from investo.store.models import INTERVALS

DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000, 5000)
ORDER_TYPES = ["LIMIT", "LIMIT_MAKER", "MARKET"]
STP_MODES = ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"]


def symbol_info(spec: MarketSpec) -> dict[str, Any]:
    core = spec.core
    quote_amount = units.format_amount
    return {
        "symbol": spec.symbol,
        "status": "TRADING",
        "baseAsset": spec.base,
        "baseAssetPrecision": max(8, spec.base_decimals),
        "quoteAsset": spec.quote,
        "quotePrecision": max(8, spec.quote_decimals),
        "quoteAssetPrecision": max(8, spec.quote_decimals),
        "baseCommissionPrecision": max(8, spec.base_decimals),
        "quoteCommissionPrecision": max(8, spec.quote_decimals),
        "orderTypes": ORDER_TYPES,
        "icebergAllowed": False,
        "ocoAllowed": False,
        "otoAllowed": False,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": True,
        "amendAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": spec.format_price(core.min_price),
                "maxPrice": spec.format_price(core.max_price),
                "tickSize": spec.format_price(1),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": spec.format_qty(core.min_qty),
                "maxQty": spec.format_qty(core.max_qty),
                "stepSize": spec.format_qty(1),
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": quote_amount(core.min_notional, spec.quote_decimals),
                "applyMinToMarket": False,
                "maxNotional": "9000000000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
        ],
        "permissions": ["SPOT"],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": STP_MODES,
    }


def _symbols(node: ApiNode, p: Params) -> list[MarketSpec]:
    """The markets named by ``symbol`` or ``symbols`` (a JSON array), or all of them."""
    if p.has("symbol"):
        return [p.symbol(node.markets)]
    if p.has("symbols"):
        text = p.text("symbols")
        names = [n.strip().strip('"') for n in text.strip("[]").split(",") if n.strip()]
        if not text.startswith("[") or not names:
            raise errors.illegal_chars("symbols", '["SYMBOL", ...]')
        specs = [node.markets.get(n.upper()) for n in names]
        if any(s is None for s in specs):
            raise errors.invalid_symbol()
        return [s for s in specs if s is not None]
    return list(node.markets.values())


def _interval(p: Params) -> str:
    value = p.text("interval")
    if value not in INTERVALS:
        raise errors.invalid_interval()
    return value


def router(node: ApiNode) -> APIRouter:
    api = APIRouter(tags=["market data"])

    @api.get("/api/v3/ping")
    async def ping() -> Any:
        """Test connectivity."""
        return {}

    @api.get("/api/v3/time")
    async def server_time() -> Any:
        """The server's time in milliseconds."""
        return {"serverTime": node.clock_ms()}

    @api.get("/api/v3/exchangeInfo", openapi_extra=param_docs("symbol", "symbols"))
    async def exchange_info(request: Request) -> Any:
        """Markets, their filters and order types, and the rate limits."""
        p = await unsigned_params(request)
        return {
            "timezone": "UTC",
            "serverTime": node.clock_ms(),
            "rateLimits": node.rate_limits.describe() if node.rate_limits else [],
            "exchangeFilters": [],
            "symbols": [symbol_info(s) for s in _symbols(node, p)],
        }

    @api.get("/api/v3/depth", openapi_extra=param_docs("symbol!", "limit"))
    async def depth(request: Request) -> Any:
        """The order book, aggregated by price, with its lastUpdateId."""
        p = await unsigned_params(request)
        spec = p.symbol(node.markets)
        limit = p.integer("limit", 100, 1, 5000)
        await node.sync_books([spec.symbol])
        engine = node.book(spec.symbol)
        bids, asks = engine.depth(limit)  # read with engine.seq in the same step
        return {
            "lastUpdateId": engine.seq,
            "bids": [[spec.format_price(px), spec.format_qty(q)] for px, q in bids],
            "asks": [[spec.format_price(px), spec.format_qty(q)] for px, q in asks],
        }

    @api.get("/api/v3/ticker/bookTicker", openapi_extra=param_docs("symbol", "symbols"))
    async def book_ticker(request: Request) -> Any:
        """Best bid and ask, with their quantities."""
        p = await unsigned_params(request)
        specs = _symbols(node, p)
        await node.sync_books(s.symbol for s in specs)
        out = []
        for spec in specs:
            bids, asks = node.book(spec.symbol).depth(1)
            bid = bids[0] if bids else (0, 0)
            ask = asks[0] if asks else (0, 0)
            out.append(
                {
                    "symbol": spec.symbol,
                    "bidPrice": spec.format_price(bid[0]),
                    "bidQty": spec.format_qty(bid[1]),
                    "askPrice": spec.format_price(ask[0]),
                    "askQty": spec.format_qty(ask[1]),
                }
            )
        return out[0] if p.has("symbol") else out

    @api.get("/api/v3/trades", openapi_extra=param_docs("symbol!", "limit"))
    async def trades(request: Request) -> Any:
        """Recent trades, oldest first."""
        p = await unsigned_params(request)
        spec = p.symbol(node.markets)
        limit = p.integer("limit", 500, 1, 1000)
        await node.caught_up(spec.symbol)
        assert node.db is not None
        rows = await queries.recent_trades(node.db, spec.symbol, limit)
        return [trade_json(spec, r) for r in rows]

    @api.get(
        "/api/v3/aggTrades", openapi_extra=param_docs("symbol!", "fromId", "startTime", "endTime", "limit")
    )
    async def agg_trades(request: Request) -> Any:
        """Trades aggregated: consecutive fills of one taker order at one price."""
        p = await unsigned_params(request)
        spec = p.symbol(node.markets)
        await node.caught_up(spec.symbol)
        assert node.db is not None
        rows = await queries.agg_trades(
            node.db, spec.symbol, p.optional_integer("fromId"), p.optional_integer("startTime"),
            p.optional_integer("endTime"), p.integer("limit", 500, 1, 1000),
        )  # fmt: skip
        return [
            {
                "a": r.agg_id,
                "p": spec.format_price(r.price_ticks),
                "q": spec.format_qty(r.qty_lots),
                "f": r.first_trade_id,
                "l": r.last_trade_id,
                "T": r.time_ms,
                "m": r.is_buyer_maker,
                "M": True,
            }
            for r in rows
        ]

    @api.get(
        "/api/v3/klines", openapi_extra=param_docs("symbol!", "interval!", "startTime", "endTime", "limit")
    )
    async def klines(request: Request) -> Any:
        """Candles: open time, OHLC, volume, close time, quote volume, trades."""
        p = await unsigned_params(request)
        spec = p.symbol(node.markets)
        interval = _interval(p)
        await node.caught_up(spec.symbol)
        assert node.db is not None
        rows = await queries.klines(
            node.db, spec.symbol, interval, p.optional_integer("startTime"),
            p.optional_integer("endTime"), p.integer("limit", 500, 1, 1000), node.clock_ms(),
        )  # fmt: skip
        return [kline_json(spec, r) for r in rows]

    @api.get("/api/v3/ticker/24hr", openapi_extra=param_docs("symbol", "symbols"))
    async def ticker_24hr(request: Request) -> Any:
        """Statistics of the last 24 hours."""
        p = await unsigned_params(request)
        specs = _symbols(node, p)
        await node.caught_up(*(s.symbol for s in specs))
        await node.sync_books(s.symbol for s in specs)
        out = [await _ticker(spec) for spec in specs]
        return out[0] if p.has("symbol") else out

    async def _ticker(spec: MarketSpec) -> dict[str, Any]:
        assert node.db is not None
        t = await queries.ticker_24h(node.db, spec.symbol, node.clock_ms())
        bids, asks = node.book(spec.symbol).depth(1)
        fmt_q = spec.format_qty
        quote = units.format_amount
        change, percent = formats.price_change(spec, t.open_price, t.last_price)
        return {
            "symbol": spec.symbol,
            "priceChange": change,
            "priceChangePercent": percent,
            "weightedAvgPrice": formats.weighted_price(spec, t.quote_volume, t.volume),
            "prevClosePrice": spec.format_price(t.prev_close_price),
            "lastPrice": spec.format_price(t.last_price),
            "lastQty": fmt_q(t.last_qty),
            "bidPrice": spec.format_price(bids[0][0] if bids else 0),
            "bidQty": fmt_q(bids[0][1] if bids else 0),
            "askPrice": spec.format_price(asks[0][0] if asks else 0),
            "askQty": fmt_q(asks[0][1] if asks else 0),
            "openPrice": spec.format_price(t.open_price),
            "highPrice": spec.format_price(t.high_price),
            "lowPrice": spec.format_price(t.low_price),
            "volume": fmt_q(t.volume),
            "quoteVolume": quote(t.quote_volume, spec.quote_decimals),
            "openTime": t.open_time_ms,
            "closeTime": t.close_time_ms,
            "firstId": t.first_id,
            "lastId": t.last_id,
            "count": t.count,
        }

    @api.get("/api/v3/ticker/price", openapi_extra=param_docs("symbol", "symbols"))
    async def ticker_price(request: Request) -> Any:
        """The last trade price."""
        p = await unsigned_params(request)
        specs = _symbols(node, p)
        await node.caught_up(*(s.symbol for s in specs))
        assert node.db is not None
        out = []
        for spec in specs:
            last = await queries.recent_trades(node.db, spec.symbol, 1)
            price = last[-1].price_ticks if last else 0
            out.append({"symbol": spec.symbol, "price": spec.format_price(price)})
        return out[0] if p.has("symbol") else out

    @api.get("/api/v3/avgPrice", openapi_extra=param_docs("symbol!"))
    async def avg_price(request: Request) -> Any:
        """The volume-weighted average price of the last 5 minutes."""
        p = await unsigned_params(request)
        spec = p.symbol(node.markets)
        now = node.clock_ms()
        await node.caught_up(spec.symbol)
        assert node.db is not None
        rows = await queries.klines(node.db, spec.symbol, "1m", now - 5 * 60_000, now, 5, now)
        volume = sum(r.volume for r in rows)
        quote_volume = sum(r.quote_volume for r in rows)
        return {"mins": 5, "price": formats.weighted_price(spec, quote_volume, volume), "closeTime": now}

    return api


def trade_json(spec: MarketSpec, row: Any) -> dict[str, Any]:
    return {
        "id": row.trade_id,
        "price": spec.format_price(row.price_ticks),
        "qty": spec.format_qty(row.qty_lots),
        "quoteQty": units.format_amount(row.quote_qty, spec.quote_decimals),
        "time": row.time_ms,
        "isBuyerMaker": row.taker_side == "SELL",
        "isBestMatch": True,
    }


def kline_json(spec: MarketSpec, row: Any) -> list[Any]:
    return [
        row.open_time_ms,
        spec.format_price(row.open),
        spec.format_price(row.high),
        spec.format_price(row.low),
        spec.format_price(row.close),
        spec.format_qty(row.volume),
        row.close_time_ms,
        units.format_amount(row.quote_volume, spec.quote_decimals),
        row.trades,
        "0.00000000",
        "0.00000000",
        "0",
    ]
