"""The browser's signing key in a real browser against `investo up`: backup, forgetting, no Ed25519.

A visitor signs up with "make a key I can back up", downloads the PEM and trades with it from
Python, then has the browser forget its key, which first closes the user data stream's listen
key. A browser without WebCrypto Ed25519 is told which browsers work and still sees the market.
Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from investo.security.signing import API_KEY_HEADER, load_private_key, private_key_to_pem, sign_params

pytestmark = pytest.mark.slow

# what a browser without WebCrypto Ed25519 does: generateKey rejects the algorithm
NO_ED25519 = """
const generateKey = crypto.subtle.generateKey.bind(crypto.subtle);
crypto.subtle.generateKey = (algorithm, ...rest) =>
  (algorithm === "Ed25519" || algorithm?.name === "Ed25519")
    ? Promise.reject(new DOMException("Unrecognized name.", "NotSupportedError"))
    : generateKey(algorithm, ...rest);
"""


def _signed(server: Any, method: str, path: str, key: Ed25519PrivateKey, api_key: str, **params: str) -> Any:
    """A request signed with ``key`` as any API client would sign it."""
    payload = sign_params({**params, "timestamp": int(time.time() * 1000)}, key)
    headers = {API_KEY_HEADER: api_key}
    if method in ("POST", "PUT"):
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return httpx.request(method, server.url + path, content=payload, headers=headers, timeout=10)
    return httpx.request(method, f"{server.url}{path}?{payload}", headers=headers, timeout=10)


@pytest.fixture(scope="module")
def visitor(new_page: Any) -> Any:
    """A page that records its sign-up requests and its user data stream's listen key answers."""
    page = new_page()
    page.sign_ups = []
    page.listen_key_answers = []
    page.on("request", lambda r: r.url.endswith("/api/v1/investo/users") and page.sign_ups.append(r))
    page.on(
        "response",
        lambda r: (
            r.url.endswith("/api/v3/userDataStream")
            and r.request.method == "POST"
            and page.listen_key_answers.append(r)
        ),
    )
    return page


def test_sign_up_with_a_key_backup_and_export_it(
    visitor: Any, server: Any, artifacts: Path, tmp_path: Path
) -> None:
    page = visitor
    name = f"bob{int(time.time() * 1000) % 10**9}"
    page.fill("#signup-name", name)
    assert page.locator("#backup-warning").is_hidden()
    page.check("#signup-backup")  # opt-in: the key is made extractable, with a warning
    assert "Anyone with the backup file can trade" in page.inner_text("#backup-warning")
    page.locator(".order-panel").screenshot(path=str(artifacts / "07-sign-up-with-key-backup.png"))
    page.click("#signup-button")
    page.wait_for_selector("#me-name")
    assert "Anyone with the backup file can trade" in page.inner_text(".key-box .warning")
    page.locator(".order-panel").screenshot(path=str(artifacts / "08-key-backup-export.png"))

    with page.expect_download() as download:
        page.click("#export-key")
    assert download.value.suggested_filename == f"{name}.pem"
    download.value.save_as(tmp_path / "backup.pem")
    pem = (tmp_path / "backup.pem").read_text()

    key = load_private_key(pem)  # an Ed25519 private key, or ValueError
    assert pem == private_key_to_pem(key)  # byte for byte the PEM `investo user create` writes
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    [sign_up] = page.sign_ups  # the public key registered at sign-up is this key's
    assert parse_qs(sign_up.post_data)["publicKey"] == [base64.b64encode(public).decode()]
    api_key = page.inner_text("#me-api-key")
    answer = _signed(server, "GET", "/api/v3/account", key, api_key)  # the server takes its signatures
    assert answer.status_code == 200, answer.text
    assert any(b["asset"] == "INR" and float(b["free"]) > 0 for b in answer.json()["balances"])
    page.backup = key, api_key
    assert page.problems == []


def test_forget_this_browser_closes_the_listen_key(visitor: Any, server: Any, artifacts: Path) -> None:
    page = visitor
    key, api_key = page.backup
    deadline = time.monotonic() + 15
    while not page.listen_key_answers:
        assert time.monotonic() < deadline, "the page asked for no listen key in 15 s"
        page.wait_for_timeout(100)
    listen_key = page.listen_key_answers[-1].json()["listenKey"]
    alive = _signed(server, "PUT", "/api/v3/userDataStream", key, api_key, listenKey=listen_key)
    assert alive.status_code == 200, alive.text

    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_request(lambda r: r.method == "DELETE" and "/api/v3/userDataStream" in r.url) as closing:
        page.click("#sign-out")
    assert parse_qs(urlsplit(closing.value.url).query)["listenKey"] == [listen_key]
    page.wait_for_selector("#signup-name")
    page.screenshot(path=str(artifacts / "09-forgotten.png"))

    refused = _signed(server, "PUT", "/api/v3/userDataStream", key, api_key, listenKey=listen_key)
    assert (refused.status_code, refused.json()["code"]) == (400, -1125), refused.text
    asked = len(page.listen_key_answers)
    page.reload()  # the key is gone from IndexedDB too
    page.wait_for_selector("#signup-name")
    page.wait_for_selector("#conn.live")
    assert len(page.listen_key_answers) == asked  # and no new user stream was started
    assert page.problems == []


def test_a_browser_without_ed25519_is_told_which_browsers_work(new_page: Any, artifacts: Path) -> None:
    page = new_page(init_script=NO_ED25519)
    message = page.locator("#signup-unsupported").inner_text()
    assert "Ed25519" in message and "Chrome" in message and "Firefox" in message and "Safari" in message
    assert page.locator("#signup-name").count() == 0
    # the market data works all the same
    page.wait_for_selector("#conn.live")
    page.wait_for_selector("#bids .lvl")
    page.wait_for_selector("#asks .lvl")
    page.wait_for_selector("#tape .row")
    page.screenshot(path=str(artifacts / "10-no-ed25519.png"))
    assert page.problems == []
