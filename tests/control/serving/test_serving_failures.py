"""Failures: delete complete, partial (502, the row kept ``deleting``) and retried; resources already gone; a
runtime that refuses (the revision and the endpoint ``failed``, with the reason); an image that cannot be
pulled; the database down during a deploy (503, nothing started)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import func, select

from control.serving.tables import endpoints, revisions
from tests.control.catalog._helpers import data, fail
from tests.control.serving.serving_support import (
    API,
    FakeRuntime,
    ServingApp,
    endpoint,
    model,
    published,
    routes_of,
    serving_app,
)
from tests.servers import start_postgres


async def _rows(app: ServingApp, ep: str) -> tuple[int, int]:
    assert app.app.plane.store is not None
    async with app.app.plane.store.read() as conn:
        eps = (await conn.execute(select(func.count()).select_from(endpoints).where(endpoints.c.id == ep))).scalar()
        revs = (await conn.execute(select(func.count()).select_from(revisions)
                                   .where(revisions.c.endpoint_id == ep))).scalar()
    return int(eps or 0), int(revs or 0)


async def test_delete_complete_withdraws_the_route_then_the_resources(app: ServingApp) -> None:
    m = await model(app, "m")
    ep = (await endpoint(app, m["id"], "doomed"))["id"]
    data(await app.client.post(f"{API}/{ep}/redeploy", json={"canaryPercent": 10}))
    await app.reconcile()
    assert set(routes_of(await published(app))) == {"doomed"}

    result = data(await app.client.delete(f"{API}/{ep}"))
    assert result == {"endpointId": ep, "deleted": True, "resourcesDeleted": [f"{ep}/stable", f"{ep}/canary"],
                      "resourcesAlreadyGone": [], "resourcesFailed": {}}
    assert app.runtime.units == {} and routes_of(await published(app)) == {}
    assert await _rows(app, ep) == (0, 0)
    fail(await app.client.get(f"{API}/{ep}"), 404)
    fail(await app.client.delete(f"{API}/{ep}"), 404)
    audit = data(await app.client.get(f"/llm-ops/v1/audit/logs?action=serving.endpoint.*&resourceId={ep}"))
    assert [e["action"] for e in audit["items"]][:2] == ["serving.endpoint.deleted", "serving.endpoint.delete"]
    name_free = await endpoint(app, m["id"], "doomed")  # the name and route are free again
    assert name_free["id"] != ep


async def test_delete_tolerates_resources_already_gone(app: ServingApp) -> None:
    m = await model(app, "m")
    ep = (await endpoint(app, m["id"], "half"))["id"]
    app.runtime.units.clear()  # someone removed them by hand
    result = data(await app.client.delete(f"{API}/{ep}"))
    assert result["deleted"] is True and result["resourcesAlreadyGone"] == [f"{ep}/stable", f"{ep}/canary"]


async def test_partial_delete_is_a_502_and_a_retry_finishes(app: ServingApp) -> None:
    m = await model(app, "m")
    ep = (await endpoint(app, m["id"], "stuck"))["id"]
    await app.reconcile()
    app.runtime.delete_faults.add(f"{ep}/stable")
    resp = await app.client.delete(f"{API}/{ep}")
    assert resp.status_code == 502, resp.text
    body = resp.json()
    assert body["status"] == "error" and "retry DELETE" in body["message"]
    assert body["data"] == {"endpointId": ep, "deleted": False, "resourcesDeleted": [],
                            "resourcesAlreadyGone": [f"{ep}/canary"],
                            "resourcesFailed": {f"{ep}/stable": "the fake API server said 500"}}
    kept = data(await app.client.get(f"{API}/{ep}"))
    assert kept["status"] == "deleting" and "the fake API server said 500" in kept["statusReason"]
    assert routes_of(await published(app)) == {}  # the route went first, and stays gone
    fail(await app.client.post(f"{API}/{ep}/redeploy", json={}), 409)
    applied = len(app.runtime.applied)
    await app.reconcile()  # nothing re-applies an endpoint being deleted
    assert len(app.runtime.applied) == applied and data(await app.client.get(f"{API}/{ep}"))["status"] == "deleting"
    fail(await app.client.delete(f"/llm-ops/v1/catalog/models/{m['id']}"), 409)  # still referenced

    app.runtime.delete_faults.clear()
    done = data(await app.client.delete(f"{API}/{ep}"))
    assert done["deleted"] is True and done["resourcesDeleted"] == [f"{ep}/stable"]
    assert await _rows(app, ep) == (0, 0)
    data(await app.client.delete(f"/llm-ops/v1/catalog/models/{m['id']}"))
    actions = [e["action"] for e in data(await app.client.get(
        f"/llm-ops/v1/audit/logs?action=serving.endpoint.*&resourceId={ep}"))["items"]]
    assert actions[:4] == ["serving.endpoint.deleted", "serving.endpoint.delete", "serving.endpoint.delete_failed",
                           "serving.endpoint.delete"]


async def test_a_runtime_refusal_fails_the_revision_and_the_endpoint(app: ServingApp) -> None:
    m = await model(app, "m")
    app.runtime.refuse = "ErrImagePull: registry.example/none:1 not found"
    resp = await app.client.post(API, json={"name": "refused", "modelId": m["id"]})
    created = data(resp, 201)
    assert "did not take revision 1: ErrImagePull" in resp.json()["message"]
    assert created["status"] == "failed" and created["statusReason"].startswith("ErrImagePull")
    ep = created["id"]
    revision = data(await app.client.get(f"{API}/{ep}/revisions"))["items"][0]
    assert revision["state"] == "failed" and revision["reason"].startswith("ErrImagePull")
    app.runtime.refuse = None
    await app.reconcile()  # a failed revision is not applied again
    after = data(await app.client.get(f"{API}/{ep}"))
    assert app.runtime.applied == [] and after["status"] == "failed" and after["statusReason"] == "ErrImagePull"
    assert routes_of(await published(app)) == {}
    fixed = data(await app.client.post(f"{API}/{ep}/redeploy", json={"servingRuntimeImage": "vllm/vllm-openai:v1"}))
    assert fixed["currentRevision"] == 2
    await app.reconcile()
    assert data(await app.client.get(f"{API}/{ep}"))["status"] == "ready"
    assert "roll back to a revision that served" in fail(await app.client.post(
        f"{API}/{ep}/rollback", json={"revision": 1}), 409)["message"]
    audit = data(await app.client.get(f"/llm-ops/v1/audit/logs?action=serving.revision.fail&resourceId={ep}"))
    assert audit["items"][0]["detail"].startswith("revision 1 (stable): ErrImagePull")


async def test_a_retryable_runtime_failure_keeps_deploying_and_the_reconciler_retries(app: ServingApp) -> None:
    m = await model(app, "m")
    app.runtime.refuse, app.runtime.refuse_retryable = "Kubernetes API unreachable", True
    created = await endpoint(app, m["id"], "later")
    assert created["status"] == "deploying" and created["statusReason"] == "Kubernetes API unreachable"
    app.runtime.refuse = None
    app.reconciler.core.applies.forget(created["id"])  # as if the retry interval had passed
    await app.reconcile()
    assert data(await app.client.get(f"{API}/{created['id']}"))["status"] == "ready"


async def test_an_image_that_cannot_be_pulled_shows_with_its_reason(app: ServingApp) -> None:
    m = await model(app, "m")
    app.runtime.image_faults["invalid/vllm:nope"] = "ImagePullBackOff"
    ep = (await endpoint(app, m["id"], "pull", servingRuntimeImage="invalid/vllm:nope"))["id"]
    await app.reconcile()
    failed = data(await app.client.get(f"{API}/{ep}"))
    assert (failed["status"], failed["statusReason"]) == ("failed", "ImagePullBackOff")
    assert failed["slots"]["stable"]["phase"] == "failed"
    assert data(await app.client.get(f"{API}/{ep}/revisions"))["items"][0]["state"] == "failed"
    assert data(await app.client.get(f"{API}?status=failed"))["total"] == 1


async def test_the_database_down_during_a_deploy_is_a_503_and_starts_nothing(tmp_path: Path) -> None:
    with start_postgres() as server:
        async with serving_app(server.url(), tmp_path / "data") as app:
            m = await model(app, "m")
            ep = (await endpoint(app, m["id"], "before"))["id"]
            runtime: FakeRuntime = app.runtime
            assert runtime.applied == [(ep, "stable", 1)]
            await asyncio.to_thread(server.stop)
            down = await app.client.post(API, json={"name": "during", "modelId": m["id"]})
            assert down.status_code == 503 and down.json()["status"] == "error", down.text
            for path, body in ((f"{API}/{ep}/redeploy", {}), (f"{API}/{ep}/rollback", {})):
                assert (await app.client.post(path, json=body)).status_code == 503
            assert (await app.client.delete(f"{API}/{ep}")).status_code == 503
            assert runtime.applied == [(ep, "stable", 1)] and runtime.deletes == []
            await asyncio.to_thread(server.start)
            page = data(await app.client.get(API))
            assert [e["name"] for e in page["items"]] == ["before"]  # nothing half-written either
