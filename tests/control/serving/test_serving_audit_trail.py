"""Issue 12's "every change is audited" and "every deploy creates an immutable revision", over one endpoint's
whole life on the ``FakeRuntime``: create, redeploy, a canary, its traffic, both kinds of rollback, promotion
and delete each leave one audit entry with the state before and after; no later call edits what a revision
recorded (model version, image, resources, args, manifests), only its ``state``."""

from __future__ import annotations

from typing import Any

from tests.control.catalog._helpers import data
from tests.control.serving.serving_support import API, ServingApp, endpoint, model

AUDIT = "/llm-ops/v1/audit/logs"
# What the runtime reports back or the lifecycle moves: everything else on a revision is its immutable record.
_MOVING = {"state", "reason"}


async def _revisions(app: ServingApp, ep: str) -> dict[int, dict[str, Any]]:
    page = data(await app.client.get(f"{API}/{ep}/revisions?pageSize=100"))
    return {r["revision"]: r for r in page["items"]}


def _record(revision: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in revision.items() if k not in _MOVING}


async def test_every_change_is_audited_and_revisions_are_never_edited(app: ServingApp) -> None:
    c = app.client
    m = await model(app, "audited")
    ep = (await endpoint(app, m["id"], "audited", useGpu=False, vllmArgs=["--max-model-len=2048"]))["id"]
    await app.reconcile()
    recorded: dict[int, dict[str, Any]] = {}

    async def step(method: str, path: str, body: dict[str, Any] | None = None) -> None:
        """One call; then every revision recorded so far is still what it was when first listed."""
        resp = await (c.post(path, json=body) if method == "post" else c.delete(path))
        data(resp)
        await app.reconcile()
        if method == "delete":
            return
        for number, revision in (await _revisions(app, ep)).items():
            assert _record(revision) == recorded.setdefault(number, _record(revision)), f"revision {number} edited"

    await step("post", f"{API}/{ep}/redeploy", {"vllmArgs": ["--max-model-len=4096"], "reason": "longer"})
    await step("post", f"{API}/{ep}/redeploy", {"canaryPercent": 20, "servingRuntimeImage": "registry.local/v:2"})
    await step("post", f"{API}/{ep}/traffic", {"canaryPercent": 50})
    await step("post", f"{API}/{ep}/rollback", {"reason": "canary p95"})
    await step("post", f"{API}/{ep}/rollback", {"revision": 1})
    await step("post", f"{API}/{ep}/promote", {"environment": "STG"})
    assert set(recorded) == {1, 2, 3}
    assert [recorded[n]["vllmArgs"] for n in (1, 2)] == [["--max-model-len=2048"], ["--max-model-len=4096"]]
    assert recorded[3]["image"] == "registry.local/v:2" and recorded[3]["manifests"][0]["revision"] == 3
    assert {n: r["state"] for n, r in (await _revisions(app, ep)).items()} == {
        1: "active", 2: "rolled_back", 3: "rolled_back"}
    await step("delete", f"{API}/{ep}")

    entries = data(await c.get(f"{AUDIT}?resourceId={ep}&action=serving.*&pageSize=100"))["items"][::-1]
    assert [e["action"] for e in entries] == [
        "serving.endpoint.create", "serving.endpoint.redeploy", "serving.endpoint.redeploy",
        "serving.endpoint.traffic", "serving.endpoint.rollback", "serving.endpoint.rollback",
        "serving.endpoint.promote", "serving.endpoint.delete", "serving.endpoint.deleted"]
    assert all(e["actorName"] == "bootstrap" and e["outcome"] == "success" for e in entries)
    create, redeploy, canary, traffic, drop, back, promote, delete, deleted = entries
    assert create["before"] is None and create["after"]["currentRevision"] == 1
    assert (redeploy["before"]["currentRevision"], redeploy["after"]["currentRevision"]) == (1, 2)
    assert redeploy["detail"] == "revision 2 (stable): longer"
    assert canary["after"]["canaryRevision"] == 3 and canary["detail"].startswith("revision 3 (canary, 20%)")
    assert traffic["after"]["trafficSplit"] == {"2": 50, "3": 50}
    assert drop["before"]["canaryRevision"] == 3 and drop["after"]["canaryRevision"] is None
    assert (back["before"]["currentRevision"], back["after"]["currentRevision"]) == (2, 1)
    assert (promote["before"]["environment"], promote["after"]["endpoint"]["environment"]) == ("DEV", "STG")
    assert delete["before"]["environment"] == "STG" and deleted["before"]["id"] == ep
