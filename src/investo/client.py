"""A small asyncio client for Investo's API, signing every private call with your Ed25519 key.

It speaks the same Binance dialect as ccxt or python-binance, plus Investo's own
endpoints (account creation, demo funds, keys). Your private key never leaves
this process: the server only ever sees signatures and your public key.

    key = generate_key_pair()[0]
    async with InvestoClient("http://127.0.0.1:8000", private_key=key) as client:
        await client.register("alice")
        await client.claim_demo_funds()
        order = await client.place_order("TATAINR", "BUY", "LIMIT", quantity="1", price="950",
                                         timeInForce="GTC")
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any, Self

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from investo.security.signing import API_KEY_HEADER, public_key_to_pem, sign_params


class ApiError(Exception):
    """An error answer of the API: Binance's ``code`` and ``msg``, and the HTTP status."""

    def __init__(self, status: int, code: int, msg: str, retry_after: float | None = None) -> None:
        super().__init__(f"{code}: {msg} (HTTP {status})")
        self.status = status
        self.code = code
        self.msg = msg
        self.retry_after = retry_after  # seconds, from a 429's ``Retry-After`` header


class InvestoClient:
    def __init__(
        self,
        base_url: str,
        private_key: Ed25519PrivateKey | None = None,
        api_key: str | None = None,
        *,
        recv_window: int = 10_000,
        timeout: float = 10.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.private_key = private_key
        self.api_key = api_key
        self.recv_window = recv_window
        self._http = http or httpx.AsyncClient(base_url=self.base_url, timeout=timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object | TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------ plumbing

    async def public(self, method: str, path: str, **params: Any) -> Any:
        response = await self._http.request(method, path, params=_clean(params))
        return _answer(response)

    async def signed(self, method: str, path: str, **params: Any) -> Any:
        if self.private_key is None or self.api_key is None:
            raise RuntimeError("a signed call needs private_key and api_key (register first)")
        query = self._sign(params)
        headers = {API_KEY_HEADER: self.api_key}
        if method in ("POST", "PUT"):
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            response = await self._http.request(method, path, content=query, headers=headers)
        else:
            response = await self._http.request(method, f"{path}?{query}", headers=headers)
        return _answer(response)

    def _sign(self, params: dict[str, Any]) -> str:
        assert self.private_key is not None
        params = {**_clean(params), "timestamp": int(time.time() * 1000), "recvWindow": self.recv_window}
        return sign_params(params, self.private_key)

    # ------------------------------------------------------------------ Investo's own

    async def register(self, name: str, label: str = "default") -> dict[str, Any]:
        """Create an account for this client's key; remembers the API key it gets."""
        if self.private_key is None:
            raise RuntimeError("register needs a private key")
        pem = public_key_to_pem(self.private_key.public_key())
        query = self._sign({"name": name, "publicKey": pem, "label": label})
        response = await self._http.post(
            "/api/v1/investo/users",
            content=query,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        answer: dict[str, Any] = _answer(response)
        self.api_key = answer["apiKey"]
        return answer

    async def claim_demo_funds(self, asset: str | None = None, amount: str | None = None) -> Any:
        return await self.signed("POST", "/api/v1/investo/demo-funds", asset=asset, amount=amount)

    async def state(self) -> Any:
        return await self.public("GET", "/api/v1/investo/state")

    # ------------------------------------------------------------------ Binance dialect

    async def exchange_info(self) -> Any:
        return await self.public("GET", "/api/v3/exchangeInfo")

    async def depth(self, symbol: str, limit: int = 100) -> Any:
        return await self.public("GET", "/api/v3/depth", symbol=symbol, limit=limit)

    async def place_order(self, symbol: str, side: str, type: str, **params: Any) -> Any:
        return await self.signed("POST", "/api/v3/order", symbol=symbol, side=side, type=type, **params)

    async def cancel_order(self, symbol: str, **params: Any) -> Any:
        return await self.signed("DELETE", "/api/v3/order", symbol=symbol, **params)

    async def cancel_all(self, symbol: str) -> Any:
        return await self.signed("DELETE", "/api/v3/openOrders", symbol=symbol)

    async def get_order(self, symbol: str, **params: Any) -> Any:
        return await self.signed("GET", "/api/v3/order", symbol=symbol, **params)

    async def open_orders(self, symbol: str | None = None) -> Any:
        return await self.signed("GET", "/api/v3/openOrders", symbol=symbol)

    async def account(self) -> Any:
        return await self.signed("GET", "/api/v3/account")

    async def trades(self, symbol: str, limit: int = 500) -> Any:
        """Recent trades of a market, oldest first (public)."""
        return await self.public("GET", "/api/v3/trades", symbol=symbol, limit=limit)

    async def my_trades(self, symbol: str, **params: Any) -> Any:
        """Your trades in a market (signed)."""
        return await self.signed("GET", "/api/v3/myTrades", symbol=symbol, **params)

    async def book_ticker(self, symbol: str) -> Any:
        """Best bid and ask of a market, with their quantities (public)."""
        return await self.public("GET", "/api/v3/ticker/bookTicker", symbol=symbol)


def _clean(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def _answer(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        raise ApiError(response.status_code, -1000, response.text[:200]) from None
    if response.status_code >= 400:
        retry_after = _retry_after(response)
        if isinstance(body, dict) and "code" in body:
            raise ApiError(response.status_code, int(body["code"]), str(body.get("msg", "")), retry_after)
        raise ApiError(response.status_code, -1000, str(body)[:200], retry_after)
    return body


def _retry_after(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds (HTTP-date forms are ignored), or None."""
    text = response.headers.get("Retry-After")
    if text is None:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        return None
