"""The console when things are missing or broken: the store down, no control plane, the console turned off, an
upstream that fails mid-chat. Each is a page in words with the right status, never a traceback."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.adminapi.console_sessions import ConsoleSessions
from adapters.adminapi.testing import serve_asgi
from adapters.store import StoreUnavailable
from gateway.app import create_app
from gateway.config import decode_config

ADMIN = "console-faults-admin-key"


def _cfg(tmp_path: Path, **extra: Any) -> Any:
    return decode_config({
        "server": {"log_level": "warning"}, "metering": {"enabled": False},
        "providers": [{"name": "mock", "kind": "openai", "base_url": "builtin:mock"}],
        "routes": [{"name": "demo", "targets": [{"provider": "mock", "model": "m"}]}],
        "control": {"data_dir": str(tmp_path), "modules": ["governance"]}, **extra})


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOPS_ADMIN_KEY", ADMIN)
    monkeypatch.delenv("LLMOPS_DATABASE_URL", raising=False)


async def _sign_in(client: httpx.AsyncClient, key: str = ADMIN) -> httpx.Response:
    form = await client.get("/console/login")
    token = re.search(r'name="login_csrf" value="([^"]+)"', form.text)
    assert token is not None
    return await client.post("/console/login", data={"login_csrf": token.group(1), "key": key})


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_asgi(create_app(_cfg(tmp_path)), lifespan="on") as url, \
            httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield client


async def test_the_store_down_is_a_503_page_in_words(served: httpx.AsyncClient,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    assert (await _sign_in(served)).status_code == 303

    async def down(self: ConsoleSessions, token: str) -> None:
        raise StoreUnavailable("connection refused")

    monkeypatch.setattr(ConsoleSessions, "open", down)
    page = await served.get("/console")
    assert page.status_code == 503 and "text/html" in page.headers["content-type"]
    assert "The console is unavailable" in page.text and "Traceback" not in page.text
    monkeypatch.undo()
    assert (await served.get("/console")).status_code == 200  # the session outlived the outage


async def test_signing_in_while_the_store_is_down_says_so(served: httpx.AsyncClient,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    async def down(self: ConsoleSessions, *args: Any) -> Any:
        raise StoreUnavailable("connection refused")

    monkeypatch.setattr(ConsoleSessions, "purge", down)
    answer = await _sign_in(served)
    assert answer.status_code == 503 and "Cannot sign in right now" in answer.text
    assert "llmops_console=" not in answer.headers.get("set-cookie", "")


async def test_without_a_control_plane_the_console_says_it_needs_one(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, control={"enabled": False})
    async with serve_asgi(create_app(cfg), lifespan="on") as url, httpx.AsyncClient(base_url=url) as client:
        answer = await _sign_in(client)
        assert answer.status_code == 503 and "needs the control plane" in answer.text


async def test_turned_off_the_console_is_not_there(tmp_path: Path) -> None:
    async with serve_asgi(create_app(_cfg(tmp_path, console={"enabled": False})), lifespan="on") as url, \
            httpx.AsyncClient(base_url=url) as client:
        for path in ("/console", "/console/login", "/console/static/console.js"):
            assert (await client.get(path)).status_code == 404, path


async def test_hostile_and_oversized_input_gets_a_page_not_a_crash(served: httpx.AsyncClient) -> None:
    assert (await _sign_in(served)).status_code == 303
    home = await served.get("/console")
    csrf = re.search(r'data-csrf="([^"]+)"', home.text)
    assert csrf is not None
    hostile = "<script>alert(1)</script>"
    answer = await served.post("/console/governance/keys/new", data={
        "csrf": csrf.group(1), "name": hostile * 50, "teamId": hostile, "roles": "viewer"})
    assert answer.status_code == 422 and hostile not in answer.text and "&lt;script&gt;" in answer.text
    assert (await served.get("/console/governance/audit", params={"page": "-5", "since": hostile})).status_code == 200
    assert (await served.get("/console/static/" + "x" * 5000)).status_code == 404
    assert (await served.get("/console/login", params={"next": hostile})).status_code == 200
