"""An automatic run (``EVALUATIONS.start_for_model``) on a model no route serves yet is created ``waiting`` and
runs by itself once the model is served (a route the gateway has: an endpoint still deploying is not enough);
cancel, the wait limit, a person's run (still a 422) and two replicas flipping it once. Both databases."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from adapters.adminapi import ControlCfg, ModuleContext
from adapters.adminapi.seams import EVALUATIONS, CatalogModel
from adapters.adminapi.testing import AdminTestApp, admin_test_app
from adapters.testdoubles.mock_state import MockConfig, ScriptRule
from adapters.testdoubles.mock_upstream import MockServer
from control.evaluation import EvaluationModule, waiting
from control.evaluation.tables import events
from control.evaluation.waiting import release_waiting
from tests.control.evaluation.support import (
    API,
    FakeCatalog,
    finished,
    gateway,
    publish_routes,
    qa_rows,
    run_body,
    settings,
    until,
)
from tests.control.evaluation.test_targets import FakeServing, _ref


def catalog_with_lineage() -> FakeCatalog:
    """``base`` (its gate has the autoEvaluate) and ``ft``, a fresh draft fine-tune of it."""
    catalog = FakeCatalog()
    catalog.datasets.add("ds", qa_rows(3))
    for model_id, parent in (("base", None), ("ft", "base")):
        catalog.models.models[model_id] = CatalogModel(
            id=model_id, name=f"model-{model_id}", type="fine-tuned" if parent else "base", status="draft",
            version=1, owner_team="team_default", parent_model_id=parent)
    return catalog


@contextlib.asynccontextmanager
async def plane(database_url: str, tmp_path: Path, serving: FakeServing, evaluation: dict[str, Any]
                ) -> AsyncIterator[AdminTestApp]:
    cfg = ControlCfg(database_url=database_url, data_dir=str(tmp_path / "control"), change_feed="poll",
                     poll_interval_s=0.1, module_settings={"evaluation": evaluation})
    async with admin_test_app(cfg, modules=[catalog_with_lineage(), EvaluationModule(), serving]) as app:
        resp = await app.client.put(f"{API}/gates/model/base", json={"autoEvaluate": run_body(name="suite")})
        assert resp.status_code == 200, resp.text
        yield app


def context(app: AdminTestApp) -> ModuleContext:
    return app.plane._require_running().contexts["evaluation"]


async def start(app: AdminTestApp) -> str:
    run_id = await context(app).services[EVALUATIONS].start_for_model(model_id="ft", trigger="training:job_1",
                                                                       actor="alice")
    assert run_id is not None
    return run_id


async def get(app: AdminTestApp, run_id: str) -> dict[str, Any]:
    resp = await app.client.get(f"{API}/runs/{run_id}")
    assert resp.status_code == 200, resp.text
    return dict(resp.json()["data"])


def timeline(run: dict[str, Any]) -> list[str]:
    return [e["event"] for e in run["timeline"]]


async def look(app: AdminTestApp, actor: str = "worker:test") -> int:
    """One pass over the waiting runs, as a worker's would."""
    return await release_waiting(context(app), yaml_routes=["r", "r2"], wait_s=3600, actor=actor)


async def test_an_automatic_run_waits_for_its_model_to_be_served_then_runs(database_url: str, tmp_path: Path,
                                                                           mock: MockServer) -> None:
    mock.config = MockConfig(script=[ScriptRule(match="number 1", reply="answer 1")])
    serving = FakeServing([])
    async with gateway(database_url, tmp_path, mock) as gw, \
            plane(database_url, tmp_path, serving, settings(gw.url)) as app:
        run_id = await start(app)
        run = await get(app, run_id)
        assert run["status"] == "waiting" and run["targets"] == [{"kind": "model", "id": "ft", "route": None}]
        assert run["modelIds"] == ["ft"] and run["progress"] == {"done": 0, "failed": 0, "total": 3}
        assert timeline(run) == ["created", "waiting_for_route"]
        assert run["timeline"][1]["detail"]["modelId"] == "ft"
        assert "'ft' is served by no route yet" in run["timeline"][1]["detail"]["reason"]
        listed = (await app.client.get(f"{API}/runs", params={"status": "waiting"})).json()["data"]["items"]
        assert [r["id"] for r in listed] == [run_id]
        judge = await app.client.post(f"{API}/runs/{run_id}/llm-judge",
                                      json={"judge": {"model": {"kind": "route", "id": "r"}}})
        assert judge.status_code == 409, judge.text  # not finished

        # an endpoint still deploying has no route the gateway knows yet: the run keeps waiting
        serving.directory.refs.append(_ref("ep_new", "ft-deploying", "ft", status="deploying"))
        assert await look(app) == 0
        assert (await get(app, run_id))["status"] == "waiting"
        # the endpoint that serves it: its route published and in the gateway first, then the endpoint exists
        await publish_routes(app, "ft-route", base_url=mock.url)
        await until(lambda: _routed(gw, "ft-route"))
        serving.directory.refs.insert(0, _ref("ep_ready", "ft-route", "ft"))
        done = await finished(app, run_id)
        assert done["status"] == "succeeded", done
        assert done["targets"] == [{"kind": "model", "id": "ft", "route": "ft-route"}]
        assert timeline(done) == ["created", "waiting_for_route", "route_found", "started", "finished"]
        assert done["timeline"][2]["detail"] == {"modelId": "ft", "route": "ft-route"}
        assert done["progress"] == {"done": 3, "failed": 0, "total": 3}
        assert done["metrics"]["0"]["exact_match"]["value"] == pytest.approx(1 / 3)
    seen = [r.body["model"] for r in mock.requests if r.path.endswith("/chat/completions")]
    assert seen == ["m0"] * 3  # through the published route's target


async def _routed(gw: Any, route: str) -> bool:
    return route in gw.gateway.generation.table.routes


async def test_a_waiting_run_is_cancelled_at_once_and_stays_cancelled(database_url: str, tmp_path: Path) -> None:
    serving = FakeServing([])
    async with plane(database_url, tmp_path, serving, {"worker": False, "gateway_routes": ["r"]}) as app:
        run_id = await start(app)
        resp = await app.client.post(f"{API}/runs/{run_id}/cancel")
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["message"] == "Run cancelled"
        assert body["data"]["status"] == "cancelled" and body["data"]["finishedAt"] is not None
        assert timeline(body["data"]) == ["created", "waiting_for_route", "cancelled"]
        serving.directory.refs.append(_ref("ep_ready", "ft-route", "ft"))  # served now: too late
        await publish_routes(app, "ft-route")
        assert await look(app) == 0
        assert (await get(app, run_id))["status"] == "cancelled"
        again = await app.client.post(f"{API}/runs/{run_id}/cancel")
        assert again.json()["message"].startswith("No changes")


async def test_a_run_that_waits_longer_than_route_wait_s_fails(database_url: str, tmp_path: Path) -> None:
    evaluation = {"gateway_url": "http://127.0.0.1:9", "gateway_routes": ["r"], "poll_s": 0.05,
                  "route_wait_s": 0.3}
    async with plane(database_url, tmp_path, FakeServing([]), evaluation) as app:
        run_id = await start(app)
        done = await finished(app, run_id, within_s=20)
    assert done["status"] == "failed" and done["finishedAt"] is not None
    assert done["error"] == ("no route served model 'ft' within 0.3 s of the run's creation (route_wait_s): "
                             "deploy it (serving) and start the evaluation again")
    assert timeline(done) == ["created", "waiting_for_route", "finished"]
    assert done["timeline"][-1]["detail"] == {"status": "failed", "error": done["error"]}


async def test_a_run_a_person_asks_for_on_an_unserved_model_is_still_refused(database_url: str,
                                                                           tmp_path: Path) -> None:
    async with plane(database_url, tmp_path, FakeServing([]), {"worker": False, "gateway_routes": ["r"]}) as app:
        resp = await app.client.post(f"{API}/runs", json=run_body(targets=[{"kind": "model", "id": "ft"}]))
        assert resp.status_code == 422, resp.text
        (error,) = resp.json()["data"]["errors"]
        assert error["field"] == "targets[0].id" and "served by no route" in error["message"]
        listed = (await app.client.get(f"{API}/runs")).json()["data"]
        assert listed["total"] == 0


async def test_two_workers_looking_at_once_flip_a_waiting_run_once(database_url: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    serving = FakeServing([])
    async with plane(database_url, tmp_path, serving, {"worker": False, "gateway_routes": ["r"]}) as app:
        run_id = await start(app)
        serving.directory.refs.append(_ref("ep_ready", "ft-route", "ft"))
        await publish_routes(app, "ft-route")
        both_resolved = asyncio.Barrier(2)
        queue = waiting._queue

        async def queue_after_both(*args: Any) -> int:  # both have read the run as waiting and found the route
            await both_resolved.wait()
            return await queue(*args)

        monkeypatch.setattr(waiting, "_queue", queue_after_both)
        flipped = await asyncio.gather(look(app, "worker:a"), look(app, "worker:b"))
        assert sorted(flipped) == [0, 1]
        run = await get(app, run_id)
        assert run["status"] == "queued" and run["targets"] == [{"kind": "model", "id": "ft", "route": "ft-route"}]
        store = app.plane.store
        assert store is not None
        async with store.read() as conn:
            found = (await conn.execute(select(func.count()).where(events.c.run_id == run_id,
                                                                   events.c.event == "route_found"))).scalar_one()
        assert found == 1
