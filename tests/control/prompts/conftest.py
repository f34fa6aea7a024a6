from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from adapters.adminapi import ControlCfg, Migration, ModuleContext
from adapters.adminapi.testing import AdminTestApp, admin_test_app
from adapters.snapshots import ExperimentsSnapshot, TemplatesSnapshot
from adapters.store import Store, read_published
from control.prompts import PROMPTS, PromptsService, module

API = "/llm-ops/v1/prompts"

TEMPLATE: dict[str, Any] = {
    "name": "support",
    "messages": [{"role": "system", "content": "You help {{ product }} users. Be {{ tone }}."}],
    "variables": [{"name": "product", "default": "llmops"}, {"name": "tone", "default": "brief"}],
}


def template(name: str = "support", content: str = "You help {{ product }} users.") -> dict[str, Any]:
    return {"name": name, "messages": [{"role": "system", "content": content}],
            "variables": [{"name": "product", "default": "llmops"}]}


def experiment(exp_id: str = "exp1", route: str = "chat", *, a: str | None = None, b: str | None = "support",
               **extra: Any) -> dict[str, Any]:
    return {"id": exp_id, "route": route, "variants": [{"name": "a", "template": a},
                                                       {"name": "b", "template": b, "params": {"temperature": 0.2}}],
            **extra}


class Probe:
    """A module that only keeps its context, so tests reach the shared service registry."""

    name = "probe"
    ctx: ModuleContext

    def routes(self) -> Sequence[Any]:
        return []

    def migrations(self) -> Sequence[Migration]:
        return ()

    def lifespan(self, ctx: ModuleContext) -> contextlib.AbstractAsyncContextManager[None]:
        self.ctx = ctx
        return contextlib.nullcontext()  # type: ignore[return-value]  # nullcontext is async-capable too


@contextlib.asynccontextmanager
async def prompts_app(database_url: str, data_dir: Path, **settings: Any) -> AsyncIterator[tuple[AdminTestApp,
                                                                                                 PromptsService]]:
    cfg = ControlCfg(database_url=database_url, data_dir=str(data_dir), change_feed="local",
                     module_settings={"prompts": settings} if settings else {})
    probe = Probe()
    async with admin_test_app(cfg, modules=[module, probe]) as app:
        yield app, probe.ctx.services[PROMPTS]


@pytest.fixture
async def prompts(database_url: str, tmp_path: Path) -> AsyncIterator[AdminTestApp]:
    """The prompts module alone, on a fresh database (SQLite, then PostgreSQL)."""
    async with prompts_app(database_url, tmp_path) as (app, _service):
        yield app


@pytest.fixture
async def plane(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[AdminTestApp, PromptsService]]:
    async with prompts_app(database_url, tmp_path) as found:
        yield found


async def published(store: Store | None) -> tuple[TemplatesSnapshot, ExperimentsSnapshot]:
    assert store is not None
    found, skipped = await read_published(store)
    assert not skipped
    templates, experiments = found["templates"], found["experiments"]
    assert isinstance(templates, TemplatesSnapshot) and isinstance(experiments, ExperimentsSnapshot)
    return templates, experiments


async def create(app: AdminTestApp, what: str, document: dict[str, Any]) -> dict[str, Any]:
    resp = await app.client.post(f"{API}/{what}", json={"document": document})
    assert resp.status_code == 201, resp.text
    return resp.json()["data"]  # type: ignore[no-any-return]


async def key(app: AdminTestApp, role: str) -> dict[str, str]:
    resp = await app.client.post("/llm-ops/v1/admin/keys", json={"name": f"k-{role}", "role": role})
    assert resp.status_code == 201, resp.text
    return {"authorization": f"Bearer {resp.json()['data']['key']}"}
