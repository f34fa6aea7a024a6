"""The reconciler: slots re-applied after a restart, revisions failing and recovering, leftovers swept, a
dropped canary's slot retried, canaries rolled back on the judge's verdict, the background task following
changes by itself, and the local runtime driven by one process only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete

from control.serving.runtimes import Ownership
from control.serving.tables import endpoints, revisions
from tests.control.catalog._helpers import data
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


async def test_a_restarted_control_plane_applies_what_its_records_want(database_url: str, tmp_path: Path) -> None:
    async with serving_app(database_url, tmp_path / "data") as first:
        m = await model(first, "m")
        ep = (await endpoint(first, m["id"], "survivor"))["id"]
        data(await first.client.post(f"{API}/{ep}/redeploy", json={"canaryPercent": 30}))
        await first.reconcile()
    fresh = FakeRuntime()  # the local servers died with the old control plane: nothing runs
    async with serving_app(database_url, tmp_path / "data", runtime=fresh) as second:
        report = await second.reconcile()
        assert sorted(report.applied) == [(ep, "canary", 2), (ep, "stable", 1)]
        assert [s.revision for s in fresh.specs if s.endpoint_id == ep] in ([1, 2], [2, 1])
        snap = await published(second)
        assert {p.base_urls[0] for p in snap.providers} == {f"http://fake.test/{ep}/stable/r1/v1",
                                                            f"http://fake.test/{ep}/canary/r2/v1"}
        assert not (await second.reconcile()).applied  # applied once, not again


async def test_a_revision_fails_on_the_runtime_and_recovers(app: ServingApp) -> None:
    m = await model(app, "m")
    ep = (await endpoint(app, m["id"], "flaky"))["id"]
    unit = app.runtime.units[(ep, "stable")]
    unit.phase, unit.reason, unit.base_url = "failed", "CrashLoopBackOff", None
    await app.reconcile()
    broken = data(await app.client.get(f"{API}/{ep}"))
    assert (broken["status"], broken["statusReason"]) == ("failed", "CrashLoopBackOff")
    assert data(await app.client.get(f"{API}/{ep}/revisions"))["items"][0]["state"] == "failed"
    unit.phase, unit.reason, unit.base_url = "ready", None, f"http://fake.test/{ep}/stable/r1/v1"
    await app.reconcile()
    assert data(await app.client.get(f"{API}/{ep}"))["status"] == "ready"
    assert data(await app.client.get(f"{API}/{ep}/revisions"))["items"][0]["state"] == "active"


async def test_a_failed_rollout_keeps_the_old_revision_serving(app: ServingApp) -> None:
    m = await model(app, "m")
    ep = (await endpoint(app, m["id"], "surge"))["id"]
    await app.reconcile()
    runtime: FakeRuntime = app.runtime
    runtime.units[(ep, "stable")].phase = "ready"

    async def surge_status(endpoint_id: str, name: str, slot: Any) -> Any:  # the old revision still serves
        status = await FakeRuntime.status(runtime, endpoint_id, name, slot)
        if slot == "stable":
            from adapters.serving import RuntimeStatus

            return RuntimeStatus(phase="ready", reason="CrashLoopBackOff", ready_replicas=1, desired_replicas=1,
                                 base_url=f"http://fake.test/{ep}/stable/r1/v1", revision=1,
                                 details={"rollout": {"revision": 2, "phase": "failed"}})
        return status

    runtime.status = surge_status  # type: ignore[method-assign, assignment]
    data(await app.client.post(f"{API}/{ep}/redeploy", json={}))
    await app.reconcile()
    degraded = data(await app.client.get(f"{API}/{ep}"))
    assert (degraded["status"], degraded["statusReason"]) == ("degraded", "CrashLoopBackOff")
    assert degraded["trafficSplit"] == {"1": 100}
    assert routes_of(await published(app)) == {"surge": [(f"serving:{ep}:stable", "m", 100.0)]}
    states = {r["revision"]: r["state"] for r in data(await app.client.get(f"{API}/{ep}/revisions"))["items"]}
    assert states == {1: "superseded", 2: "failed"}
    assert data(await app.client.post(f"{API}/{ep}/rollback", json={}))["currentRevision"] == 1


async def test_leftovers_of_a_vanished_record_are_swept(app: ServingApp) -> None:
    m = await model(app, "m")
    ep = (await endpoint(app, m["id"], "orphan"))["id"]
    await app.reconcile()
    assert app.app.plane.store is not None
    async with app.app.plane.store.begin() as conn:  # another replica deleted it while this one applied
        await conn.execute(delete(revisions).where(revisions.c.endpoint_id == ep))
        await conn.execute(delete(endpoints).where(endpoints.c.id == ep))
    report = await app.reconcile()
    assert report.deleted == [(ep, "all")] and app.runtime.units == {}


async def test_a_dropped_canary_whose_delete_failed_is_deleted_later(app: ServingApp) -> None:
    m = await model(app, "m")
    ep = (await endpoint(app, m["id"], "c"))["id"]
    data(await app.client.post(f"{API}/{ep}/redeploy", json={"canaryPercent": 50}))
    await app.reconcile()
    app.runtime.delete_faults.add(f"{ep}/canary")
    data(await app.client.post(f"{API}/{ep}/traffic", json={"canaryPercent": 0}))
    await app.reconcile()
    lingering = data(await app.client.get(f"{API}/{ep}"))
    assert lingering["slots"]["canary"]["weightPercent"] == 0 and lingering["trafficSplit"] == {"1": 100}
    assert (ep, "canary") in app.runtime.units
    app.runtime.delete_faults.clear()
    await app.reconcile()
    assert (ep, "canary") not in app.runtime.units
    assert "canary" not in data(await app.client.get(f"{API}/{ep}"))["slots"]


@dataclass(frozen=True)
class Verdict:
    action: str
    reason: str
    stats: dict[str, Any]


async def test_a_canary_the_judge_condemns_is_rolled_back_and_audited(app: ServingApp) -> None:
    m = await model(app, "m")
    ep = (await endpoint(app, m["id"], "judged"))["id"]
    data(await app.client.post(f"{API}/{ep}/redeploy", json={"canaryPercent": 20}))
    asked: list[tuple[Sequence[Any], Any]] = []
    verdicts = {ep: Verdict("wait", "12 of 20 canary requests", {})}

    @dataclass(frozen=True)
    class Candidate:
        endpoint_id: str
        stable_provider: str
        canary_provider: str
        since: Any

    @dataclass(frozen=True)
    class Bounds:
        window_s: float
        min_requests: int
        max_error_rate_delta: float
        max_p95_ratio: float

    async def judge(store: Any, candidates: Sequence[Candidate], bounds: Bounds) -> list[tuple[str, Verdict]]:
        asked.append((candidates, bounds))
        return [(c.endpoint_id, verdicts[c.endpoint_id]) for c in candidates]

    app.reconciler._judge = (Candidate, Bounds, judge)
    await app.reconcile()
    (candidate,), bounds = asked[-1]
    assert (candidate.stable_provider, candidate.canary_provider) == (f"serving:{ep}:stable", f"serving:{ep}:canary")
    assert candidate.since is not None and bounds.min_requests == 20 and bounds.max_p95_ratio == 1.5
    assert data(await app.client.get(f"{API}/{ep}"))["canaryRevision"] == 2  # wait: nothing done

    stats = {"stable": {"requests": 200, "errors": 1}, "canary": {"requests": 40, "errors": 9}}
    verdicts[ep] = Verdict("rollback", "canary error rate 0.225 exceeds stable 0.005 by more than 0.05", stats)
    report = await app.reconcile()
    assert report.rolled_back == [ep]
    after = data(await app.client.get(f"{API}/{ep}"))
    assert after["canaryRevision"] is None and after["trafficSplit"] == {"1": 100}
    assert (ep, "canary") not in app.runtime.units
    assert routes_of(await published(app)) == {"judged": [(f"serving:{ep}:stable", "m", 100.0)]}
    revs = {r["revision"]: r["state"] for r in data(await app.client.get(f"{API}/{ep}/revisions"))["items"]}
    assert revs == {1: "active", 2: "rolled_back"}
    entry = data(await app.client.get("/llm-ops/v1/audit/logs?action=serving.canary.auto_rollback"))["items"][0]
    assert entry["actorName"] == "system:canary" and entry["resourceId"] == ep
    assert entry["detail"] == f"canary revision 2 rolled back: {verdicts[ep].reason}"
    assert entry["after"]["verdict"]["stats"] == stats
    asked.clear()
    await app.reconcile()
    assert asked == []  # no canary, nothing to judge


async def test_the_background_task_follows_changes_by_itself(database_url: str, tmp_path: Path) -> None:
    runtime = FakeRuntime(ready_on_apply=False)
    async with serving_app(database_url, tmp_path / "data", runtime=runtime, background=True,
                           env={"SERVING_RECONCILE_INTERVAL_S": "0.2"}) as app:
        m = await model(app, "m")
        ep = (await endpoint(app, m["id"], "auto"))["id"]
        runtime.units[(ep, "stable")].phase = "ready"
        deadline = time.monotonic() + 20
        while routes_of(await published(app)) != {"auto": [(f"serving:{ep}:stable", "m", 100.0)]}:
            assert time.monotonic() < deadline, "the route did not appear"
            await asyncio.sleep(0.05)
        assert data(await app.client.get(f"{API}/{ep}"))["status"] == "ready"


def test_one_process_drives_the_local_runtime(tmp_path: Path) -> None:
    lock = tmp_path / "serving" / "runtime.lock"
    first, second = Ownership("local", lock), Ownership("local", lock)
    assert first.held() and not second.held()
    first.release()
    assert second.held() and not first.held()
    second.release()
    assert Ownership("kubernetes", lock).held() and Ownership("kubernetes", lock).held()  # shared state: all drive


def _usage(n: int, provider: str, *, status: int = 200, latency_s: float = 0.2, tag: str = "") -> list[Any]:
    from adapters.usage_store import UsageRow

    now = time.time()  # after the canary started: the judge reads from then on
    return [UsageRow(record_id=f"{provider[-6:]}{status}{tag}-{i}", request_id=f"q{i}", ts=now - i / 10_000,
                     endpoint="chat", route="judged", model="m", provider=provider, status=status,
                     latency_s=latency_s, usage_source="upstream") for i in range(n)]


async def test_the_installed_judge_rolls_back_a_failing_canary_from_usage_records(app: ServingApp) -> None:
    from adapters.usage_store import write_usage

    assert app.reconciler._judge is not None, "control.serving.canary is installed"
    m = await model(app, "m")
    ep = (await endpoint(app, m["id"], "judged"))["id"]
    data(await app.client.post(f"{API}/{ep}/redeploy", json={"canaryPercent": 20}))
    await app.reconcile()
    stable, canary = f"serving:{ep}:stable", f"serving:{ep}:canary"
    store = app.app.plane.store
    assert store is not None
    await write_usage(store, [*_usage(60, stable), *_usage(15, canary)])
    assert (await app.reconcile()).rolled_back == []  # 15 canary requests, all fine: below the minimum anyway
    await write_usage(store, _usage(10, canary, status=503))
    assert (await app.reconcile()).rolled_back == [ep]
    assert data(await app.client.get(f"{API}/{ep}"))["canaryRevision"] is None
    entry = data(await app.client.get("/llm-ops/v1/audit/logs?action=serving.canary.auto_rollback"))["items"][0]
    assert entry["after"]["verdict"]["stats"]["canary"]["errors"] == 10
    assert entry["after"]["verdict"]["stats"]["stable"]["requests"] == 60



async def test_a_canary_slower_than_its_bound_is_rolled_back_on_p95(app: ServingApp) -> None:
    """The latency bound end to end: no canary request fails, but its p95 goes from 1.25x the stable's (within
    SERVING_CANARY_MAX_P95_RATIO, 1.5) to 3x."""
    from adapters.usage_store import write_usage

    m = await model(app, "m")
    ep = (await endpoint(app, m["id"], "slow"))["id"]
    data(await app.client.post(f"{API}/{ep}/redeploy", json={"canaryPercent": 20}))
    await app.reconcile()
    stable, canary = f"serving:{ep}:stable", f"serving:{ep}:canary"
    store = app.app.plane.store
    assert store is not None
    await write_usage(store, [*_usage(60, stable, latency_s=0.2), *_usage(30, canary, latency_s=0.25)])
    assert (await app.reconcile()).rolled_back == []
    await write_usage(store, _usage(30, canary, latency_s=0.6, tag="slow"))
    assert (await app.reconcile()).rolled_back == [ep]
    entry = data(await app.client.get("/llm-ops/v1/audit/logs?action=serving.canary.auto_rollback"))["items"][0]
    assert "p95 latency" in entry["after"]["verdict"]["reason"] and "max_p95_ratio 1.5" in entry["detail"]
    assert entry["after"]["verdict"]["stats"]["canary"]["errors"] == 0
