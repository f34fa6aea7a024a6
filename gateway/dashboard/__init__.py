"""The built-in usage and cost page: `GET /dashboard` and its assets under `/dashboard/<file>`.

Plain HTML, CSS and ES modules checked in under `static/`: no front-end build, no CDN, so the page
works air-gapped. The browser reads the cost API (`/llm-ops/v1/observability/...`) itself, with an
admin key the operator pastes; these handlers serve only files and need no key, since the files hold
no data.

The files are read once, when the app is built, into a fixed map: a request can only name one of
them (no path is ever joined from the URL) and serving costs no disk I/O. Every answer carries a
strict Content-Security-Policy (scripts, styles and fetches from this origin only; no inline code),
which is also why the page renders data with `textContent`, never `innerHTML`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litestar import Request, Response, get
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler

__all__ = ["CSP", "dashboard_handlers"]

STATIC_DIR = Path(__file__).parent / "static"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


@dataclass(frozen=True)
class _Asset:
    body: bytes
    media_type: str
    etag: str


def _load(directory: Path) -> dict[str, _Asset]:
    assets: dict[str, _Asset] = {}
    for path in sorted(directory.iterdir()):
        media_type = _TYPES.get(path.suffix)
        if media_type is not None and path.is_file():
            body = path.read_bytes()
            assets[path.name] = _Asset(body, media_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
    return assets


def _answer(request: Request[Any, Any, Any], asset: _Asset) -> Response[bytes]:
    """The file, or 304 when the browser holds this version (`no-cache`: always revalidated,
    so an upgraded gateway never runs a stale script)."""
    headers = {"content-security-policy": CSP, "x-content-type-options": "nosniff",
               "referrer-policy": "no-referrer", "cache-control": "no-cache", "etag": asset.etag}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(b"", status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def dashboard_handlers(directory: Path = STATIC_DIR) -> list[HTTPRouteHandler]:
    """The page and its assets, read from `directory` now (not per request)."""
    assets = _load(directory)
    index = assets["index.html"]

    @get("/dashboard", include_in_schema=False, name="dashboard")
    async def page(request: Request[Any, Any, Any]) -> Response[bytes]:
        return _answer(request, index)

    @get("/dashboard/{name:str}", include_in_schema=False, name="dashboard-asset")
    async def asset(request: Request[Any, Any, Any], name: str) -> Response[bytes]:
        found = assets.get(name)
        if found is None:
            raise NotFoundException(f"Unknown dashboard file {name!r}")
        return _answer(request, found)

    return [page, asset]
