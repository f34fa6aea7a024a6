"""Keys made through the admin REST API authenticate on the data plane of the same process (SQLite and
PostgreSQL): a data-plane-only key is refused by the admin API, a revocation is in force within 1 s,
and every denial lands in the audit log with its key id and reason, never the secret."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.adminapi.testing import serve_asgi
from adapters.testdoubles import FunctionUpstream, chat_completion
from gateway.app import create_app
from gateway.config import decode_config
from tests.conftest import capture_usage

ADMIN = {"authorization": "Bearer adm-secret"}
GOV = "/llm-ops/v1/governance"
MSG = [{"role": "user", "content": "hi"}]


def _cfg(database_url: str, tmp_path: Path) -> Any:
    return decode_config({
        "server": {"log_level": "warning"},
        "control": {"database_url": database_url, "data_dir": str(tmp_path), "modules": ["governance"]},
        "providers": [{"name": "fn", "kind": "openai", "base_url": "http://fn.invalid"}],
        "routes": [{"name": "r", "targets": [{"provider": "fn", "model": "m0"}]}],
        "plugins": [{"name": "auth"}],
    })


async def _until(check: Any, within_s: float = 1.0) -> float:
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < within_s, f"not seen within {within_s} s"
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def test_rest_keys_on_the_data_plane(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOPS_ADMIN_KEY", "adm-secret")
    app = create_app(_cfg(database_url, tmp_path), upstreams={"fn": FunctionUpstream(lambda c: chat_completion("ok"))})
    async with serve_asgi(app, lifespan="on") as url, httpx.AsyncClient(base_url=url, timeout=10) as h:
        seen = capture_usage(app.state.gateway)

        async def chat(headers: dict[str, str] | None = None) -> int:
            r = await h.post("/v1/chat/completions", json={"model": "r", "messages": MSG}, headers=headers or {})
            return r.status_code

        assert await chat() == 200  # no data-plane key yet: auth is off (auto)
        team = (await h.post(f"{GOV}/teams", headers=ADMIN, json={"name": "research"})).json()["data"]["id"]
        dev = (await h.post(f"{GOV}/keys", headers=ADMIN,
                            json={"name": "dev", "teamId": team, "roles": ["developer"]})).json()["data"]
        assert await chat() == 200  # an admin-role key does not switch it on
        made = await h.post(f"{GOV}/keys", headers=ADMIN, json={"name": "app", "teamId": team, "roles": ["inference"]})
        assert made.status_code == 201, made.text
        app_key, app_id = made.json()["data"]["key"], made.json()["data"]["id"]
        as_app = {"authorization": f"Bearer {app_key}"}

        async def on() -> bool:
            return await chat() == 401
        await _until(on)
        assert await chat(as_app) == 200
        assert await chat({"api-key": app_key}) == 200
        assert await chat({"authorization": f"Bearer {dev['key']}"}) == 403  # admin roles alone: no data plane
        # the data-plane-only key cannot reach the admin API (the admin guard's RBAC)
        r = await h.get(f"{GOV}/keys", headers=as_app)
        assert r.status_code == 403 and "data-plane only" in r.json()["message"]
        # revoked: refused within 1 s, exactly as an unknown key is
        assert (await h.post(f"{GOV}/keys/{app_id}/revoke", headers=ADMIN)).status_code == 200

        async def revoked() -> bool:
            return await chat(as_app) == 401
        took = await _until(revoked)
        print(f"revocation in force after {took:.3f} s")
        assert await chat() == 401  # the last data-plane key is gone, yet authentication stays on
        await app.state.gateway.usage.drain()
        ok = [r for r in seen if r.status == 200 and r.principal is not None]
        assert {(r.principal.key_id, r.principal.team) for r in ok} == {(app_id, "research")}

        async def audited() -> bool:
            r = await h.get("/llm-ops/v1/audit/logs", headers=ADMIN, params={"action": "auth.denied",
                                                                           "resourceType": "gateway_route"})
            return {e["detail"] for e in r.json()["data"]["items"]} >= {
                "missing key", "key lacks the inference role", "invalid key"}
        await _until(audited, 3.0)
        entries = (await h.get("/llm-ops/v1/audit/logs", headers=ADMIN,
                               params={"action": "auth.denied", "resourceType": "gateway_route"})).json()["data"]
        by_detail = {e["detail"]: e for e in entries["items"]}
        assert by_detail["invalid key"]["actorKeyId"] == app_id  # the public id of the revoked key
        assert by_detail["key lacks the inference role"]["actorKeyId"] == dev["id"]
        assert by_detail["key lacks the inference role"]["actorName"] == "dev"
        assert by_detail["missing key"]["actorKeyId"] is None and by_detail["missing key"]["statusCode"] == 401
        assert all(e["requestId"] and e["resourceId"] == "r" for e in entries["items"])
        # a flood of the same denial: one row now, one aggregate with the count when its window closes
        for _ in range(20):
            assert await chat() == 401
        auth = next(p.instance for p in app.state.gateway.generation.plugins.plugins if p.name == "auth")
        await auth.audit.flush(close_all=True)
        entries = (await h.get("/llm-ops/v1/audit/logs", headers=ADMIN,
                               params={"action": "auth.denied", "resourceType": "gateway_route"})).json()["data"]
        missing = [e for e in entries["items"] if e["detail"].startswith("missing key")]
        assert [e["detail"] for e in missing] == ["missing key (21 more from anonymous)", "missing key"]
        assert missing[0]["after"]["count"] == 21 and len(missing[0]["after"]["requestIds"]) == 5
        text = str(entries)
        assert app_key.split("_", 2)[2] not in text and dev["key"].split("_", 2)[2] not in text
