"""`/dashboard` serves fixed files with a strict CSP and no data (the browser fetches that itself)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from litestar import Litestar

from gateway.dashboard import CSP, STATIC_DIR, dashboard_handlers
from tests.gateway.inprocess import fn_config, in_process


async def test_page_and_assets_carry_the_csp_and_their_types() -> None:
    async with in_process(fn_config()) as (_, client):
        page = await client.get("/dashboard")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"] == CSP
        assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP and "unsafe-eval" not in CSP
        assert page.headers["x-content-type-options"] == "nosniff"
        assert (await client.get("/dashboard/")).text == page.text  # a trailing slash is the same page
        # every file the page links to is served, with its own type and the same policy
        linked = re.findall(r'(?:src|href)="(/dashboard/[^"]+)"', page.text)
        assert sorted(linked) == ["/dashboard/app.js", "/dashboard/dashboard.css", "/dashboard/favicon.svg"]
        for path in linked:
            r = await client.get(path)
            assert r.status_code == 200, path
            assert r.headers["content-security-policy"] == CSP
            assert r.content == (STATIC_DIR / path.rsplit("/", 1)[1]).read_bytes()
        assert (await client.get("/dashboard/app.js")).headers["content-type"].startswith("text/javascript")
        assert (await client.get("/dashboard/dashboard.css")).headers["content-type"].startswith("text/css")


async def test_the_page_has_no_inline_script_or_style_and_modules_import_only_siblings() -> None:
    """What the CSP would block in the browser, caught here too; and no network but this origin."""
    index = (STATIC_DIR / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", index)  # every script has a src
    assert "<style" not in index and " style=" not in index and not re.search(r"\son[a-z]+=", index)
    for js in STATIC_DIR.glob("*.js"):
        text = js.read_text()
        assert "innerHTML" not in text and "insertAdjacentHTML" not in text and "eval(" not in text, js.name
        for target in re.findall(r'from\s+"([^"]+)"', text):
            assert re.fullmatch(r"\./[a-z]+\.js", target) and (STATIC_DIR / target[2:]).is_file(), (js.name, target)
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", "".join(p.read_text() for p in STATIC_DIR.iterdir()))


async def test_revalidation_answers_304_and_unknown_files_404() -> None:
    async with in_process(fn_config()) as (_, client):
        first = await client.get("/dashboard/app.js")
        etag = first.headers["etag"]
        again = await client.get("/dashboard/app.js", headers={"if-none-match": etag})
        assert again.status_code == 304 and again.content == b""
        assert first.headers["cache-control"] == "no-cache"  # always revalidated: no stale script after an upgrade
        for path in ["/dashboard/nope.js", "/dashboard/..%2Fapp.py", "/dashboard/../gateway/app.py",
                     "/dashboard/%2e%2e%2f__init__.py", "/dashboard/static/app.js"]:
            r = await client.get(path)
            assert r.status_code == 404, path
            assert "error" in r.json()


async def test_only_known_file_types_are_served(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<p>x</p>")
    (tmp_path / "notes.txt").write_text("private")
    (tmp_path / "x.js").write_text("1")
    app = Litestar(route_handlers=dashboard_handlers(tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:  # type: ignore[arg-type]
        assert (await client.get("/dashboard")).text == "<p>x</p>"
        assert (await client.get("/dashboard/x.js")).status_code == 200
        assert (await client.get("/dashboard/notes.txt")).status_code == 404
    (tmp_path / "index.html").unlink()
    with pytest.raises(KeyError):
        dashboard_handlers(tmp_path)  # no index.html, no page: fails when the app is built, not per request
