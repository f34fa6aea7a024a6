"""Redeploy, canary traffic, promotion by traffic 100, rollback (previous, named, canary) and promotion across
environments with and without a gate, on SQLite and PostgreSQL, against the in-memory ``FakeRuntime``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.adminapi import ModuleContext, no_lifespan
from adapters.adminapi.seams import PROMOTION_GATE, GateVerdict, PromotionRequest
from tests.control.catalog._helpers import data, fail, make_key
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


async def ready_endpoint(app: ServingApp, name: str = "chat", **extra: Any) -> tuple[dict[str, Any], str]:
    m = await model(app, f"{name}-model")
    created = await endpoint(app, m["id"], name, **extra)
    await app.reconcile()
    assert data(await app.client.get(f"{API}/{created['id']}"))["status"] == "ready"
    return m, created["id"]


async def states(app: ServingApp, ep_id: str) -> dict[int, str]:
    page = data(await app.client.get(f"{API}/{ep_id}/revisions"))
    return {r["revision"]: r["state"] for r in page["items"]}


async def test_redeploy_replaces_the_stable_revision_with_overrides(app: ServingApp) -> None:
    _m, ep = await ready_endpoint(app, useGpu=True, gpuCount=2, vllmArgs=["--dtype=half"], maxReplicas=3)
    c = app.client
    first_image = data(await c.get(f"{API}/{ep}"))["runtimeImage"]
    out = data(await c.post(f"{API}/{ep}/redeploy", json={"useGpu": False, "reason": "cheaper"}))
    assert out["currentRevision"] == 2 and out["useGpu"] is False and out["gpuCount"] == 0
    assert out["runtimeImage"] != first_image  # the default image followed useGpu
    assert out["vllmArgs"] == ["--dtype=half"] and out["maxReplicas"] == 3  # unset: kept
    assert app.runtime.applied[-1] == (ep, "stable", 2)
    assert await states(app, ep) == {1: "superseded", 2: "active"}
    await app.reconcile()
    snap = await published(app)
    assert snap.providers[0].base_urls == [f"http://fake.test/{ep}/stable/r2/v1"]

    custom = data(await c.post(f"{API}/{ep}/redeploy", json={"servingRuntimeImage": "registry.local/vllm:dev",
                                                             "vllmArgs": [], "minReplicas": 2}))
    assert custom["runtimeImage"] == "registry.local/vllm:dev" and custom["vllmArgs"] == []
    again = data(await c.post(f"{API}/{ep}/redeploy", json={"useGpu": True}))
    assert again["runtimeImage"] == "registry.local/vllm:dev" and again["gpuCount"] == 1  # a chosen image stays
    revisions = data(await c.get(f"{API}/{ep}/revisions?pageSize=2"))
    assert [r["revision"] for r in revisions["items"]] == [4, 3] and revisions["total"] == 4
    assert revisions["items"][0]["resources"]["gpu_count"] == 1
    assert fail(await c.post(f"{API}/{ep}/redeploy", json={"minReplicas": 5}), 422)["data"]["errors"][0][
        "field"] == "minReplicas"
    fail(await c.post(f"{API}/{ep}/redeploy", json={"canaryPercent": 100}), 400)
    fail(await c.post(f"{API}/ep_missing/redeploy", json={}), 404)


async def test_canary_split_promotion_by_traffic_100(app: ServingApp) -> None:
    _m, ep = await ready_endpoint(app)
    c = app.client
    fail(await c.post(f"{API}/{ep}/traffic", json={"canaryPercent": 50}), 409)  # no canary yet
    app.runtime.ready_on_apply = False
    out = data(await c.post(f"{API}/{ep}/redeploy", json={"canaryPercent": 20}))
    assert out["canaryRevision"] == 2 and out["currentRevision"] == 1
    assert app.runtime.applied[-1] == (ep, "canary", 2)
    assert await states(app, ep) == {1: "active", 2: "canary"}
    await app.reconcile()
    starting = data(await c.get(f"{API}/{ep}"))
    assert starting["status"] == "degraded" and starting["trafficSplit"] == {"1": 100}  # not ready: no share
    assert routes_of(await published(app)) == {"chat": [(f"serving:{ep}:stable", "chat-model", 100.0)]}
    assert "already" not in fail(await c.post(f"{API}/{ep}/redeploy", json={}), 409)["message"]  # one canary
    assert "not serving yet" in fail(await c.post(f"{API}/{ep}/traffic", json={"canaryPercent": 100}), 409)[
        "message"]

    app.runtime.units[(ep, "canary")].phase = "ready"
    await app.reconcile()
    split = data(await c.get(f"{API}/{ep}"))
    assert split["status"] == "ready" and split["trafficSplit"] == {"1": 80, "2": 20}
    assert routes_of(await published(app)) == {"chat": [(f"serving:{ep}:stable", "chat-model", 80.0),
                                                        (f"serving:{ep}:canary", "chat-model", 20.0)]}
    data(await c.post(f"{API}/{ep}/traffic", json={"canaryPercent": 60}))
    assert data(await c.get(f"{API}/{ep}"))["trafficSplit"] == {"1": 40, "2": 60}

    promoted = data(await c.post(f"{API}/{ep}/traffic", json={"canaryPercent": 100, "reason": "looks good"}))
    assert promoted["currentRevision"] == 2 and promoted["canaryRevision"] == 2
    assert promoted["trafficSplit"] == {"2": 100}  # all on the canary slot until stable runs revision 2
    assert routes_of(await published(app)) == {"chat": [(f"serving:{ep}:canary", "chat-model", 100.0)]}
    assert app.runtime.applied[-1] == (ep, "stable", 2)
    assert await states(app, ep) == {1: "superseded", 2: "active"}
    fail(await c.post(f"{API}/{ep}/traffic", json={"canaryPercent": 50}), 409)  # the promotion is finishing

    await app.reconcile()  # the stable slot is not ready on revision 2 yet: the canary keeps serving
    assert (ep, "canary") in app.runtime.units
    app.runtime.units[(ep, "stable")].phase = "ready"
    await app.reconcile()
    done = data(await c.get(f"{API}/{ep}"))
    assert done["canaryRevision"] is None and done["status"] == "ready" and set(done["slots"]) == {"stable"}
    assert (ep, "canary") not in app.runtime.units
    assert routes_of(await published(app)) == {"chat": [(f"serving:{ep}:stable", "chat-model", 100.0)]}
    audit = data(await c.get(f"/llm-ops/v1/audit/logs?action=serving.endpoint.traffic&resourceId={ep}"))
    assert audit["total"] == 2 and audit["items"][0]["detail"] == "canary revision 2: 100%: looks good"


async def test_traffic_zero_and_rollback_drop_the_canary(app: ServingApp) -> None:
    _m, ep = await ready_endpoint(app)
    c = app.client
    data(await c.post(f"{API}/{ep}/redeploy", json={"canaryPercent": 10}))
    await app.reconcile()
    dropped = data(await c.post(f"{API}/{ep}/traffic", json={"canaryPercent": 0}))
    assert dropped["canaryRevision"] is None and dropped["trafficSplit"] == {"1": 100}
    assert (ep, "canary") not in app.runtime.units and (ep, "canary") in app.runtime.deletes
    assert await states(app, ep) == {1: "active", 2: "rolled_back"}
    await app.reconcile()
    assert "canary" not in data(await c.get(f"{API}/{ep}"))["slots"]

    data(await c.post(f"{API}/{ep}/redeploy", json={"canaryPercent": 30}))
    await app.reconcile()
    named = fail(await c.post(f"{API}/{ep}/rollback", json={"revision": 2}), 409)
    assert "runs a canary" in named["message"]
    out = data(await c.post(f"{API}/{ep}/rollback", json={"reason": "p95 regressed"}))
    assert out["canaryRevision"] is None and out["currentRevision"] == 1
    assert await states(app, ep) == {1: "active", 2: "rolled_back", 3: "rolled_back"}
    assert routes_of(await published(app)) == {"chat": [(f"serving:{ep}:stable", "chat-model", 100.0)]}


async def test_rollback_to_previous_and_named_revisions(app: ServingApp) -> None:
    _m, ep = await ready_endpoint(app)
    c = app.client
    assert "no earlier revision" in fail(await c.post(f"{API}/{ep}/rollback", json={}), 409)["message"]
    for _ in range(2):
        data(await c.post(f"{API}/{ep}/redeploy", json={}))
    await app.reconcile()
    assert await states(app, ep) == {1: "superseded", 2: "superseded", 3: "active"}

    back = data(await c.post(f"{API}/{ep}/rollback", json={}))
    assert back["currentRevision"] == 2 and app.runtime.applied[-1] == (ep, "stable", 2)
    assert app.runtime.specs[-1].revision == 2  # revision 2's stored spec, applied again
    assert await states(app, ep) == {1: "superseded", 2: "active", 3: "rolled_back"}
    await app.reconcile()
    assert (await published(app)).providers[0].base_urls == [f"http://fake.test/{ep}/stable/r2/v1"]

    assert data(await c.post(f"{API}/{ep}/rollback", json={}))["currentRevision"] == 1
    forward = data(await c.post(f"{API}/{ep}/rollback", json={"revision": 3}))
    assert forward["currentRevision"] == 3
    assert "already runs" in fail(await c.post(f"{API}/{ep}/rollback", json={"revision": 3}), 409)["message"]
    fail(await c.post(f"{API}/{ep}/rollback", json={"revision": 9}), 404)
    fail(await c.post(f"{API}/{ep}/rollback", json={"revision": 0}), 400)
    audit = data(await c.get(f"/llm-ops/v1/audit/logs?action=serving.endpoint.rollback&resourceId={ep}"))
    assert [e["detail"] for e in audit["items"]][-1] == "Rolled back from revision 3 to 2"


class Gate:
    """A promotion gate provided in-test: the verdict it returns, and what it was asked."""

    def __init__(self) -> None:
        self.verdict = GateVerdict(passed=False, reason="win rate 0.41 < 0.5", evidence={"run": "ev_1"})
        self.asked: list[PromotionRequest] = []

    async def check(self, request: PromotionRequest) -> GateVerdict:
        self.asked.append(request)
        return self.verdict


class GateModule:
    """Stands in for the evaluation module: provides ``PROMOTION_GATE``."""

    name = "evaluation"

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    def routes(self) -> list[Any]:
        return []

    def migrations(self) -> list[Any]:
        return []

    def lifespan(self, ctx: ModuleContext) -> Any:
        ctx.provide(PROMOTION_GATE, self.gate)
        return no_lifespan(ctx)


async def test_promotion_without_a_gate_one_step_at_a_time(app: ServingApp) -> None:
    m, ep = await ready_endpoint(app)
    c = app.client
    operator = await make_key(app.app, "operator")
    assert "one step" in fail(await c.post(f"{API}/{ep}/promote", json={"environment": "PROD"}), 409)["message"]
    assert data(await c.post(f"{API}/{ep}/promote", json={"environment": "STG"}, headers=operator))[
        "environment"] == "STG"
    fail(await c.post(f"{API}/{ep}/promote", json={"environment": "PROD"}, headers=operator), 403)
    assert data(await c.post(f"{API}/{ep}/promote", json={"environment": "PROD"}))["environment"] == "PROD"
    assert "PROD is the last" in fail(await c.post(f"{API}/{ep}/promote", json={"environment": "PROD"}), 409)[
        "message"]
    fail(await c.post(f"{API}/{ep}/promote", json={"environment": "DEV"}), 400)
    audit = data(await c.get(f"/llm-ops/v1/audit/logs?action=serving.endpoint.promote&resourceId={ep}"))
    assert [e["detail"] for e in audit["items"]] == ["STG -> PROD; no gate", "DEV -> STG; no gate"]
    assert m["status"] == "approved"


async def test_promotion_needs_an_approved_model(app: ServingApp) -> None:
    draft = await model(app, "wip", status="draft")
    ep = (await endpoint(app, draft["id"], "wip"))["id"]
    refused = fail(await app.client.post(f"{API}/{ep}/promote", json={"environment": "STG"}), 409)
    assert "Only approved models deploy to STG" in refused["message"]
    assert data(await app.client.get(f"{API}/{ep}"))["environment"] == "DEV"


@pytest.fixture
def gate() -> Iterator[Gate]:
    yield Gate()


async def test_a_failed_gate_refuses_unless_an_admin_overrides_with_a_reason(database_url: str, tmp_path: Path,
                                                                             gate: Gate) -> None:
    async with serving_app(database_url, tmp_path / "data", extra=[GateModule(gate)]) as app:
        _m, ep = await ready_endpoint(app)
        c = app.client
        refused = fail(await c.post(f"{API}/{ep}/promote", json={"environment": "STG"}), 409)
        assert "win rate 0.41 < 0.5" in refused["message"]
        assert refused["data"]["gate"] == {"passed": False, "reason": "win rate 0.41 < 0.5",
                                           "evidence": {"run": "ev_1"}}
        asked = gate.asked[-1]
        assert (asked.endpoint_id, asked.from_environment, asked.to_environment, asked.revision,
                asked.model_version) == (ep, "DEV", "STG", 1, 1)
        operator = await make_key(app.app, "operator")
        fail(await c.post(f"{API}/{ep}/promote", json={"environment": "STG", "override": True, "reason": "x"},
                          headers=operator), 403)
        no_reason = fail(await c.post(f"{API}/{ep}/promote", json={"environment": "STG", "override": True,
                                                                   "reason": "  "}), 422)
        assert no_reason["data"]["errors"][0]["field"] == "reason"
        assert data(await c.get(f"{API}/{ep}"))["environment"] == "DEV"

        over = await c.post(f"{API}/{ep}/promote", json={"environment": "STG", "override": True,
                                                          "reason": "evaluation set is stale; signed off by ML lead"})
        assert data(over)["environment"] == "STG" and "overridden" in over.json()["message"]
        entry = data(await c.get(f"/llm-ops/v1/audit/logs?action=serving.endpoint.promote&resourceId={ep}"))[
            "items"][0]
        assert entry["detail"] == ("DEV -> STG; gate failed: win rate 0.41 < 0.5; overridden: evaluation set is "
                                   "stale; signed off by ML lead")
        assert entry["after"]["gate"]["passed"] is False and entry["after"]["override"] is True
        assert entry["actorName"] == "bootstrap"

        gate.verdict = GateVerdict(passed=True, reason="win rate 0.62")
        assert data(await c.post(f"{API}/{ep}/promote", json={"environment": "PROD"}))["environment"] == "PROD"
        last = data(await c.get(f"/llm-ops/v1/audit/logs?action=serving.endpoint.promote&resourceId={ep}"))[
            "items"][0]
        assert last["detail"] == "STG -> PROD; gate passed: win rate 0.62" and last["after"]["override"] is False


async def test_external_endpoint_canary_and_rollback_need_no_runtime(app: ServingApp) -> None:
    ext = await model(app, "gpt-ext", kind="external")
    ep = (await endpoint(app, ext["id"], "gpt"))["id"]
    c = app.client
    canary = data(await c.post(f"{API}/{ep}/redeploy", json={"canaryPercent": 25}))
    assert canary["trafficSplit"] == {"1": 75, "2": 25}
    assert [w for _p, _m, w in routes_of(await published(app))["gpt"]] == [75.0, 25.0]
    promoted = data(await c.post(f"{API}/{ep}/traffic", json={"canaryPercent": 100}))
    assert promoted["canaryRevision"] is None and promoted["trafficSplit"] == {"2": 100}
    back = data(await c.post(f"{API}/{ep}/rollback", json={}))
    assert back["currentRevision"] == 1 and back["trafficSplit"] == {"1": 100}
    assert app.runtime.applied == [] and app.runtime.deletes == []
    assert fail(await c.post(f"{API}/{ep}/redeploy", json={"gpuCount": 2}), 422)["data"]["errors"][0][
        "field"] == "gpuCount"
    assert isinstance(app.runtime, FakeRuntime)
