"""Browser tests: Playwright (from PyPI) driving the system's Chromium against a real `investo up`.

No browser is ever downloaded: Playwright is pointed at Debian's ``chromium`` on PATH. Without it
(or without Playwright, or without a built UI) the tests skip with the reason, except in CI
(``CI=true``), where a missing piece is a failure: CI must run them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"browser tests must run in CI: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class UpProcess:
    """`investo up` with the built-in bots on, on a free port and a temporary data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = _free_port()
        self.log_path = data_dir.parent / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "investo.cli",
            "up",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
        ]
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"investo up exited early:\n{self.log_path.read_text()}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                if httpx.get(self.url + "/health", timeout=2).json().get("ready"):
                    return
            time.sleep(0.1)
        self.kill()
        pytest.fail(f"investo up not ready in 30 s:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcess]:
    from investo.api.ui import WEB_DIST

    if not (WEB_DIST / "index.html").is_file():
        _missing("the UI is not built (src/investo/web_dist): run `npm ci && npm run build` in web/")
    up = UpProcess(tmp_path_factory.mktemp("browser") / "data")
    up.start()
    try:
        yield up
    finally:
        up.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium")
    if chromium is None:
        _missing("Debian's chromium is not installed (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed in .venv (pip install -e '.[dev]')")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


PAGE_TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def new_page(browser: Any, server: UpProcess) -> Iterator[Callable[..., Any]]:
    """Open the trading screen in a new browser context (its own IndexedDB): ``new_page(init_script=None)``.

    ``page.problems`` collects console errors and uncaught exceptions; an ``init_script`` runs
    before the page's own scripts. Every context is closed with the module.
    """
    contexts: list[Any] = []

    def make(init_script: str | None = None) -> Any:
        context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
        contexts.append(context)
        if init_script:
            context.add_init_script(init_script)
        page = context.new_page()
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        page.problems = []
        page.on("console", lambda m: m.type == "error" and page.problems.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: page.problems.append(f"pageerror: {e}"))
        page.goto(server.url + "/")
        return page

    try:
        yield make
    finally:
        for context in contexts:
            context.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
