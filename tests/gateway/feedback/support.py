"""The feedback tests' gateway: a real app on a loopback socket with a store, keys made through the admin
REST API, and an A/B stand-in plug-in that puts every request in variant ``v2``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from adapters.adminapi.testing import serve_asgi
from adapters.dataplane import feedback
from adapters.gateway_plugins import RequestContext
from adapters.store import Store
from adapters.testdoubles import FunctionUpstream, chat_completion
from gateway.app import create_app
from gateway.config import decode_config

ADMIN_KEY = "adm-secret"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
GOV = "/llm-ops/v1/governance"
CHAT = {"model": "r", "messages": [{"role": "user", "content": "hi"}]}


class ArmPlugin:
    """Stands in for the experiments plug-in: every request runs in experiment ``exp-1``, variant ``v2`` (or the
    ``x-test-variant`` header's), episode ``x-test-episode`` when the header names one."""

    name = "arm"

    def on_request(self, ctx: RequestContext) -> None:
        ctx.experiment, ctx.variant = "exp-1", ctx.headers.get("x-test-variant", "v2")
        ctx.episode_id = ctx.headers.get("x-test-episode")


def gateway_cfg(database_url: str, tmp_path: Path, **control: Any) -> Any:
    return decode_config({
        "server": {"log_level": "warning"},
        "control": {"database_url": database_url, "data_dir": str(tmp_path / "control"), "modules": ["governance"],
                    **control},
        "metering": {"spill_dir": str(tmp_path / "spill"), "write_timeout_s": 1.0},
        "providers": [{"name": "fn", "kind": "openai", "base_url": "http://fn.invalid"}],
        "routes": [{"name": "r", "targets": [{"provider": "fn", "model": "m0"}]}],
    })


@dataclass
class Served:
    http: httpx.AsyncClient
    app: Any

    @property
    def store(self) -> Store:
        store: Store = self.app.state.gateway.store
        return store

    async def chat(self, headers: dict[str, str] | None = None) -> httpx.Response:
        r = await self.http.post("/v1/chat/completions", json=CHAT, headers=headers or {})
        return r

    async def rate(self, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        return await self.http.post("/v1/feedback", json=body, headers=headers or {})

    async def rows(self) -> list[dict[str, Any]]:
        async with self.store.read() as conn:
            found = (await conn.execute(select(feedback).order_by(feedback.c.id))).mappings().all()
        return [dict(r) for r in found]

    async def key(self, name: str, team_id: str, roles: list[str]) -> tuple[str, str]:
        """A new key's (secret, id)."""
        made = await self.http.post(f"{GOV}/keys", headers=ADMIN, json={"name": name, "teamId": team_id,
                                                                         "roles": roles})
        assert made.status_code == 201, made.text
        return made.json()["data"]["key"], made.json()["data"]["id"]

    async def team(self, name: str) -> str:
        made = await self.http.post(f"{GOV}/teams", headers=ADMIN, json={"name": name})
        assert made.status_code == 201, made.text
        team_id: str = made.json()["data"]["id"]
        return team_id


@contextlib.asynccontextmanager
async def serving(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  **control: Any) -> AsyncIterator[Served]:
    monkeypatch.setenv("LLMOPS_ADMIN_KEY", ADMIN_KEY)
    app = create_app(gateway_cfg(database_url, tmp_path, **control), plugins=[ArmPlugin()],
                     upstreams={"fn": FunctionUpstream(lambda call: chat_completion("ok"))})
    async with serve_asgi(app, lifespan="on") as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        yield Served(http, app)


async def until(check: Any, within_s: float, what: str) -> None:
    """Poll the async `check` until truthy."""
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def error_of(r: httpx.Response) -> dict[str, Any]:
    """OpenAI's error object, checked to have exactly its four fields."""
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    error: dict[str, Any] = body["error"]
    return error
