"""Targets resolved through serving's ENDPOINTS (a stand-in directory here) and the EVALUATIONS starter."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import ControlCfg, Migration, ModuleContext
from adapters.adminapi.seams import ENDPOINTS, EVALUATIONS, EndpointRef
from adapters.adminapi.testing import AdminTestApp, admin_test_app
from adapters.store import utcnow
from control.evaluation import EvaluationModule
from control.evaluation.tables import gates
from tests.control.evaluation.support import API, FakeCatalog, publish_routes, qa_rows, run_body


class FakeDirectory:
    def __init__(self, refs: list[EndpointRef]) -> None:
        self.refs = refs

    async def find(self, conn: AsyncConnection, *, endpoint_id: str | None = None, model_id: str | None = None,
                   environment: str | None = None) -> list[EndpointRef]:
        return [r for r in self.refs if (endpoint_id is None or r.id == endpoint_id)
                and (model_id is None or r.model_id == model_id)
                and (environment is None or r.environment == environment)]


class FakeServing:
    name = "serving"

    def __init__(self, refs: list[EndpointRef]) -> None:
        self.directory = FakeDirectory(refs)

    def routes(self) -> Sequence[Any]:
        return []

    def migrations(self) -> Sequence[Migration]:
        return ()

    @contextlib.asynccontextmanager
    async def _run(self, ctx: ModuleContext) -> AsyncIterator[None]:
        ctx.provide(ENDPOINTS, self.directory)
        yield

    def lifespan(self, ctx: ModuleContext) -> contextlib.AbstractAsyncContextManager[None]:
        return self._run(ctx)


def _ref(ep_id: str, route: str, model_id: str, status: str = "ready", env: str = "DEV") -> EndpointRef:
    return EndpointRef(id=ep_id, name=ep_id, route=route, environment=env, model_id=model_id,  # type: ignore[arg-type]
                       model_version=1, revision=1, status=status)


@pytest.fixture
async def app(database_url: str, tmp_path: Path) -> AsyncIterator[AdminTestApp]:
    catalog = FakeCatalog()
    catalog.datasets.add("ds", qa_rows(2))
    catalog.models.add("mdl_a", "model-a", "fine-tuned")
    catalog.models.add("mdl_b", "model-b", "base")
    catalog.models.add("mdl_c", "model-c", "fine-tuned")  # in the catalog, served by nothing
    serving = FakeServing([_ref("ep_old", "a-deploying", "mdl_a", status="deploying"),
                           _ref("ep_1", "a-prod", "mdl_a", env="PROD"), _ref("ep_2", "b-route", "mdl_b")])
    cfg = ControlCfg(database_url=database_url, data_dir=str(tmp_path), change_feed="local",
                     module_settings={"evaluation": {"worker": False, "gateway_routes": ["r"]}})
    async with admin_test_app(cfg, modules=[catalog, EvaluationModule(), serving]) as app:
        yield app


async def test_endpoints_and_models_resolve_to_their_routes(app: AdminTestApp) -> None:
    resp = await app.client.post(f"{API}/runs", json=run_body(
        targets=[{"kind": "endpoint", "id": "ep_2"}, {"kind": "model", "id": "mdl_a"}]))
    assert resp.status_code == 201, resp.text
    run = resp.json()["data"]
    # a model: the route of a ready endpoint serving it, before an older one still deploying
    assert run["targets"] == [{"kind": "endpoint", "id": "ep_2", "route": "b-route"},
                              {"kind": "model", "id": "mdl_a", "route": "a-prod"}]
    assert run["modelIds"] == ["mdl_b", "mdl_a"]
    listed = (await app.client.get(f"{API}/runs", params={"modelId": "mdl_b"})).json()["data"]
    assert [r["id"] for r in listed["items"]] == [run["id"]]
    missing = await app.client.post(f"{API}/runs", json=run_body(targets=[{"kind": "endpoint", "id": "ep_9"}]))
    assert missing.status_code == 422 and missing.json()["data"]["errors"][0]["field"] == "targets[0].id"


async def test_start_for_model_runs_the_gates_auto_evaluation_on_that_model(app: AdminTestApp) -> None:
    ctx = app.plane._require_running().contexts["evaluation"]
    starter = ctx.services[EVALUATIONS]
    assert await starter.start_for_model(model_id="mdl_a", trigger="training:job_1", actor="training") is None
    auto = run_body(name="after training", targets=[{"kind": "route", "id": "r"}])
    store = app.plane.store
    assert store is not None
    async with store.begin() as conn:
        await conn.execute(insert(gates).values(subject_kind="model", subject_id="mdl_a", config={"thresholds": []},
                                                created_at=utcnow(), updated_at=utcnow(), updated_by="t"))
        await conn.execute(insert(gates).values(subject_kind="model", subject_id="mdl_b",
                                                config={"autoEvaluate": auto}, created_at=utcnow(),
                                                updated_at=utcnow(), updated_by="t"))
    assert await starter.start_for_model(model_id="mdl_a", trigger="training:job_1", actor="training") is None
    await publish_routes(app, "b-route")  # serving publishes a healthy endpoint's route: mdl_b is served
    run_id = await starter.start_for_model(model_id="mdl_b", trigger="training:job_2", actor="training")
    assert run_id is not None
    run = (await app.client.get(f"{API}/runs/{run_id}")).json()["data"]
    assert run["name"] == "after training" and run["createdBy"] == "training"
    assert run["targets"] == [{"kind": "model", "id": "mdl_b", "route": "b-route"}]  # the gate's target replaced
    assert run["timeline"][0]["detail"]["trigger"] == "training:job_2"
    async with store.begin() as conn:  # a model nothing serves: its run waits for a route
        await conn.execute(insert(gates).values(subject_kind="model", subject_id="mdl_c", config={"autoEvaluate": auto},
                                                created_at=utcnow(), updated_at=utcnow(), updated_by="t"))
    waiting = await starter.start_for_model(model_id="mdl_c", trigger="training:job_3", actor="training")
    run = (await app.client.get(f"{API}/runs/{waiting}")).json()["data"]
    assert run["status"] == "waiting" and run["targets"] == [{"kind": "model", "id": "mdl_c", "route": None}]
