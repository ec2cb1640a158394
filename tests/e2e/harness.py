"""The end-to-end harness: a real `investo up` process on a free loopback port, talked to over HTTP.

* :class:`Server` starts ``python -m investo.cli up`` with a temporary data dir, waits for
  ``/health`` to report ready, and can ``kill9()`` (SIGKILL), ``terminate()`` (SIGTERM, graceful)
  and ``restart()`` on the same data dir. The process's output goes to a file that every
  failure message quotes. Every process started here is killed by a finalizer (conftest.py).
* :class:`DistributedServer` is the same API run distributed: ``investo up --redis --database``
  (2 matching and 2 accounts shards, every role a process of its own behind one gateway) on a
  fresh Redis namespace and a fresh Postgres database, both deleted when it stops. The suites
  that take the ``server`` fixture run against both (ids ``[embedded]`` and ``[distributed]``).
* :class:`Api` is a small synchronous HTTP client that returns raw responses (so tests can look
  at statuses, headers and error bodies) and signs requests exactly as a client would
  (:func:`investo.security.signing.sign_params`), with knobs to break the signature on purpose.
* :func:`new_user` / :func:`anew_user` create an account with the Python client
  (:class:`investo.client.InvestoClient`: register + claim_demo_funds).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import functools
import inspect
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from investo.client import InvestoClient
from investo.security.signing import API_KEY_HEADER, generate_key_pair, private_key_to_pem, sign_params
from postgres_fixtures import fresh_database
from redis_fixtures import redis_namespace_url
from serving import free_port

READY_TIMEOUT_S = 20.0
SYMBOL = "TATAINR"  # tick 0.05, lot 1, min notional 10, fees 10/20 bps (maker/taker)
OTHER_SYMBOL = "ZOMATOINR"  # tick 0.01
SYMBOLS = (SYMBOL, OTHER_SYMBOL)
DEMO_INR = Decimal("1000000")  # a day's demo funds (investo.node.default_demo_limits)
DEMO_SHARES = Decimal("10000")
MAKER_BPS, TAKER_BPS = 10, 20
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BUSY_SECONDS = float(os.environ.get("INVESTO_BUSY_SECONDS", "60"))  # a busy minute of bot traffic


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, get SIGKILL when the test process dies (no orphans)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            PR_SET_PDEATHSIG = 1
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@functools.cache
def quiet_flags() -> tuple[str, ...]:
    """Flags that keep the exchange to the test alone: no built-in bots (when `investo up` has them).

    Every figure these tests check (book, trades, balances, state hash) assumes nobody else trades.
    """
    from investo.cli import up

    return ("--no-bots",) if "bots" in inspect.signature(up).parameters else ()


# --------------------------------------------------------------------------------------------
# The server process
# --------------------------------------------------------------------------------------------


class Server:
    """One `investo up` subprocess over a data dir that outlives it (see the module docstring)."""

    _all: ClassVar[list[Server]] = []  # every Server ever made, for the session's last-resort cleanup
    deployment: ClassVar[str] = "embedded"
    ready_timeout: ClassVar[float] = READY_TIMEOUT_S

    def __init__(self, data_dir: Path, *args: str, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.args = list(args)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log_path = data_dir.with_name(data_dir.name + "-server.log")
        self._log_start = 0  # where the current process's output begins in log_path
        Server._all.append(self)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def market_port(self) -> int:
        """Where the public market streams are served (the API's port; ``investo ws``'s when distributed)."""
        return self.port

    def market_ws(self, path: str) -> str:
        """A public market stream's URL (``/ws/<stream>``, ``/stream?streams=…``)."""
        return f"ws://127.0.0.1:{self.market_port}{path}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "investo.cli", "up",
            "--port", str(self.port), "--data-dir", str(self.data_dir), *quiet_flags(), *self.args,
        ]  # fmt: skip

    def start(self) -> Server:
        assert not self.running, "already running"
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self._log_start = out.tell()
            out.write(f"\n=== start #{self.starts + 1}: {' '.join(self.command())}\n".encode())
            out.flush()
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
            self.proc = subprocess.Popen(
                self.command(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                preexec_fn=_die_with_parent,
            )
        self.starts += 1
        self.wait_ready()
        return self

    def output(self, *, all_runs: bool = False) -> str:
        """What the server printed (this run only, unless ``all_runs``)."""
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return ""
        return data[0 if all_runs else self._log_start :].decode("utf-8", errors="replace")

    def wait_ready(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait for ``/health`` to say ready; fail with the server's output otherwise."""
        assert self.proc is not None
        timeout = timeout or self.ready_timeout
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            code = self.proc.poll()
            if code is not None:
                pytest.fail(f"investo up exited with {code} before it was ready:\n{self.output()}")
            try:
                response = httpx.get(self.base_url + "/health", timeout=2)
                body = response.json()
                if response.status_code == 200 and body.get("ready") is True:
                    return dict(body)
                last = f"HTTP {response.status_code} {body}"
            except (httpx.TransportError, ValueError) as error:
                last = repr(error)
            if time.monotonic() > deadline:
                self.kill9()
                pytest.fail(f"investo up not ready after {timeout:.0f} s ({last}):\n{self.output()}")
            time.sleep(0.05)

    def kill9(self) -> None:
        """SIGKILL: no snapshot, no close, no flush; whatever was in flight is cut off."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait for a graceful exit (snapshot, close); the exit status."""
        assert self.proc is not None and self.proc.poll() is None, "not running"
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            pytest.fail(f"investo up did not stop within {timeout:.0f} s of SIGTERM:\n{self.output()}")

    def restart(self) -> Server:
        """Start again on the same data dir and port (the old process must be gone)."""
        assert not self.running, "stop it first (kill9 or terminate)"
        return self.start()

    def stop(self) -> None:
        """Cleanup: kill whatever is still running."""
        self.kill9()

    def tail(self, lines: int = 60) -> str:
        """The end of everything this server printed (for failure reports)."""
        return "\n".join(self.output(all_runs=True).splitlines()[-lines:])


class DistributedServer(Server):
    """`investo up --redis --database` on its own Redis namespace and Postgres database (module docstring)."""

    deployment: ClassVar[str] = "distributed"
    ready_timeout: ClassVar[float] = 90.0  # six processes start on a shared 2-core machine

    def __init__(self, data_dir: Path, *args: str, port: int | None = None) -> None:
        super().__init__(data_dir, *args, port=port)
        self.ws_port = free_port()
        self._resources = contextlib.ExitStack()
        self.redis_url = self._resources.enter_context(redis_namespace_url())
        self.database_url = self._resources.enter_context(fresh_database("investo_e2e"))

    def command(self) -> list[str]:
        return [
            *super().command(), "--redis", self.redis_url, "--database", self.database_url,
            "--matching-shards", "2", "--accounts-shards", "2", "--ws-port", str(self.ws_port),
        ]  # fmt: skip

    @property
    def market_port(self) -> int:
        return self.ws_port

    def wait_ready(self, timeout: float | None = None) -> dict[str, Any]:
        """The gateway is ready, and the supervisor has said so (its start-up line)."""
        health = super().wait_ready(timeout)
        deadline = time.monotonic() + 10
        while "Investo is up (distributed)" not in self.output():
            if time.monotonic() > deadline:
                pytest.fail(f"no start-up line from investo up:\n{self.output()}")
            time.sleep(0.05)
        return health

    def stop(self) -> None:
        """Stop the whole run (in order, so nothing writes after its data is gone), then delete its data."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._resources.close()


def server_class(deployment: str) -> type[Server]:
    return DistributedServer if deployment == "distributed" else Server


class BusyServer(Server):
    """`investo up` with its built-in bots running: a busy market (for stream tests)."""

    def command(self) -> list[str]:
        return [arg for arg in super().command() if arg != "--no-bots"]


class DistributedBusyServer(DistributedServer):
    """`investo up --redis --database` with its bots running: the market streams come from `investo ws`."""

    def command(self) -> list[str]:
        return [arg for arg in super().command() if arg != "--no-bots"]


def busy_server_class(deployment: str) -> type[Server]:
    return DistributedBusyServer if deployment == "distributed" else BusyServer


# --------------------------------------------------------------------------------------------
# Accounts
# --------------------------------------------------------------------------------------------


_names = itertools.count(1)


def unique_name(prefix: str = "u") -> str:
    return f"{prefix}{next(_names)}-{uuid.uuid4().hex[:6]}"


@dataclass
class Account:
    name: str
    private_key: Ed25519PrivateKey
    api_key: str
    user_id: int
    funds: list[dict[str, str]] = field(default_factory=list)

    @property
    def pem(self) -> str:
        """The PKCS#8 PEM of the private key (what ccxt takes as ``secret``)."""
        return private_key_to_pem(self.private_key)


async def anew_user(base_url: str, name: str | None = None, *, funded: bool = True) -> Account:
    """Register a new account with the Python client and (by default) claim today's demo funds."""
    private_key, _ = generate_key_pair()
    async with InvestoClient(base_url, private_key) as client:
        answer = await client.register(name or unique_name())
        funds = (await client.claim_demo_funds())["deposits"] if funded else []
    return Account(answer["name"], private_key, answer["apiKey"], answer["userId"], funds)


def new_user(base_url: str, name: str | None = None, *, funded: bool = True) -> Account:
    """:func:`anew_user` from synchronous code (also from inside a running event loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(anew_user(base_url, name, funded=funded))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, anew_user(base_url, name, funded=funded)).result()


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------

_ts_lock = threading.Lock()
_last_ts = [0]


def fresh_timestamp() -> int:
    """Milliseconds now, strictly increasing in this process.

    Ed25519 signatures are deterministic, so the same request signed twice in one millisecond
    is byte-identical and the server's replay guard (rightly) refuses the second one.
    """
    with _ts_lock:
        now = max(time.time_ns() // 1_000_000, _last_ts[0] + 1)
        _last_ts[0] = now
        return now


def sign(account: Account, params: Mapping[str, str | int], **extra: str | int) -> str:
    """``params`` + timestamp (+ anything in ``extra``), signed: a query string or form body."""
    full: dict[str, str | int] = {**params}
    full.setdefault("timestamp", fresh_timestamp())
    full.update(extra)
    return sign_params(full, account.private_key)


class Api:
    """Raw HTTP to one server: every method returns the :class:`httpx.Response`."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=15)

    def close(self) -> None:
        self.http.close()

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> httpx.Response:
        return self.http.get(path, params=dict(params or {}))

    def signed(
        self,
        method: str,
        path: str,
        account: Account,
        params: Mapping[str, Any] | None = None,
        *,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: str | int,
    ) -> httpx.Response:
        """A correctly signed request: the form body for POST/PUT, the query string otherwise."""
        return self.send(method, path, sign(account, params or {}, **extra), account, api_key, headers)

    def send(
        self,
        method: str,
        path: str,
        signed_text: str,
        account: Account | None,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send an already signed text as body (POST/PUT) or query (others)."""
        all_headers = {API_KEY_HEADER: api_key or (account.api_key if account else "")}
        all_headers.update(headers or {})
        if all_headers[API_KEY_HEADER] == "":
            del all_headers[API_KEY_HEADER]
        if method in ("POST", "PUT"):
            all_headers["Content-Type"] = "application/x-www-form-urlencoded"
            return self.http.request(method, path, content=signed_text.encode(), headers=all_headers)
        return self.http.request(method, f"{path}?{signed_text}", headers=all_headers)

    # --- shortcuts that expect success ---------------------------------------------------

    def public(self, path: str, **params: Any) -> Any:
        return ok(self.get(path, params))

    def call(self, method: str, path: str, account: Account, **params: Any) -> Any:
        return ok(self.signed(method, path, account, params))

    def order(self, account: Account, symbol: str = SYMBOL, **params: Any) -> Any:
        return self.call("POST", "/api/v3/order", account, symbol=symbol, **params)

    def limit(
        self, account: Account, side: str, qty: str, price: str, symbol: str = SYMBOL, **params: Any
    ) -> Any:
        params.setdefault("timeInForce", "GTC")
        return self.order(account, symbol, side=side, type="LIMIT", quantity=qty, price=price, **params)

    def get_order(self, account: Account, symbol: str = SYMBOL, **params: Any) -> Any:
        return self.call("GET", "/api/v3/order", account, symbol=symbol, **params)

    def open_orders(self, account: Account, symbol: str | None = SYMBOL) -> Any:
        return self.call("GET", "/api/v3/openOrders", account, **({"symbol": symbol} if symbol else {}))

    def cancel_all(self, account: Account, symbol: str = SYMBOL) -> Any:
        return self.call("DELETE", "/api/v3/openOrders", account, symbol=symbol)

    def balances(self, account: Account) -> dict[str, tuple[Decimal, Decimal]]:
        body = self.call("GET", "/api/v3/account", account)
        return {b["asset"]: (Decimal(b["free"]), Decimal(b["locked"])) for b in body["balances"]}

    def state(self) -> dict[str, Any]:
        return dict(self.public("/api/v1/investo/state"))

    def depth(self, symbol: str = SYMBOL, limit: int = 100) -> Any:
        return self.public("/api/v3/depth", symbol=symbol, limit=limit)


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, (
        f"{response.request.method} {response.request.url.path} → {response.status_code} {response.text}"
    )
    return response.json()


def binance_error(response: httpx.Response, code: int | None = None, status: int | None = None) -> dict:
    """Assert a Binance-style error: status 4xx, JSON ``{"code": int, "msg": str}``."""
    where = f"{response.request.method} {response.request.url.path}"
    assert 400 <= response.status_code < 500, f"{where} → {response.status_code} {response.text}"
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict), body
    assert set(body) == {"code", "msg"}, body
    assert type(body["code"]) is int and type(body["msg"]) is str and body["msg"], body
    if code is not None:
        assert body["code"] == code, f"{where} → {body}, expected code {code}"
    if status is not None:
        assert response.status_code == status, f"{where} → {response.status_code} {body}"
    return dict(body)
