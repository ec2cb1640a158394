"""The trading screen in a real browser against `investo up` with its market-making bots.

One page (one browser context, so IndexedDB persists) walks through what a visitor does:
watch the market, sign up, rest a limit order and cancel it, take liquidity with a market
order, reload, read the order history, and survive a server restart (kill -9 and start again:
the page shows it reconnecting, then live, with the book resynced to /api/v3/depth).
Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def page(new_page: Any) -> Any:
    return new_page()


def _text(page: Any, selector: str) -> str:
    return str(page.locator(selector).first.inner_text())


def _wait_change(page: Any, read: Any, timeout_s: float = 15.0) -> None:
    before = read()
    deadline = time.monotonic() + timeout_s
    while read() == before:
        assert time.monotonic() < deadline, f"no change from {before!r} in {timeout_s} s"
        page.wait_for_timeout(100)


def test_market_data_is_live(page: Any, artifacts: Path) -> None:
    page.wait_for_selector("#conn.live")
    assert page.locator("#market option").count() >= 2  # markets from exchangeInfo
    page.wait_for_selector("#bids .lvl")
    page.wait_for_selector("#asks .lvl")
    page.wait_for_selector("#tape .row")
    page.wait_for_selector("#chart canvas")
    assert re.fullmatch(r"\d+\.\d{2}", _text(page, "#last")), _text(page, "#last")
    assert _text(page, "#spread").startswith("Spread ")
    # the bots trade: book, tape and chart move without a reload
    _wait_change(page, lambda: page.locator("#book-state").get_attribute("data-update-id"))
    _wait_change(page, lambda: page.locator("#tape .row").first.get_attribute("data-id"))
    assert page.locator("a[href='https://www.tradingview.com/']").count() >= 1
    page.screenshot(path=str(artifacts / "01-market-1280x800.png"))
    # interval picker: 5m candles load
    page.click("#intervals button[data-interval='5m']")
    page.wait_for_selector("#intervals button.active[data-interval='5m']")
    page.wait_for_selector("#conn.live")
    assert page.problems == []


def test_sign_up_rest_and_cancel_a_limit_order(page: Any, artifacts: Path) -> None:
    page.fill("#signup-name", f"alice{int(time.time() * 1000) % 10**9}")
    page.click("#signup-button")
    page.wait_for_selector("#me-name")
    page.wait_for_selector("#balances tr[data-asset='INR']")
    assert float(page.locator("#balances tr[data-asset='INR'] .free").inner_text()) > 0

    # a buy two ticks under the best bid rests in the book
    # clicking a level fills the form (a bid: sell there); read and click in one step of the
    # page, as the bots keep re-drawing the book
    clicked = page.evaluate(
        "() => { const level = document.querySelector('#bids .lvl');"
        " level.click(); return level.dataset.price; }"
    )
    best_bid = float(clicked)
    price = f"{best_bid - 0.10:.2f}"
    assert page.input_value("#price") == f"{best_bid:.2f}"
    page.click(".side.buy")
    page.fill("#price", "949.53")
    page.fill("#qty", "7")
    page.click("#submit-order")
    assert "multiple of the tick 0.05" in _text(page, "#order-problems")  # checked before sending
    page.fill("#price", price)
    assert "fee up to" in _text(page, "#estimate")
    page.click("#submit-order")
    page.wait_for_selector("#order-result.ok")
    order_id = re.search(r"Order (\d+)", _text(page, "#order-result")).group(1)  # type: ignore[union-attr]
    row = page.locator(f"#open-orders tr[data-order-id='{order_id}']")
    row.wait_for()
    page.wait_for_selector(f"#bids .lvl[data-price='{price}']")
    qty_there = float(page.locator(f"#bids .lvl[data-price='{price}'] span").nth(1).inner_text())
    assert qty_there >= 7
    page.screenshot(path=str(artifacts / "02-resting-order.png"))

    row.locator("button.cancel").click()
    row.wait_for(state="detached")
    # a server error is shown in words
    page.fill("#price", "99999.95")
    page.fill("#qty", "999999")
    page.click("#submit-order")
    page.wait_for_selector("#order-result.error")
    assert re.search(r"[a-z]{4,}.*\(code -\d+\)", _text(page, "#order-result")), _text(page, "#order-result")
    assert all("status of 400" in p for p in page.problems), page.problems  # Chromium logs the refused order
    page.problems.clear()


def test_market_order_fills(page: Any, artifacts: Path) -> None:
    def tata() -> float:
        return float(page.locator("#balances tr[data-asset='TATA'] .free").inner_text())

    page.wait_for_selector("#balances tr[data-asset='TATA']")
    before = tata()
    page.check("input[name='type'][value='MARKET']")
    page.click(".side.buy")
    page.fill("#qty", "3")
    page.click("#submit-order")
    page.wait_for_selector("#order-result.ok")
    assert "filled 3" in _text(page, "#order-result")
    deadline = time.monotonic() + 10
    while tata() != before + 3:
        assert time.monotonic() < deadline, f"TATA balance {tata()} after buying 3 from {before}"
        page.wait_for_timeout(200)
    page.wait_for_selector("#tape .row.up >> text=3")  # our buy, coloured as a buyer's trade
    order_id = re.search(r"Order (\d+)", _text(page, "#order-result")).group(1)  # type: ignore[union-attr]
    page.wait_for_selector(f"#fills tr[data-order-id='{order_id}']")  # from the user data stream
    page.screenshot(path=str(artifacts / "03-after-market-buy.png"))
    assert page.problems == []


def test_reload_keeps_the_account(page: Any, artifacts: Path) -> None:
    name = _text(page, "#me-name")
    page.reload()
    page.wait_for_selector("#me-name")
    assert _text(page, "#me-name") == name
    page.wait_for_selector("#balances tr[data-asset='INR']")
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_selector("#conn.live")
    page.wait_for_timeout(500)
    page.screenshot(path=str(artifacts / "04-phone-390.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 800})
    assert page.problems == []


def test_order_history(page: Any, artifacts: Path) -> None:
    # from allOrders after the reload: the limit order canceled and the market order filled above
    page.wait_for_selector("#order-history tr[data-status='CANCELED']")
    page.wait_for_selector("#order-history tr[data-status='FILLED']")
    # live from the user stream: an order leaving the open orders goes on top of the history
    best_bid = float(page.locator("#bids .lvl").first.get_attribute("data-price"))
    page.check("input[name='type'][value='LIMIT']")
    page.click(".side.buy")
    page.fill("#price", f"{best_bid - 5:.2f}")
    page.fill("#qty", "2")
    page.click("#submit-order")
    page.wait_for_selector("#order-result.ok")
    order_id = re.search(r"Order (\d+)", _text(page, "#order-result")).group(1)  # type: ignore[union-attr]
    row = page.locator(f"#open-orders tr[data-order-id='{order_id}']")
    row.locator("button.cancel").click()
    row.wait_for(state="detached")
    top = page.locator(f"#order-history tr:first-child[data-order-id='{order_id}'][data-status='CANCELED']")
    top.wait_for()
    assert "0 / 2" in top.inner_text() and "canceled" in top.inner_text()
    # this key was made non-extractable (the default): no export, and the page says why
    assert "cannot be exported" in _text(page, "#key-not-exportable")
    assert page.locator("#export-key").count() == 0
    page.locator(".history-panel").screenshot(path=str(artifacts / "06-order-history.png"))
    page.screenshot(path=str(artifacts / "06-signed-in-1280x800.png"))
    assert page.problems == []


def _book_levels(page: Any, levels: int) -> dict[str, list[list[float]]]:
    """The page's top price levels, best first, as [price, qty] (asks are shown best last)."""
    script = """n => {
        const read = sel => [...document.querySelectorAll(sel)].map(
            r => [Number(r.dataset.price), Number(r.children[1].textContent)]);
        return { bids: read('#bids .lvl').slice(0, n), asks: read('#asks .lvl').reverse().slice(0, n) };
    }"""
    return dict(page.evaluate(script, levels))


def _depth_levels(server: Any, symbol: str, levels: int) -> dict[str, list[list[float]]]:
    params: dict[str, Any] = {"symbol": symbol, "limit": levels}
    depth = httpx.get(f"{server.url}/api/v3/depth", params=params, timeout=5).json()
    return {side: [[float(p), float(q)] for p, q in depth[side]] for side in ("bids", "asks")}


def test_reconnects_and_resyncs_after_the_server_restarts(page: Any, server: Any, artifacts: Path) -> None:
    page.wait_for_selector("#conn.live")
    symbol = page.input_value("#market")
    server.kill()  # SIGKILL: the server side of the WebSocket goes away without a close frame
    page.wait_for_selector("#conn.reconnecting")
    page.screenshot(path=str(artifacts / "05-reconnecting.png"))
    server.start()  # same port, same data dir
    page.wait_for_selector("#conn.live", timeout=30_000)
    page.wait_for_selector("#bids .lvl")
    _wait_change(page, lambda: page.locator("#book-state").get_attribute("data-update-id"))
    # the resynced book is the server's: the top levels equal /api/v3/depth (the bots keep
    # quoting, so a page read and a REST read may straddle a change: retry for a while)
    deadline = time.monotonic() + 20
    while True:
        seen, truth = _book_levels(page, 5), _depth_levels(server, symbol, 5)
        if seen == truth and seen["bids"] and seen["asks"]:
            break
        assert time.monotonic() < deadline, f"page book {seen} != /api/v3/depth {truth} for 20 s"
        page.wait_for_timeout(150)
    page.screenshot(path=str(artifacts / "05-after-reconnect.png"))
    # the browser logs failed connections while the server is down; nothing else may go wrong
    assert [p for p in page.problems if "WebSocket" not in p and "Failed to load" not in p] == []
