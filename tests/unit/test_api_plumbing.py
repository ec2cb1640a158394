"""The HTTP plumbing of the signed path: body and headers from ASGI, request metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import ClientDisconnect, Request

from investo.api.app import Metrics
from investo.api.errors import ApiError
from investo.api.signed import MAX_BODY_BYTES, header, read_body


def _request(headers: list[tuple[bytes, bytes]], messages: list[dict[str, Any]]) -> tuple[Request, list[int]]:
    received = [0]

    async def receive() -> dict[str, Any]:
        received[0] += 1
        return messages.pop(0)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers, "query_string": b""}
    return Request(scope, receive), received


def test_a_body_in_chunks_is_joined() -> None:
    parts = [
        {"type": "http.request", "body": b"a=1&", "more_body": True},
        {"type": "http.request", "body": b"b=2"},
    ]
    request, _ = _request([], parts)
    assert asyncio.run(read_body(request)) == "a=1&b=2"


def test_a_chunked_body_over_the_limit_is_refused_before_it_is_all_read() -> None:
    chunk = {"type": "http.request", "body": b"x" * 1000, "more_body": True}
    request, received = _request([], [dict(chunk) for _ in range(100)])
    with pytest.raises(ApiError) as refused:
        asyncio.run(read_body(request))
    assert refused.value.status == 413
    assert received[0] == MAX_BODY_BYTES // 1000 + 1  # stopped at the first chunk past the limit


def test_an_announced_length_over_the_limit_is_refused_unread() -> None:
    request, received = _request([(b"content-length", str(MAX_BODY_BYTES + 1).encode())], [])
    with pytest.raises(ApiError) as refused:
        asyncio.run(read_body(request))
    assert refused.value.status == 413 and received[0] == 0


def test_a_client_gone_mid_body_is_a_disconnect() -> None:
    messages = [{"type": "http.request", "body": b"a", "more_body": True}, {"type": "http.disconnect"}]
    request, _ = _request([], messages)
    with pytest.raises(ClientDisconnect):
        asyncio.run(read_body(request))


def test_header_gives_the_first_value_of_a_lower_case_name() -> None:
    request, _ = _request([(b"x-mbx-apikey", b"first"), (b"x-mbx-apikey", b"second")], [])
    assert header(request, b"x-mbx-apikey") == "first"
    assert header(request, b"content-length") is None


class _Node:
    def sql_lag(self) -> float:
        return 0.0


def test_request_metrics_count_per_route_and_status() -> None:
    metrics = Metrics(_Node())  # type: ignore[arg-type]
    for status in (200, 200, 400):
        metrics.observe_request("/api/v3/order", status, 0.001)
    metrics.observe_request("other", 404, 0.5)
    value = metrics.registry.get_sample_value
    assert value("investo_http_requests_total", {"path": "/api/v3/order", "status": "200"}) == 2
    assert value("investo_http_requests_total", {"path": "/api/v3/order", "status": "400"}) == 1
    assert value("investo_http_requests_total", {"path": "other", "status": "404"}) == 1
    assert value("investo_gateway_seconds_count", {"path": "/api/v3/order"}) == 3
    assert value("investo_gateway_seconds_bucket", {"path": "other", "le": "0.25"}) == 0


def test_uvicorn_reads_forwarded_headers_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn
    from starlette.applications import Starlette

    from investo.server import serve

    configs: list[uvicorn.Config] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda server, *args, **kwargs: configs.append(server.config))
    serve(Starlette(), "127.0.0.1", 0, "warning", 20.0)
    serve(Starlette(), "127.0.0.1", 0, "warning", 20.0, proxy_headers=True)
    assert [config.proxy_headers for config in configs] == [False, True]
