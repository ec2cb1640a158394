"""Fixtures of the end-to-end suite (the machinery is in harness.py).

``server`` (one per module) is parametrised by ``deployment``: every test that uses it runs against
the embedded ``investo up`` (``[embedded]``) and the distributed ``investo up --redis
--database`` (``[distributed]``, marker ``distributed``; ``-m "not distributed"`` skips them).
``busy`` (one per session and deployment, bots ON) likewise. ``make_server`` makes embedded
servers, or servers of the test's ``deployment`` when the test
asks for ``deployment`` too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import SYMBOL, SYMBOLS, Account, Api, Server, busy_server_class, new_user, server_class

DEPLOYMENTS = ("embedded", pytest.param("distributed", marks=pytest.mark.distributed))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """A failed test's report ends with what every running server printed."""
    report = yield
    if report.failed:
        for server in Server._all:
            if server.running:
                report.sections.append((f"investo up on port {server.port} (last lines)", server.tail()))
    return report


@pytest.fixture(scope="session", autouse=True)
def _kill_leftover_servers() -> Iterator[None]:
    yield
    for server in Server._all:
        server.stop()


@pytest.fixture(scope="module", params=DEPLOYMENTS)
def deployment(request: pytest.FixtureRequest) -> str:
    """How the servers of this test run: "embedded" or "distributed"."""
    return str(request.param)


@pytest.fixture
def make_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """A factory of servers for one test (each killed at the test's end), of the test's ``deployment``."""
    made: list[Server] = []
    wanted = request.getfixturevalue("deployment") if "deployment" in request.fixturenames else "embedded"
    kind = server_class(wanted)

    def make(*args: str, start: bool = True) -> Server:
        server = kind(tmp_path / f"data{len(made)}", *args)
        made.append(server)
        return server.start() if start else server

    yield make
    for server in made:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, deployment: str) -> Iterator[Server]:
    """One server for a whole module of read-mostly tests, in each deployment."""
    running = server_class(deployment)(tmp_path_factory.mktemp(f"investo-{deployment}") / "data")
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[Api]:
    client = Api(server.base_url)
    yield client
    client.close()


@pytest.fixture
def make_user(server: Server, api: Api) -> Iterator[Callable[..., Account]]:
    """A factory of fresh funded users on the module's server; their orders are canceled after."""
    made: list[Account] = []

    def make(*, funded: bool = True) -> Account:
        account = new_user(server.base_url, funded=funded)
        made.append(account)
        return account

    yield make
    if server.running:
        for account in made:
            for symbol in SYMBOLS:
                api.signed("DELETE", "/api/v3/openOrders", account, {"symbol": symbol})


@pytest.fixture(scope="session", params=DEPLOYMENTS)
def busy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One `investo up` with its bots ON for the session's busy-market tests, in each deployment.

    Distributed, the public market streams come from `investo ws` (``busy.market_ws(path)``)
    and the user streams from the gateway (``busy.port``), as in production.
    """
    deployment = str(request.param)
    server = busy_server_class(deployment)(tmp_path_factory.mktemp(f"busy-{deployment}") / "data").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def busy_api(busy: Server) -> Iterator[Api]:
    """HTTP to the busy server, once its bots have traded."""
    client = Api(busy.base_url)
    deadline = time.monotonic() + 20
    while not client.public("/api/v3/trades", symbol=SYMBOL, limit=1):
        assert time.monotonic() < deadline, "the bots never traded"
        time.sleep(0.2)
    yield client
    client.close()
