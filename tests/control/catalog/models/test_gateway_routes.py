"""Approved external models are the gateway's routes: published as ``snapshot.routes`` with each model write."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

from adapters.adminapi.testing import serve_asgi
from control.catalog.models.publish import served, to_route
from gateway.app import create_app
from gateway.config import decode_config
from tests.control.catalog._helpers import API

ADMIN = {"authorization": "Bearer adm-secret"}
MSG = [{"role": "user", "content": "hi"}]


def test_which_models_are_served_and_how_kinds_map() -> None:
    def model(**kw: Any) -> Any:
        return SimpleNamespace(**{"id": "mdl_1", "name": "gpt/mini", "type": "external", "status": "approved",
                                  "provider": {"kind": "openai", "baseUrl": "https://x/v1", "model": "gpt-4o",
                                               "apiKeyRef": "env:K"}, "deleted_at": None, **kw})

    assert served(model()) and served(model(status="deprecated"))
    for not_served in (model(status="draft"), model(status="under_review"), model(status="retired"),
                       model(type="base", provider=None), model(deleted_at=1)):
        assert not served(not_served)
    provider, route = to_route(model())
    assert (provider.name, provider.kind, provider.base_urls, provider.api_key_ref) == \
        ("catalog:mdl_1", "openai", ["https://x/v1"], "env:K")
    assert route.name == "gpt/mini" and route.targets[0].provider == "catalog:mdl_1"
    assert route.targets[0].model == "gpt-4o"
    assert to_route(model(provider={"kind": "vllm", "baseUrl": "http://v/v1", "model": "m"}))[0].kind == "openai"
    assert to_route(model(provider={"kind": "ollama", "baseUrl": "http://o", "model": "m"}))[0].kind == "ollama"


async def _until(check: Any, within_s: float = 1.0) -> None:
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < within_s, f"not seen within {within_s} s"
        await asyncio.sleep(0.01)


async def test_an_approved_external_model_is_routed_by_the_gateway(database_url: str, tmp_path: Path,
                                                                   mock: Any) -> None:
    os.environ["LLMOPS_ADMIN_KEY"] = "adm-secret"
    cfg = decode_config({"server": {"log_level": "warning"},
                         "control": {"database_url": database_url, "data_dir": str(tmp_path), "modules": ["catalog"]}})
    try:
        app = create_app(cfg)
        async with serve_asgi(app, lifespan="on") as url, httpx.AsyncClient(base_url=url, timeout=10) as h:
            assert (await h.get("/readyz")).json()["control"]["generations"] == {"routes": 1}  # start-up publish

            async def models() -> list[str]:
                return sorted(m["id"] for m in (await h.get("/v1/models")).json()["data"])

            body = {"name": "team/chat-model", "type": "external", "ownerTeam": "ml",
                    "provider": {"kind": "vllm", "baseUrl": mock.url, "model": "upstream-m"}}
            r = await h.post(f"{API}/models", json=body, headers=ADMIN)
            assert r.status_code == 201, r.text
            model_url = f"{API}/models/{r.json()['data']['id']}"

            async def to(status: str) -> None:
                resp = await h.patch(f"{model_url}/status", json={"status": status}, headers=ADMIN)
                assert resp.status_code == 200, resp.text

            await to("under_review")
            await asyncio.sleep(0.2)
            assert await models() == []  # a draft or a model under review is not routed
            r = await h.post(f"{model_url}/approvals", json={"decision": "approve"}, headers=ADMIN)
            assert r.status_code == 201, r.text
            await to("approved")

            async def listed() -> bool:
                return await models() == ["team/chat-model"]

            await _until(listed)
            r = await h.post("/v1/chat/completions", json={"model": "team/chat-model", "messages": MSG})
            assert r.status_code == 200, r.text
            assert r.json()["model"] == "upstream-m"  # the mock echoes the upstream model it was asked for
            await to("deprecated")  # still served
            await to("retired")

            async def gone() -> bool:
                return await models() == []

            await _until(gone)
            assert (await h.get("/readyz")).json()["control"]["generations"]["routes"] == 4
    finally:
        del os.environ["LLMOPS_ADMIN_KEY"]
