"""The trading screen's static serving (investo.api.ui): files, index fallback, the not-built page."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from investo.api.ui import WebUi

HTML = {"accept": "text/html,application/xhtml+xml"}


def _client(dist: Path) -> TestClient:
    app = Starlette(routes=[Route("/api/v3/order", lambda r: PlainTextResponse("order"), methods=["POST"])])
    app.router.default = WebUi(app.router.default, dist)
    return TestClient(app)


def test_serves_the_build_after_the_routes(tmp_path: Path) -> None:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text("<html>ui</html>")
    (tmp_path / "assets" / "app-1.js").write_text("console.log(1)")
    (tmp_path.parent / "secret.txt").write_text("secret")
    client = _client(tmp_path)
    assert client.get("/").text == "<html>ui</html>"
    assert client.get("/some/screen", headers=HTML).text == "<html>ui</html>"  # a browser navigation
    assert client.get("/some/screen").status_code == 404  # an API client
    js = client.get("/assets/app-1.js")
    assert js.status_code == 200 and "immutable" in js.headers["cache-control"]
    assert client.get("/assets/missing.js", headers=HTML).status_code == 404
    assert client.get("/api/v3/nothing", headers=HTML).status_code == 404
    assert client.post("/api/v3/order").text == "order"
    assert client.put("/api/v3/order").status_code == 405  # the routes' own errors survive
    assert WebUi(client.app, tmp_path).response("/../secret.txt", True) is None  # never outside the build


def test_without_a_build_it_says_how_to_get_one(tmp_path: Path) -> None:
    page = _client(tmp_path / "absent").get("/")
    assert page.status_code == 200
    assert "UI not built: run ./investo up from a checkout with Node.js" in page.text
