"""The trading screen: the built web UI (``web/`` → ``src/investo/web_dist``) served at ``/``.

Installed as the router's *default* handler (what runs when no route matches), not as a
mount: a mount at ``/`` would match every path and turn the API's 405s (``PUT /api/v3/order``)
into 404s. So every API, WebSocket, docs and operations route wins, with its own errors.

* a file of the build is served (hashed ``/assets/*`` cached for good, the rest ``no-cache``);
* ``/`` and, for a browser navigation (``Accept: text/html``), any other path without an
  extension get ``index.html``;
* anything else (``/api/...``, other methods, API clients' unknown paths) goes to the router's
  usual not-found, i.e. Binance's JSON 404.

Without a build, ``/`` answers a plain page saying how to get one.
"""

from __future__ import annotations

from pathlib import Path

from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

WEB_DIST = Path(__file__).resolve().parent.parent / "web_dist"
NOT_BUILT = (
    "<!doctype html><meta charset=utf-8><title>Investo</title>"
    "<body style='font-family:system-ui;background:#0b0e11;color:#e6e9ee;padding:2em'>"
    "<h1>Investo</h1><p>UI not built: run ./investo up from a checkout with Node.js.</p>"
    "<p>The API is up: see <a style='color:#f0b90b' href='/docs'>/docs</a>.</p>"
)


class WebUi:
    """An ASGI app serving ``dist``; whatever it does not serve goes to ``fallback``."""

    def __init__(self, fallback: ASGIApp, dist: Path = WEB_DIST) -> None:
        self.fallback = fallback
        self.dist = dist.resolve()

    @property
    def built(self) -> bool:
        return (self.dist / "index.html").is_file()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = None
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            accept = dict(scope["headers"]).get(b"accept", b"")
            response = self.response(scope["path"], b"text/html" in accept)
        if response is None:
            await self.fallback(scope, receive, send)
        else:
            await response(scope, receive, send)

    def response(self, path: str, wants_html: bool) -> Response | None:
        if path.startswith("/api/"):
            return None
        if not self.built:
            return HTMLResponse(NOT_BUILT) if path in ("/", "/index.html") else None
        rel = path.lstrip("/")
        if rel:
            candidate = (self.dist / rel).resolve()
            if candidate.is_relative_to(self.dist) and candidate.is_file():
                cache = "public, max-age=31536000, immutable" if rel.startswith("assets/") else "no-cache"
                return FileResponse(candidate, headers={"Cache-Control": cache})
            if not wants_html or "." in rel.rsplit("/", 1)[-1]:
                return None
        return FileResponse(self.dist / "index.html", headers={"Cache-Control": "no-cache"})
