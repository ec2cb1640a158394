"""Signed trading endpoints of Binance's spot API v3: orders, cancels, account.

A new order is checked at the edge (types, decimals, steps and ranges), turned
into a ``PlaceOrder`` in integer units, journaled and applied by the engine host,
and answered from the events it caused. Queries of past orders and trades read
the SQL history after it has caught up with everything applied so far.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request

from investo.api import errors, formats
from investo.api.nodes import ApiNode
from investo.api.params import Params, amount, steps
from investo.api.signed import SignedCall, check_replay, param_docs, refused, verify
from investo.api.units import format_amount
from investo.core.accounts import validate_order
from investo.core.messages import (
    CancelAll,
    CancelOrder,
    CancelRejected,
    Command,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    OrderType,
    PlaceOrder,
    Side,
    StpMode,
    TimeInForce,
)
from investo.host import Applied, HostStopped, StatusUnknown
from investo.markets import MarketSpec
from investo.security.signing import SigningError
from investo.store import queries

MAX_QUOTE_UNITS = 2**62
RESP_TYPES = ("ACK", "RESULT", "FULL")
ORDER_PARAMS = (
    "symbol!", "side!", "type!", "timeInForce", "quantity", "quoteOrderQty", "price",
    "newClientOrderId", "selfTradePreventionMode",
)  # fmt: skip


def new_client_order_id() -> str:
    return "x-" + secrets.token_urlsafe(15)


async def submit(node: ApiNode, command: Command, call: SignedCall | None = None) -> Applied:
    """Submit ``command``; with the ``call`` it came from, make that call's replay check too
    if ``verify`` left it to the submit (one round trip for both in a cluster)."""
    try:
        if call is not None and not call.replay_checked:
            return await node.submit_signed(command, call.key_id, call.signed)
        return await node.submit(command)
    except SigningError as error:
        raise refused(error) from None
    except StatusUnknown:
        client_id = command.client_order_id if isinstance(command, PlaceOrder) else None
        raise errors.status_unknown(client_id) from None
    except HostStopped as error:
        raise errors.service_unavailable(str(error)) from None


def _order_command(spec: MarketSpec, user: int, p: Params) -> tuple[PlaceOrder, int]:
    """The PlaceOrder a request asks for, and its quoteOrderQty in quote units (else 0)."""
    side = formats.SIDES[p.choice("side", formats.SIDES, errors.invalid_side)]
    type_name = p.choice("type", formats.ORDER_TYPES, errors.invalid_order_type)
    order_type = formats.ORDER_TYPES[type_name]
    core = spec.core
    price = qty = quote_qty = 0
    tif = TimeInForce.GTC
    if order_type == OrderType.MARKET:
        for name in ("price", "timeInForce"):
            if p.has(name):
                raise errors.not_required(name)
        tif = TimeInForce.IOC
        if p.has("quantity") == p.has("quoteOrderQty"):
            raise errors.missing_one_of("quantity", "quoteOrderQty")
        if p.has("quoteOrderQty"):
            if side != Side.BUY:
                raise errors.invalid_param("quoteOrderQty", "quoteOrderQty is supported for BUY orders only.")
            quote_qty = amount(p.decimal_text("quoteOrderQty"), spec.quote_decimals, "quoteOrderQty")
            if not 0 < quote_qty <= MAX_QUOTE_UNITS:
                raise errors.filter_failure("NOTIONAL")
    else:
        if p.has("quoteOrderQty"):
            raise errors.not_required("quoteOrderQty")
        price = steps(spec, p.decimal_text("price"), price=True)
        if not core.min_price <= price <= core.max_price:
            raise errors.filter_failure("PRICE_FILTER")
        if order_type == OrderType.LIMIT:
            tif = formats.TIFS[p.choice("timeInForce", formats.TIFS, errors.invalid_tif)]
        elif p.has("timeInForce"):
            raise errors.not_required("timeInForce")
    if not quote_qty:
        qty = steps(spec, p.decimal_text("quantity"), price=False)
        if not core.min_qty <= qty <= core.max_qty:
            raise errors.filter_failure("LOT_SIZE")
        if price and core.notional(price, qty) < core.min_notional:
            raise errors.filter_failure("NOTIONAL")
    stp_name = p.text("selfTradePreventionMode", "EXPIRE_MAKER")
    if stp_name not in formats.STP_MODES:
        raise errors.invalid_param("selfTradePreventionMode", "")
    client_id = p.client_order_id("newClientOrderId") or new_client_order_id()
    command = PlaceOrder(
        0, user, spec.symbol, side, order_type, tif, price, qty, quote_qty, client_id, StpMode[stp_name]
    )
    return command, quote_qty


def _response_type(p: Params, order_type: OrderType) -> str:
    default = "FULL" if order_type in (OrderType.LIMIT, OrderType.MARKET) else "ACK"
    value = p.text("newOrderRespType", default)
    if value not in RESP_TYPES:
        raise errors.invalid_param("newOrderRespType", "")
    return value


@dataclass(frozen=True, slots=True)
class NewOrder:
    """A new order read and checked from a request's parameters, ready to submit."""

    spec: MarketSpec
    command: PlaceOrder
    quote_qty: int  # quoteOrderQty in quote units (0 unless a market buy by quote amount)
    resp_type: str  # ACK, RESULT or FULL


def read_new_order(spec: MarketSpec, user: int, p: Params) -> NewOrder:
    """The order ``POST /api/v3/order`` asks for: every parameter error, nothing submitted."""
    command, quote_qty = _order_command(spec, user, p)
    return NewOrder(spec, command, quote_qty, _response_type(p, command.type))


def check_filters(order: NewOrder) -> None:
    """The market's filters as the engine applies them (without balances): -1013 and friends."""
    reason = validate_order(order.spec.core, order.command)
    if reason is not None:
        raise errors.from_reject(reason)


def count_order(node: ApiNode, call: SignedCall) -> None:
    """Count one new order against the key's order limit (only once its signature is valid)."""
    if node.rate_limits:
        node.rate_limits.orders_per_key.hit(call.key_id, node.clock_ms())


async def place(node: ApiNode, order: NewOrder, call: SignedCall | None = None) -> dict[str, Any]:
    """Submit ``order`` (and ``call``'s replay check, see :func:`submit`); the answer in its
    ``newOrderRespType``, or the engine's refusal raised."""
    applied = await submit(node, order.command, call)
    view = _placed_view(order.spec, applied, order.quote_qty)
    if order.resp_type == "ACK":
        return formats.ack_json(view)
    return formats.result_json(view) if order.resp_type == "RESULT" else formats.full_json(view)


@dataclass(frozen=True, slots=True)
class CancelTarget:
    """Which order a cancel names (by id, client id or both) and the cancel's own client id."""

    order_id: int | None
    client_id: str | None
    cancel_client_id: str


def read_cancel_target(
    p: Params,
    id_name: str = "orderId",
    client_id_name: str = "origClientOrderId",
    new_client_id_name: str = "newClientOrderId",
) -> CancelTarget:
    """The order a cancel names; -1102 when neither id is sent (names differ in cancelReplace)."""
    order_id = p.optional_integer(id_name)
    client_id = p.client_order_id(client_id_name)
    if order_id is None and client_id is None:
        raise errors.missing_one_of(id_name, client_id_name)
    return CancelTarget(order_id, client_id, p.client_order_id(new_client_id_name) or new_client_order_id())


async def cancel(node: ApiNode, user: int, spec: MarketSpec, target: CancelTarget) -> dict[str, Any]:
    """Cancel one open order (the answer of ``DELETE /api/v3/order``); -2011 when it is not open.

    With both ids, the order is found by id and its client id must match (as on Binance).
    """
    assert node.db is not None
    if target.order_id is not None and target.client_id is not None:
        await node.caught_up(spec.symbol)
        row = await queries.get_order(node.db, user, spec.symbol, target.order_id, None)
        if row is None or row.client_order_id != target.client_id:
            raise errors.unknown_order()
    order_id = target.order_id
    command = CancelOrder(0, user, spec.symbol, order_id or 0, "" if order_id else target.client_id or "")
    applied = await submit(node, command)
    for event in applied.events:
        if isinstance(event, CancelRejected):
            raise errors.unknown_order()
    canceled = next(e for e in applied.events if isinstance(e, OrderCanceled))
    await node.caught_up(spec.symbol)
    row = await queries.get_order(node.db, user, spec.symbol, canceled.order_id, None)
    assert row is not None
    return formats.cancel_json(view_of_row(spec, row), target.cancel_client_id, applied.command.ts)


def _placed_view(spec: MarketSpec, applied: Applied, quote_qty: int) -> formats.OrderView:
    accepted = next((e for e in applied.events if isinstance(e, OrderAccepted)), None)
    if accepted is None:
        rejected = next(e for e in applied.events if isinstance(e, OrderRejected))
        raise errors.from_reject(rejected.code)
    for event in applied.events:
        if isinstance(event, OrderRejected) and event.order_id == accepted.order_id:
            raise errors.from_reject(event.code)
    view = formats.view_of_accepted(spec, accepted, quote_qty)
    return formats.apply_events(view, applied.events)


async def _find_order(node: ApiNode, call: SignedCall, spec: MarketSpec) -> formats.OrderView:
    p = call.params
    order_id = p.optional_integer("orderId")
    client_id = p.optional_text("origClientOrderId")
    if order_id is None and client_id is None:
        raise errors.missing_one_of("orderId", "origClientOrderId")
    await node.caught_up(spec.symbol)
    assert node.db is not None
    row = await queries.get_order(node.db, call.user_id, spec.symbol, order_id, client_id)
    if row is None:
        raise errors.no_such_order()
    return view_of_row(spec, row)


def view_of_row(spec: MarketSpec, row: Any) -> formats.OrderView:
    return formats.OrderView(
        spec=spec,
        order_id=row.order_id,
        client_order_id=row.client_order_id,
        side=row.side,
        type=row.type,
        time_in_force=row.time_in_force if row.type == "LIMIT" else "GTC",  # as view_of_accepted shows it
        price=row.price_ticks,
        orig_qty=row.orig_qty_lots,
        orig_quote_qty=row.orig_quote_qty,
        executed_qty=row.executed_qty_lots,
        cum_quote_qty=row.cum_quote_qty,
        status=row.status,
        stp_mode=row.stp_mode,
        time_ms=row.time_ms,
        update_time_ms=row.update_time_ms,
    )


def router(node: ApiNode) -> APIRouter:
    api = APIRouter(tags=["trading (signed)"])

    @api.post("/api/v3/order", openapi_extra=param_docs(*ORDER_PARAMS, "newOrderRespType", signed=True))
    async def new_order(request: Request) -> Any:
        """Place an order (LIMIT, LIMIT_MAKER, MARKET by quantity or quoteOrderQty)."""
        call = await verify(node, request, replay_checked_by_submit=True)  # the append marks it
        try:
            count_order(node, call)
            spec = call.params.symbol(node.markets)
            order = read_new_order(spec, call.user_id, call.params)
        except errors.ApiError:
            await check_replay(node, call)  # a replayed bad order is refused as a replay, as before
            raise
        return await place(node, order, call)

    @api.post("/api/v3/order/test", openapi_extra=param_docs(*ORDER_PARAMS, signed=True))
    async def test_order(request: Request) -> Any:
        """Check an order as `POST /api/v3/order` would, without placing it."""
        call = await verify(node, request)
        spec = call.params.symbol(node.markets)
        check_filters(read_new_order(spec, call.user_id, call.params))
        if call.params.text("computeCommissionRates", "false") == "true":
            return _commission_rates(spec)
        return {}

    @api.get("/api/v3/order", openapi_extra=param_docs(
        "symbol!", "orderId", "origClientOrderId", signed=True))  # fmt: skip
    async def get_order(request: Request) -> Any:
        """One of your orders, by orderId or origClientOrderId."""
        call = await verify(node, request)
        spec = call.params.symbol(node.markets)
        return formats.order_json(await _find_order(node, call, spec))

    @api.delete("/api/v3/order", openapi_extra=param_docs(
        "symbol!", "orderId", "origClientOrderId", "newClientOrderId", signed=True))  # fmt: skip
    async def cancel_order(request: Request) -> Any:
        """Cancel one open order, by orderId or origClientOrderId."""
        call = await verify(node, request)
        spec = call.params.symbol(node.markets)
        return await cancel(node, call.user_id, spec, read_cancel_target(call.params))

    @api.delete("/api/v3/openOrders", openapi_extra=param_docs("symbol!", signed=True))
    async def cancel_all(request: Request) -> Any:
        """Cancel all your open orders in a market."""
        call = await verify(node, request)
        spec = call.params.symbol(node.markets)
        applied = await submit(node, CancelAll(0, call.user_id, spec.symbol))
        ids = [e.order_id for e in applied.events if isinstance(e, OrderCanceled)]
        await node.caught_up(spec.symbol)
        assert node.db is not None
        out = []
        for order_id in ids:
            row = await queries.get_order(node.db, call.user_id, spec.symbol, order_id, None)
            assert row is not None
            out.append(formats.cancel_json(view_of_row(spec, row), new_client_order_id(), applied.command.ts))
        return out

    @api.get("/api/v3/openOrders", openapi_extra=param_docs("symbol", signed=True))
    async def open_orders(request: Request) -> Any:
        """Your open orders, in one market or all."""
        call = await verify(node, request)
        spec = call.params.symbol(node.markets) if call.params.has("symbol") else None
        await node.caught_up(*([spec.symbol] if spec else []))
        assert node.db is not None
        rows = await queries.open_orders(node.db, call.user_id, spec.symbol if spec else None)
        return [formats.order_json(view_of_row(node.markets[r.symbol], r)) for r in rows]

    @api.get("/api/v3/allOrders", openapi_extra=param_docs(
        "symbol!", "orderId", "startTime", "endTime", "limit", signed=True))  # fmt: skip
    async def all_orders(request: Request) -> Any:
        """Your orders in a market, open or finished, oldest first."""
        call = await verify(node, request)
        p = call.params
        spec = p.symbol(node.markets)
        limit = p.integer("limit", 500, 1, 1000)
        await node.caught_up(spec.symbol)
        assert node.db is not None
        rows = await queries.all_orders(
            node.db, call.user_id, spec.symbol, p.optional_integer("orderId"),
            p.optional_integer("startTime"), p.optional_integer("endTime"), limit,
        )  # fmt: skip
        return [formats.order_json(view_of_row(spec, r)) for r in rows]

    @api.get("/api/v3/myTrades", openapi_extra=param_docs(
        "symbol!", "orderId", "startTime", "endTime", "fromId", "limit", signed=True))  # fmt: skip
    async def my_trades(request: Request) -> Any:
        """Your trades in a market."""
        call = await verify(node, request)
        p = call.params
        spec = p.symbol(node.markets)
        await node.caught_up(spec.symbol)
        assert node.db is not None
        rows = await queries.my_trades(
            node.db, call.user_id, spec.symbol, p.optional_integer("startTime"),
            p.optional_integer("endTime"), p.optional_integer("fromId"), p.integer("limit", 500, 1, 1000),
            p.optional_integer("orderId"),
        )  # fmt: skip
        return [my_trade_json(spec, r) for r in rows]

    @api.get("/api/v3/account", openapi_extra=param_docs("omitZeroBalances", signed=True))
    async def account(request: Request) -> Any:
        """Your balances (free and locked) and permissions."""
        call = await verify(node, request)
        omit_zero = call.params.text("omitZeroBalances", "false") == "true"
        held = await node.balances(call.user_id)
        balances = []
        for asset, decimals in node.assets.items():
            free, locked = held.get(asset, (0, 0))
            if omit_zero and not (free or locked):
                continue
            balances.append(
                {"asset": asset, "free": _units(free, decimals), "locked": _units(locked, decimals)}
            )
        spec = next(iter(node.markets.values()))
        return {
            "makerCommission": spec.maker_fee_bps,
            "takerCommission": spec.taker_fee_bps,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": _commission_rates(spec)["standardCommission"],
            "canTrade": True,
            "canWithdraw": True,
            "canDeposit": True,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": node.clock_ms(),
            "accountType": "SPOT",
            "balances": balances,
            "permissions": ["SPOT"],
            "uid": call.user_id,
        }

    return api


def _units(value: int, decimals: int) -> str:
    return format_amount(value, decimals)


def _bps(bps: int) -> str:
    return format_amount(bps, 4)  # 10 bps = 0.0010


def _commission_rates(spec: MarketSpec) -> dict[str, Any]:
    rates = {
        "maker": _bps(spec.maker_fee_bps),
        "taker": _bps(spec.taker_fee_bps),
        "buyer": _bps(0),
        "seller": _bps(0),
    }
    return {"standardCommission": rates, "taxCommission": {k: _bps(0) for k in rates}, "discount": {}}


def my_trade_json(spec: MarketSpec, row: Any) -> dict[str, Any]:
    return {
        "symbol": spec.symbol,
        "id": row.trade_id,
        "orderId": row.order_id,
        "orderListId": -1,
        "price": spec.format_price(row.price_ticks),
        "qty": spec.format_qty(row.qty_lots),
        "quoteQty": _units(row.quote_qty, spec.quote_decimals),
        "commission": _units(row.commission, spec.quote_decimals),
        "commissionAsset": spec.quote,
        "time": row.time_ms,
        "isBuyer": row.is_buyer,
        "isMaker": row.is_maker,
        "isBestMatch": True,
    }
