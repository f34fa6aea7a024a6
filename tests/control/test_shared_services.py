"""A second module reaches the catalog's ``catalog.model_refs`` through the shared registry.

Before the registry each module had its own ``services`` dict, so this lookup raised
``KeyError`` everywhere but inside the catalog.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from litestar import post

from adapters.adminapi import ControlCfg, Envelope, Migration, ModuleContext, ok
from adapters.adminapi.seams import MODEL_REFS
from adapters.adminapi.services import MissingService
from adapters.adminapi.testing import AdminTestApp, admin_test_app
from control.catalog import CatalogModule
from control.catalog.models.refs import ModelRefs

API = "/llm-ops/v1"


@post("/serving/endpoints/{endpoint_id:str}", status_code=201)
async def create_endpoint(endpoint_id: str, data: dict[str, Any], ctx: ModuleContext) -> Envelope[str]:
    refs = ctx.services[MODEL_REFS]  # what a serving module will do when it deploys a model
    async with ctx.store.begin() as conn:
        await refs.add(conn, str(data["modelId"]), "endpoint", endpoint_id)
    return ok(endpoint_id)


class ServingModule:
    name = "serving"

    def routes(self) -> Sequence[object]:
        return [create_endpoint]

    def migrations(self) -> Sequence[Migration]:
        return ()

    def lifespan(self, ctx: ModuleContext) -> contextlib.AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()  # type: ignore[return-value]  # nullcontext is async-capable too


@pytest.fixture
async def plane(database_url: str, tmp_path: Path) -> AsyncIterator[AdminTestApp]:
    cfg = ControlCfg(database_url=database_url, data_dir=str(tmp_path / "data"), change_feed="local")
    async with admin_test_app(cfg, modules=[CatalogModule(), ServingModule()]) as app:
        yield app


async def test_a_second_module_blocks_a_model_delete_through_model_refs(plane: AdminTestApp) -> None:
    c = plane.client
    model = (await c.post(f"{API}/catalog/models", json={
        "name": "base-model", "type": "base", "ownerTeam": "ml", "format": "gguf"})).json()["data"]
    created = await c.post(f"{API}/serving/endpoints/ep-1", json={"modelId": model["id"]})
    assert created.status_code == 201, created.text

    serving = plane.plane._require_running().contexts["serving"]
    assert isinstance(serving.services[MODEL_REFS], ModelRefs)
    refused = await c.delete(f"{API}/catalog/models/{model['id']}")
    assert refused.status_code == 409, refused.text
    assert refused.json()["data"]["dependents"] == [{"kind": "endpoint", "id": "ep-1"}]


async def test_without_the_catalog_the_error_says_who_provides_what(database_url: str, tmp_path: Path) -> None:
    cfg = ControlCfg(database_url=database_url, data_dir=str(tmp_path / "data"), change_feed="local")
    async with admin_test_app(cfg, modules=[ServingModule()]) as app:
        ctx = app.plane._require_running().contexts["serving"]
        with pytest.raises(MissingService, match=r"'catalog\.model_refs' \(is module 'catalog' enabled"):
            ctx.services[MODEL_REFS]
