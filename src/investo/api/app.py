"""The HTTP application: Binance spot v3 REST and WebSocket streams, Investo's own endpoints,
health and metrics.

``create_app(node)`` builds the app around an :class:`~investo.api.nodes.ApiNode`: the
embedded :class:`~investo.node.Node` (``investo up``) or a cluster's
:class:`~investo.cluster.gateway.GatewayNode` (``investo gateway``).
Every error leaves as Binance's ``{"code": …, "msg": …}`` with its HTTP status;
a request that would otherwise fail unexpectedly is logged and answered with
-1000, so a client always gets JSON it can parse.

Serving path of an HTTP request: uvicorn → :class:`Guard` (rate limits, metrics,
last-resort errors) → the API's own routes, looked up in a ``(path, method)`` table
(:class:`InvestoApp`), or, for anything else (``/docs``, the trading screen, 404/405),
FastAPI's whole stack. Our endpoints read their parameters by hand (Binance's rules and
errors, and the raw bytes a signature covers), so FastAPI's per-request work
(middleware layers, dependency solving, validation, serialisation) would only cost time:
about a third of a signed order's CPU. The FastAPI routes stay, unreachable for the
methods the table answers, to describe the API in OpenAPI at ``/docs``.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import investo
from investo.api import cancel_replace, errors, investo_routes, public, sapi, trading, user_stream, ws_api
from investo.api.limits import RateLimits
from investo.api.nodes import ApiNode, NotCaughtUp
from investo.api.ui import WebUi
from investo.ws.gateway import mount_ws

log = logging.getLogger("investo.api")

ORDER_PATHS = ("/api/v3/order", cancel_replace.PATH)  # each POST places an order
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class FastJSON(JSONResponse):
    """JSON rendered with orjson (our endpoints return plain dicts and lists, no models)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class Metrics:
    """Prometheus metrics of one node (a registry of its own, so tests can run many)."""

    def __init__(self, node: ApiNode) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("investo_http_requests", "HTTP requests", ["path", "status"], registry=r)
        self.gateway = Histogram(
            "investo_gateway_seconds",
            "Time to answer an HTTP request",
            ["path"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.commit = Histogram(
            "investo_log_commit_seconds", "Durable log commit per batch", buckets=LATENCY_BUCKETS, registry=r
        )
        self.engine = Histogram(
            "investo_engine_apply_seconds", "Engine time per batch", buckets=LATENCY_BUCKETS, registry=r
        )
        self.commands = Counter("investo_commands", "Commands applied", registry=r)
        self.orders = Counter("investo_orders", "Orders placed (accepted or not)", registry=r)
        self.trades = Counter("investo_trades", "Trades executed", registry=r)
        self.log_lag = Gauge("investo_log_lag", "Applied commands not yet in the SQL history", registry=r)
        self.ws_clients = Gauge("investo_websocket_clients", "Open WebSocket clients", registry=r)
        self.log_lag.set_function(node.sql_lag)
        # labelled children by label values: labels() takes a lock and builds a tuple per call
        self._latency: dict[str, Histogram] = {}
        self._requests: dict[tuple[str, int], Counter] = {}

    def observe_request(self, route: str, status: int, elapsed_s: float) -> None:
        """One answered request of ``route`` (a bounded set of names, so are the caches)."""
        latency = self._latency.get(route)
        if latency is None:
            latency = self._latency[route] = self.gateway.labels(route)
        latency.observe(elapsed_s)
        count = self._requests.get((route, status))
        if count is None:
            count = self._requests[(route, status)] = self.requests.labels(route, str(status))
        count.inc()

    def observe_batch(self, commands: int, commit_s: float, apply_s: float) -> None:
        self.commit.observe(commit_s)
        self.engine.observe(apply_s)
        self.commands.inc(commands)


class Guard:
    """Pure ASGI wrapper around every HTTP request: rate limits, metrics, last-resort errors.

    (Starlette's ``@app.middleware("http")`` would spawn a task per request; this costs
    a function call.) Latency is observed per known route (``routes``); any other path
    counts as "other", so unknown paths cannot grow the metrics without bound.
    """

    def __init__(self, app: ASGIApp, node: ApiNode, limits: RateLimits, metrics: Metrics) -> None:
        self.app = app
        self.node = node
        self.limits = limits
        self.metrics = metrics
        self.routes: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        path: str = scope["path"]
        status = 500
        sent = False

        async def send_and_note(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                sent = True
            await send(message)

        try:
            if path.startswith(("/api/", "/sapi/")):
                self._limit(scope, path)
            await self.app(scope, receive, send_and_note)
        except errors.ApiError as error:
            status = error.status
            await _error_response(error)(scope, receive, send)
        except NotCaughtUp as error:
            status = 503
            await _error_response(errors.service_unavailable(str(error)))(scope, receive, send)
        except Exception:
            log.exception("unexpected error in %s %s", scope["method"], path)
            if not sent:
                await _error_response(errors.unknown_error())(scope, receive, send)
        self._observe(scope, path, status, time.perf_counter() - began)

    def _limit(self, scope: Scope, path: str) -> None:
        now = self.node.clock_ms()
        client = scope.get("client")
        self.limits.per_ip.hit(client[0] if client else "unknown", now)
        if path in ORDER_PATHS and scope["method"] == "POST":
            self.metrics.orders.inc()

    def _observe(self, scope: Scope, path: str, status: int, elapsed: float) -> None:
        route = path if path in self.routes else "other"
        self.metrics.observe_request(route, status, elapsed)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "request %s %s %d %.2fms",
                scope["method"],
                path,
                status,
                elapsed * 1e3,
                extra={"method": scope["method"], "path": path, "status": status, "ms": elapsed * 1e3},
            )


PlainEndpoint = Callable[[Request], Awaitable[Response]]


class InvestoApp(FastAPI):
    """FastAPI with a fast lane: the API's routes answered from a table (module docstring).

    Every HTTP request passes :attr:`guard` once; the guard then calls :meth:`dispatch`.
    WebSocket and lifespan events go straight to FastAPI.
    """

    guard: Guard | None = None
    plain_routes: dict[tuple[str, str], PlainEndpoint]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.guard is not None:
            await self.guard(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.plain_routes.get((scope["path"], scope["method"]))
        if endpoint is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        response = await endpoint(Request(scope, receive))
        await response(scope, receive, send)


def create_app(node: ApiNode, limits: RateLimits | None = None) -> InvestoApp:
    app = InvestoApp(
        title="Investo",
        version=investo.__version__,
        description="A real-time exchange speaking Binance's spot API v3. Signed endpoints take Ed25519 "
        "signatures exactly as Binance does (`X-MBX-APIKEY`, `timestamp`, `recvWindow`, `signature`).",
        default_response_class=FastJSON,
    )
    metrics = Metrics(node)
    rate_limits = limits or RateLimits.default()
    app.state.node = node
    app.state.metrics = metrics
    node.rate_limits = rate_limits
    node.on_batch = metrics.observe_batch

    @app.exception_handler(errors.ApiError)
    async def api_error(request: Request, error: errors.ApiError) -> Response:
        return _error_response(error)

    @app.exception_handler(NotCaughtUp)
    async def not_caught_up(request: Request, error: NotCaughtUp) -> Response:
        return _error_response(errors.service_unavailable(str(error)))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> Response:
        return _error_response(errors.ApiError(-1100, "Illegal characters found in a parameter."))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        msg = {404: "Not found.", 405: "Method not allowed."}.get(error.status_code, str(error.detail))
        return _error_response(errors.ApiError(-1000, msg, error.status_code))

    routers = [
        public.router(node),
        trading.router(node),
        cancel_replace.router(node),
        sapi.router(node),
        investo_routes.router(node),
        user_stream.router(node),
    ]
    for router in routers:
        app.include_router(router)
    connections = mount_ws(
        app,
        node.hub,
        lambda: node.stream_names,
        buffer_limit=node.ws_buffer_limit,
        on_count=metrics.ws_clients.set,
    )
    ws_api.mount(app, node, connections)

    @app.get("/health", tags=["operations"])
    async def health() -> Any:
        """Liveness (the process answers) and readiness (engines recovered, taking orders)."""
        ready = node.ready
        body: dict[str, Any] = {"status": "ok" if ready else "starting", "live": True, "ready": ready}
        if ready:
            body["offset"] = node.progress()
        return FastJSON(body, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"])
    async def prometheus() -> Response:
        """Prometheus metrics: request, commit and engine latencies, orders, trades, log lag."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.router.default = WebUi(app.router.default)  # the trading screen at / (investo.api.ui)
    every_route = [*app.routes, *(route for router in routers for route in router.routes)]
    app.plain_routes = _plain_routes(every_route)
    app.guard = Guard(app.dispatch, node, rate_limits, metrics)
    app.guard.routes = {path for route in every_route if (path := getattr(route, "path", ""))}
    return app


def _plain_routes(routes: list[BaseRoute]) -> dict[tuple[str, str], PlainEndpoint]:
    """``(path, method) → endpoint`` for every API route that reads its parameters by hand.

    Only routes with fixed paths qualify (the table is an exact lookup); FastAPI still
    answers HEAD, OPTIONS and anything with path parameters.
    """
    table: dict[tuple[str, str], PlainEndpoint] = {}
    for route in routes:
        if not isinstance(route, APIRoute) or route.param_convertors:
            continue
        params = list(inspect.signature(route.endpoint).parameters)
        if params in ([], ["request"]):
            for method in route.methods or ():
                table[(route.path, method)] = _plain_endpoint(route.endpoint, bool(params))
    return table


def _plain_endpoint(endpoint: Callable[..., Awaitable[Any]], takes_request: bool) -> PlainEndpoint:
    async def answer(request: Request) -> Response:
        try:
            result = await (endpoint(request) if takes_request else endpoint())
        except errors.ApiError as error:
            return _error_response(error)
        except NotCaughtUp as error:
            return _error_response(errors.service_unavailable(str(error)))
        return result if isinstance(result, Response) else FastJSON(result)

    return answer


def _error_response(error: errors.ApiError) -> Response:
    return FastJSON(error.body(), status_code=error.status, headers=error.headers or None)
