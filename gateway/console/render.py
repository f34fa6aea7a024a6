"""Templates and static files of the console.

Pages are Jinja templates (autoescaped, undefined names fail loudly) rendered on the server; the browser
gets HTML, htmx, uPlot and our own small `console.js`, all from this gateway. Static files are read once,
when the app is built, and served by name from that map (no path from a URL is ever joined); their URLs
carry a content hash, so browsers cache them for a year and an upgrade can never serve a stale one.
Every answer carries a strict Content-Security-Policy: no inline script or style, nothing from
elsewhere, no framing.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from litestar import Request, Response

__all__ = ["CSP", "PAGE_HEADERS", "Assets", "Templates", "fmt_time"]

HERE = Path(__file__).parent
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
PAGE_HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
                "cache-control": "no-store", "x-frame-options": "DENY"}
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml",
          ".png": "image/png", ".json": "application/json"}


@dataclass(frozen=True)
class _Asset:
    body: bytes
    media_type: str
    digest: str


class Assets:
    """The static files under `static/` (and `static/vendor/`), by name, with their content hashes."""

    def __init__(self, directory: Path = HERE / "static") -> None:
        self._files: dict[str, _Asset] = {}
        for path in sorted(directory.rglob("*")):
            media_type = _TYPES.get(path.suffix)
            if path.is_file() and media_type is not None:
                body = path.read_bytes()
                name = path.relative_to(directory).as_posix()
                self._files[name] = _Asset(body, media_type, hashlib.sha256(body).hexdigest()[:16])

    def url(self, name: str) -> str:
        """`/console/static/<name>?v=<hash>`; an unknown name is a template bug, so it fails."""
        return f"/console/static/{name}?v={self._files[name].digest}"

    def answer(self, request: Request[Any, Any, Any], name: str) -> Response[bytes] | None:
        found = self._files.get(name)
        if found is None:
            return None
        etag = f'"{found.digest}"'
        immutable = request.query_params.get("v") == found.digest
        headers = {"content-security-policy": CSP, "x-content-type-options": "nosniff", "etag": etag,
                   "cache-control": "public, max-age=31536000, immutable" if immutable else "no-cache"}
        if request.headers.get("if-none-match") == etag:
            return Response(b"", status_code=304, headers=headers)
        return Response(found.body, media_type=found.media_type, headers=headers)


def fmt_time(value: Any) -> str:
    """An ISO timestamp (or epoch seconds) as `YYYY-MM-DD HH:MM:SS` UTC; anything else as given."""
    if value in (None, ""):
        return "—"
    try:
        if isinstance(value, int | float):
            moment = datetime.fromtimestamp(value, UTC)
        else:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (ValueError, OverflowError, OSError):
        return str(value)


def fmt_usd(value: Any) -> str:
    """Money as the API gives it (a decimal string or number); `—` when unknown."""
    if value in (None, ""):
        return "—"
    try:
        amount = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(amount):
        return str(value)
    return f"${amount:,.6f}".rstrip("0").rstrip(".") if abs(amount) < 1 else f"${amount:,.2f}"


def fmt_num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if math.isfinite(value) else str(value)
    return str(value)


def with_query(base: str, params: Mapping[str, Any], **changes: Any) -> str:
    """`base?...` with `params` (empty values dropped) updated by `changes`: links that keep the filters."""
    merged = {**{k: v for k, v in params.items()}, **changes}
    query = urlencode([(k, v) for k, v in merged.items() if v not in (None, "")])
    return f"{base}?{query}" if query else base


class Templates:
    """The Jinja environment of the console, with its filters and globals."""

    def __init__(self, assets: Assets, directory: Path = HERE / "templates") -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(directory), autoescape=True, undefined=jinja2.StrictUndefined,
            trim_blocks=True, lstrip_blocks=True, auto_reload=False,
        )
        self.env.globals.update(static=assets.url, with_query=with_query)
        self.env.filters.update(time=fmt_time, usd=fmt_usd, num=fmt_num)

    def render(self, name: str, context: Mapping[str, Any]) -> str:
        return self.env.get_template(name).render(context)
