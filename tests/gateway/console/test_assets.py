"""The console's static files: vendored files match their recorded hashes, hashed URLs are cached for a year,
and nothing outside the static folder can be named."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

from litestar import Litestar, Request, get
from litestar.testing import TestClient

from gateway.console.render import CSP, Assets

STATIC = Path(__file__).resolve().parents[3] / "gateway" / "console" / "static"


def test_every_vendored_file_is_the_recorded_npm_file() -> None:
    manifest = json.loads((STATIC / "vendor" / "VENDOR.json").read_text())["files"]
    on_disk = {p.name for p in (STATIC / "vendor").iterdir() if p.suffix in (".js", ".css")}
    assert on_disk == set(manifest)
    for name, entry in manifest.items():
        assert hashlib.sha256((STATIC / "vendor" / name).read_bytes()).hexdigest() == entry["sha256"], name


def test_hashed_urls_are_immutable_others_revalidate_and_unknown_names_are_absent() -> None:
    assets = Assets(STATIC)

    @get("/a/{name:path}")
    async def serve(request: Request, name: str) -> object:
        found = assets.answer(request, name.lstrip("/"))
        return found if found is not None else {"missing": name}

    url = assets.url("console.js")
    assert url.startswith("/console/static/console.js?v=")
    version = url.split("v=")[1]
    with TestClient(Litestar([serve])) as client:
        hashed = client.get(f"/a/console.js?v={version}")
        assert hashed.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert hashed.headers["content-security-policy"] == CSP
        plain = client.get("/a/console.js")
        assert plain.headers["cache-control"] == "no-cache"
        again = client.get("/a/console.js", headers={"if-none-match": plain.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        assert client.get("/a/vendor/htmx.min.js").status_code == 200
    # names are looked up in the map read at start-up, never joined to a path
    bare = SimpleNamespace(query_params={}, headers={})
    for name in ("../__init__.py", "vendor/../../render.py", "/etc/passwd", "VENDOR.json.bak", "LICENSE.htmx"):
        assert assets.answer(bare, name) is None, name  # type: ignore[arg-type]
