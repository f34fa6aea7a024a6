"""Experiments over HTTP on both databases: declarations, validation, lifecycle, one per route, rollback's
snapshot, and ``update_runtime`` (the supervisor's seam) writing all or nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from adapters.adminapi import Conflict, NotFound
from adapters.adminapi.testing import AdminTestApp
from control.prompts import PromptsService
from control.prompts.tables import experiment_events
from policies.prompts.documents import ExperimentRuntime

from .conftest import API, create, experiment, key, published, template

E = f"{API}/experiments"


@pytest.fixture
async def app(plane: tuple[AdminTestApp, PromptsService]) -> AdminTestApp:
    app = plane[0]
    await create(app, "templates", template())
    await create(app, "templates", template("concise", "Be concise about {{ product }}."))
    return app


async def test_create_get_update_list_delete(app: AdminTestApp) -> None:
    c = app.client
    created = await create(app, "experiments", experiment(name="tone test"))
    assert created["state"] == "draft" and created["revision"] == 1 and created["source"] == "api"
    assert created["runtime"] == {"state": "draft", "started_at": None, "weights": {}, "stopped_variants": [],
                                  "winner": None, "rolled_back": False, "revision": 1}
    assert created["document"]["variants"][1]["params"] == {"temperature": 0.2}
    assert (await c.get(f"{E}/exp1")).json()["data"] == created

    doc = experiment(name="tone test", b="concise")
    updated = await c.put(f"{E}/exp1", json={"document": doc, "expectedRevision": 1})
    assert updated.status_code == 200 and updated.json()["message"] == "Experiment updated to revision 2", updated.text
    assert updated.json()["data"]["runtime"]["revision"] == 2
    same = await c.put(f"{E}/exp1", json={"document": doc})
    assert same.json()["message"] == "No changes"
    stale = await c.put(f"{E}/exp1", json={"document": experiment(), "expectedRevision": 1})
    assert stale.status_code == 409 and stale.json()["data"] == {"revision": 2}
    dup = await c.post(E, json={"document": experiment()})
    assert dup.status_code == 409

    await create(app, "experiments", experiment("exp2", "search"))
    await c.post(f"{E}/exp2/start")

    async def ids(query: str) -> list[str]:
        resp = await c.get(f"{E}?{query}")
        assert resp.status_code == 200, resp.text
        return [e["id"] for e in resp.json()["data"]["items"]]

    assert await ids("state=running") == ["exp2"] and await ids("state=draft") == ["exp1"]
    assert await ids("route=chat") == ["exp1"] and sorted(await ids("")) == ["exp1", "exp2"]
    assert await ids("source=config") == []
    page = (await c.get(f"{E}?pageSize=1&page=2")).json()["data"]
    assert page["total"] == 2 and len(page["items"]) == 1

    assert (await c.delete(f"{E}/exp1")).status_code == 200
    assert (await c.get(f"{E}/exp1")).status_code == 404
    events = (await c.get(f"{E}/exp1/events")).json()["data"]  # history stays readable
    assert [e["kind"] for e in events["items"]] == ["deleted", "updated", "created"]
    assert events["items"][0]["actor"] == "bootstrap" and events["items"][0]["experimentId"] == "exp1"
    revived = await create(app, "experiments", experiment())
    assert revived["revision"] == 3 and revived["state"] == "draft"


async def test_validation_is_422_naming_the_path(app: AdminTestApp) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        (experiment(b="ghost"), "document.variants[1].template"),
        (experiment(b="support@7"), "document.variants[1].template"),
        (experiment(a="ghost@1"), "document.variants[0].template"),
        ({**experiment(), "control": "z"}, "document.control"),
        ({**experiment(), "variants": [{"name": "a"}, {"name": "a"}]}, "document.variants[1].name"),
        ({**experiment(), "variants": [{"name": "a", "params": {"api_key": "x"}}, {"name": "b"}]},
         "document.variants[0].params.api_key"),
        ({**experiment(), "state": "running"}, "document.state"),
    ]
    for document, field in cases:
        resp = await app.client.post(E, json={"document": document})
        assert resp.status_code == 422, (document, resp.text)
        assert field in [e["field"] for e in resp.json()["data"]["errors"]], resp.json()
    shape = await app.client.post(E, json={"document": {**experiment(), "variants": [{"name": "a"}]}})
    assert shape.status_code == 400 and shape.json()["data"]["errors"][0]["field"] == "document.variants"
    await create(app, "experiments", experiment())
    moved = await app.client.put(f"{E}/exp1", json={"document": experiment("exp9")})
    assert moved.status_code == 422 and moved.json()["data"]["errors"][0]["field"] == "document.id"
    for resp in (await app.client.get(f"{E}/nope"), await app.client.post(f"{E}/nope/start"),
                 await app.client.get(f"{E}/nope/events"), await app.client.delete(f"{E}/nope")):
        assert resp.status_code == 404 and resp.json()["status"] == "fail"
    assert (await app.client.get(f"{E}?state=done")).status_code == 400


async def test_lifecycle_and_invalid_transitions(app: AdminTestApp) -> None:
    c = app.client
    await create(app, "experiments", experiment())

    async def act(action: str, status: int = 200) -> dict[str, Any]:
        resp = await c.post(f"{E}/exp1/{action}", params={"reason": f"{action} now"})
        assert resp.status_code == status, (action, resp.text)
        return resp.json()  # type: ignore[no-any-return]

    for refused in ("pause", "stop", "rollback"):
        assert "draft" in (await act(refused, 409))["message"]
    started = (await act("start"))["data"]
    assert started["state"] == "running" and started["runtime"]["started_at"] > 0
    assert (await act("start", 409))["data"] == {"state": "running"}
    assert (await c.delete(f"{E}/exp1")).status_code == 409  # running: not deleted
    assert (await act("pause"))["data"]["state"] == "paused"
    await act("pause", 409)
    resumed = (await act("start"))["data"]
    assert resumed["runtime"]["started_at"] >= started["runtime"]["started_at"]
    rolled = await act("rollback")
    assert rolled["data"]["runtime"]["rolled_back"] is True and rolled["data"]["state"] == "running"
    assert (await act("rollback"))["message"] == "No changes"
    assert (await act("stop"))["data"]["runtime"]["rolled_back"] is True
    await act("stop", 409)
    await act("rollback", 409)
    restarted = (await act("start"))["data"]
    assert restarted["runtime"]["rolled_back"] is False and restarted["state"] == "running"
    events = (await c.get(f"{E}/exp1/events")).json()["data"]["items"]
    assert [e["kind"] for e in events] == ["started", "stopped", "rolled_back", "started", "paused", "started",
                                           "created"]
    assert events[0]["message"] == "started by bootstrap: start now" and events[0]["detail"]["reason"] == "start now"
    audit = (await c.get("/llm-ops/v1/audit/logs?resourceType=experiment&resourceId=exp1")).json()["data"]["items"]
    assert [e["action"] for e in audit][:3] == ["prompts.experiment.start", "prompts.experiment.stop",
                                                "prompts.experiment.rollback"]
    assert audit[2]["before"]["runtime"]["rolled_back"] is False and audit[2]["after"]["runtime"]["rolled_back"]


async def test_one_running_experiment_per_route(app: AdminTestApp) -> None:
    c = app.client
    await create(app, "experiments", experiment("exp1", "chat"))
    await create(app, "experiments", experiment("exp2", "chat"))
    await create(app, "experiments", experiment("exp3", "search"))
    assert (await c.post(f"{E}/exp1/start")).status_code == 200
    busy = await c.post(f"{E}/exp2/start")
    assert busy.status_code == 409 and busy.json()["data"] == {"experiment": "exp1"}
    assert (await c.post(f"{E}/exp3/start")).status_code == 200
    moved = await c.put(f"{E}/exp3", json={"document": experiment("exp3", "chat")})
    assert moved.status_code == 409 and "exp1" in moved.json()["message"]
    await c.post(f"{E}/exp1/pause")
    assert (await c.post(f"{E}/exp2/start")).status_code == 200
    assert (await c.post(f"{E}/exp1/start")).status_code == 409


async def test_viewers_read_operators_act(app: AdminTestApp) -> None:
    viewer, operator = await key(app, "viewer"), await key(app, "operator")
    await create(app, "experiments", experiment())
    assert (await app.client.get(f"{E}/exp1/events", headers=viewer)).status_code == 200
    for action in ("start", "pause", "stop", "rollback"):
        refused = await app.client.post(f"{E}/exp1/{action}", headers=viewer)
        assert refused.status_code == 403, refused.text
    assert (await app.client.delete(f"{E}/exp1", headers=viewer)).status_code == 403
    assert (await app.client.post(f"{E}/exp1/start", headers=operator)).status_code == 200


async def test_rollback_is_one_snapshot_publish(app: AdminTestApp) -> None:
    await create(app, "experiments", experiment())
    await app.client.post(f"{E}/exp1/start")
    templates_before, before = await published(app.plane.store)
    assert before.experiments[0].runtime.state == "running" and not before.experiments[0].runtime.rolled_back
    assert (await app.client.post(f"{E}/exp1/rollback")).status_code == 200
    templates_after, after = await published(app.plane.store)
    assert after.generation == before.generation + 1 and templates_after.generation == templates_before.generation
    assert after.experiments[0].runtime.rolled_back and after.experiments[0].runtime.state == "running"
    assert after.experiments[0].source == "api" and after.experiments[0].document.id == "exp1"


def _bump(runtime: ExperimentRuntime) -> ExperimentRuntime:
    return msgspec.structs.replace(runtime, weights={"a": runtime.weights.get("a", 0) + 1, "b": 1})


async def _events(app: AdminTestApp) -> int:
    assert app.plane.store is not None
    async with app.plane.store.read() as conn:
        return len((await conn.execute(experiment_events.select())).all())


async def test_update_runtime_writes_all_or_nothing(plane: tuple[AdminTestApp, PromptsService],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    app, service = plane
    await create(app, "templates", template())
    await create(app, "experiments", experiment())
    await app.client.post(f"{E}/exp1/start")
    _, snap = await published(app.plane.store)
    events = await _events(app)

    assert await service.update_runtime("exp1", lambda rt: None, actor="supervisor", kind="weights_changed",
                                        message="nothing", detail={}) is None
    assert await service.update_runtime("exp1", lambda rt: rt, actor="supervisor", kind="weights_changed",
                                        message="same", detail={}) is None
    with pytest.raises(Conflict):
        await service.update_runtime("exp1", lambda rt: (_ for _ in ()).throw(Conflict("no")), actor="supervisor",
                                     kind="weights_changed", message="x", detail={})
    with pytest.raises(NotFound):
        await service.update_runtime("ghost", _bump, actor="supervisor", kind="weights_changed", message="x",
                                     detail={})

    async def broken(conn: Any) -> None:  # the publish fails after the runtime and the event were written
        raise RuntimeError("publish failed")

    monkeypatch.setattr(service.publisher, "experiments", broken)
    with pytest.raises(RuntimeError):
        await service.update_runtime("exp1", _bump, actor="supervisor", kind="weights_changed", message="x",
                                     detail={})
    monkeypatch.undo()
    assert (await service.get("exp1")).runtime.weights == {} and await _events(app) == events
    assert (await published(app.plane.store))[1].generation == snap.generation

    new = await service.update_runtime("exp1", _bump, actor="supervisor", kind="weights_changed",
                                       message="weights moved toward b", detail={"p_best": {"b": 0.9}})
    assert new is not None and new.weights == {"a": 1, "b": 1} and new.revision == 1
    _, after = await published(app.plane.store)
    assert after.generation == snap.generation + 1 and after.experiments[0].runtime == new
    event = (await app.client.get(f"{E}/exp1/events")).json()["data"]["items"][0]
    assert (event["kind"], event["actor"], event["message"]) == ("weights_changed", "supervisor",
                                                                 "weights moved toward b")
    assert event["detail"] == {"p_best": {"b": 0.9}, "state": "running"}
    audit = (await app.client.get("/llm-ops/v1/audit/logs?action=prompts.experiment.weights_changed")).json()["data"]
    assert audit["total"] == 1 and audit["items"][0]["actorKeyId"] == "supervisor"
    assert [(d, r.state) for d, r in await service.running()] == [((await service.get("exp1")).document, "running")]


async def test_concurrent_runtime_changes_lose_nothing(plane: tuple[AdminTestApp, PromptsService]) -> None:
    app, service = plane
    await create(app, "templates", template())
    await create(app, "experiments", experiment())
    await asyncio.gather(*(service.update_runtime("exp1", _bump, actor="supervisor", kind="weights_changed",
                                                  message="+1", detail={}) for _ in range(5)))
    assert (await service.get("exp1")).runtime.weights["a"] == 5


async def test_a_winner_stays_until_a_restart(plane: tuple[AdminTestApp, PromptsService]) -> None:
    app, service = plane
    await create(app, "templates", template())
    await create(app, "experiments", experiment())
    await app.client.post(f"{E}/exp1/start")
    await service.update_runtime("exp1", lambda rt: msgspec.structs.replace(rt, winner="b", stopped_variants=["a"]),
                                 actor="supervisor", kind="winner_declared", message="b wins", detail={})
    assert (await app.client.post(f"{E}/exp1/pause")).json()["data"]["runtime"]["winner"] == "b"
    resumed = (await app.client.post(f"{E}/exp1/start")).json()["data"]["runtime"]
    assert resumed["winner"] is None and resumed["stopped_variants"] == ["a"]  # a resume keeps guardrail stops
    await service.update_runtime("exp1", lambda rt: msgspec.structs.replace(rt, winner="b"), actor="supervisor",
                                 kind="winner_declared", message="b wins", detail={})
    stopped = (await app.client.post(f"{E}/exp1/stop")).json()["data"]["runtime"]
    assert stopped["winner"] == "b"
    fresh = (await app.client.post(f"{E}/exp1/start")).json()["data"]["runtime"]
    assert fresh["winner"] is None and fresh["stopped_variants"] == [] and fresh["weights"] == {}
