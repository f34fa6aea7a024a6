"""The supervisor on both databases: a guardrail breach stops the variant (runtime, event, audit entry,
republished snapshot), once however many supervisors run; adaptive ticks shift weights toward the better
variant and declare it the winner, which then stays; a database outage never crashes it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.adminapi import ModuleContext
from adapters.adminapi.services import ServiceRegistry
from adapters.adminapi.testing import AdminTestApp
from adapters.store import Store
from control.prompts import PromptsService
from control.prompts.analysis import analysis_running
from control.prompts.analysis_settings import AnalysisSettings
from control.prompts.results import RESULTS, ResultsService, effective_weights
from control.prompts.supervisor import Supervisor
from tests.control.prompts._results_app import results_app, start_experiment
from tests.control.prompts._results_support import API, Traffic, experiment_doc
from tests.control.prompts.conftest import published

Plane = tuple[AdminTestApp, PromptsService, Store]


@pytest.fixture
async def plane(database_url: str, tmp_path: Path) -> AsyncIterator[Plane]:
    async with results_app(database_url, tmp_path) as found:
        yield found


class Clock:
    """Wall time, moved forward by hand: adaptive intervals pass without waiting for them."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


async def events(admin: AdminTestApp, exp_id: str, kind: str) -> list[dict[str, Any]]:
    resp = await admin.client.get(f"{API}/{exp_id}/events", params={"pageSize": 200})
    assert resp.status_code == 200, resp.text
    return [e for e in resp.json()["data"]["items"] if e["kind"] == kind]


async def runtime(admin: AdminTestApp, exp_id: str) -> dict[str, Any]:
    return (await admin.client.get(f"{API}/{exp_id}")).json()["data"]["runtime"]  # type: ignore[no-any-return]


GUARDED = {"guardrails": [{"metric": "latency_p95_s", "max": 5.0},
                          {"metric": "error_rate", "max": 0.2, "min_requests": 100}]}


async def test_guardrail_breach_stops_the_variant(plane: Plane) -> None:
    admin, service, store = plane
    await start_experiment(admin, experiment_doc(**GUARDED))
    t = Traffic(store, "exp1", seed=2)
    await t.records("a", 150, error_rate=0.02)
    await t.records("b", 150, error_rate=0.5)
    sup = Supervisor(store, service)
    report = await sup.tick()
    assert report.experiments == 1 and report.failed == 0
    assert (await runtime(admin, "exp1"))["stopped_variants"] == ["b"]
    [event] = await events(admin, "exp1", "guardrail_stop")
    assert event["actor"] == "supervisor" and "variant b stopped by a guardrail: error_rate" in event["message"]
    detail = event["detail"]
    assert (detail["variant"], detail["metric"], detail["threshold"], detail["kind"]) == ("b", "error_rate", 0.2, "max")
    assert 0.35 < detail["value"] < 0.65 and detail["requests"] == 150
    audit = (await admin.client.get("/llm-ops/v1/audit/logs",
                                    params={"action": "prompts.experiment.guardrail_stop"})).json()["data"]
    [entry] = audit["items"]
    assert audit["total"] == 1 and entry["actorName"] == "supervisor" and entry["resourceId"] == "exp1"
    assert entry["after"]["runtime"]["stopped_variants"] == ["b"]
    _templates, experiments = await published(store)
    [spec] = [s for s in experiments.experiments if s.document.id == "exp1"]
    assert spec.runtime.stopped_variants == ["b"]  # the gateway's next snapshot read moves b's traffic
    # Once: another tick, and two more supervisors (replicas) at once, find nothing left to do.
    others = [Supervisor(store, service), Supervisor(store, service)]
    reports = await asyncio.gather(sup.tick(), *(s.tick() for s in others))
    assert all(r.stopped == [] and r.failed == 0 for r in reports)
    assert len(await events(admin, "exp1", "guardrail_stop")) == 1


async def test_replicas_racing_on_a_breach_stop_it_once(plane: Plane) -> None:
    admin, service, store = plane
    await start_experiment(admin, experiment_doc(**GUARDED))
    t = Traffic(store, "exp1", seed=4)
    await t.records("a", 120, error_rate=0.0)
    await t.records("b", 120, error_rate=0.6)
    reports = await asyncio.gather(*(Supervisor(store, service).tick() for _ in range(3)))
    assert sum(len(r.stopped) for r in reports) == 1
    assert len(await events(admin, "exp1", "guardrail_stop")) == 1
    assert (await runtime(admin, "exp1"))["stopped_variants"] == ["b"]


async def test_no_stop_below_min_requests_nor_for_control(plane: Plane) -> None:
    admin, service, store = plane
    await start_experiment(admin, experiment_doc(**GUARDED))
    t = Traffic(store, "exp1", seed=3)
    await t.records("a", 200, error_rate=0.6)  # control breaches: never stopped by a guardrail
    await t.records("b", 60, error_rate=0.6)  # under min_requests
    report = await Supervisor(store, service).tick()
    assert report.checked == 1 and report.stopped == []
    assert (await runtime(admin, "exp1"))["stopped_variants"] == []
    await t.records("b", 60, error_rate=0.6)
    await Supervisor(store, service).tick()
    assert (await runtime(admin, "exp1"))["stopped_variants"] == ["b"]


async def test_adaptive_shifts_weights_then_declares_a_winner_that_stays(plane: Plane) -> None:
    admin, service, store = plane
    await start_experiment(admin, experiment_doc(metric="error_rate",
                                                 adaptive={"min_share": 0.2, "min_requests": 100, "interval_s": 60}))
    t = Traffic(store, "exp1", seed=9)
    clock = Clock()
    sup = Supervisor(store, service, draws=4000, clock=clock)
    shares: list[float] = []
    for _ in range(15):
        exp = await service.get("exp1")
        if exp.runtime.winner is not None:
            break
        split = effective_weights(exp.document, exp.runtime)  # traffic follows the weights the gateway obeys
        await t.records("a", round(100 * split["a"]), error_rate=0.25)
        await t.records("b", round(100 * split["b"]), error_rate=0.05)
        clock.advance(61)
        await sup.tick()
        shares.append(effective_weights(exp.document, (await service.get("exp1")).runtime)["b"])
    rt = await runtime(admin, "exp1")
    assert rt["winner"] == "b", shares
    assert shares[0] > 0.6 and shares[-1] == 1.0  # toward b at once (min_share kept a), then all of it
    weights = await events(admin, "exp1", "weights")
    assert weights and all(e["actor"] == "supervisor" for e in weights)
    assert min(e["detail"]["weights"]["a"] for e in weights) >= 0.2 - 1e-9  # min_share honoured
    [winner] = await events(admin, "exp1", "winner")
    assert winner["detail"]["winner"] == "b" and winner["detail"]["probBest"]["b"] >= 0.95
    # The winner stays, whatever the data says afterwards (only a restart clears it).
    await t.records("b", 400, error_rate=0.9)
    for _ in range(2):
        clock.advance(61)
        await sup.tick()
    assert (await runtime(admin, "exp1"))["winner"] == "b"
    assert len(await events(admin, "exp1", "winner")) == 1


async def test_adaptive_writes_weights_only_when_they_move(plane: Plane) -> None:
    admin, service, store = plane
    await start_experiment(admin, experiment_doc(metric="error_rate",
                                                 adaptive={"min_share": 0.1, "min_requests": 10_000}))
    t = Traffic(store, "exp1", seed=1)
    await t.records("a", 100, error_rate=0.3)
    await t.records("b", 100, error_rate=0.1)
    clock = Clock()
    sup = Supervisor(store, service, clock=clock)
    await sup.tick()
    assert len(await events(admin, "exp1", "weights")) == 1
    await sup.tick()  # within adaptive.interval_s: not run
    clock.advance(61)
    await sup.tick()  # due, same data: the same weights, nothing written
    assert len(await events(admin, "exp1", "weights")) == 1
    other = Supervisor(store, service, clock=clock)  # another replica: the last weights event is recent
    clock.advance(-30)
    await t.records("a", 300, error_rate=0.0)  # would move the weights
    assert (await other.tick()).checked == 0 and len(await events(admin, "exp1", "weights")) == 1


async def test_a_check_is_not_repeated_before_duty_times_its_duration(plane: Plane) -> None:
    admin, service, store = plane
    await start_experiment(admin, experiment_doc(**GUARDED))
    await Traffic(store, "exp1").records("a", 10)
    now = [time.time()]
    sup = Supervisor(store, service, clock=lambda: now[0])  # a clock that moves only when told
    assert (await sup.tick()).checked == 1
    assert (await sup.tick()).checked == 0  # not DUTY x the first check's duration later yet
    now[0] += 3600
    assert (await sup.tick()).checked == 1


async def test_the_module_lifespan_runs_the_supervisor_in_the_background(plane: Plane, tmp_path: Path) -> None:
    """``analysis_running`` (what the module's lifespan enters) provides the results service and ticks on
    its own: a breach is acted on with no hand-made tick."""
    admin, service, store = plane
    await start_experiment(admin, experiment_doc(**GUARDED))
    t = Traffic(store, "exp1", seed=8)
    await t.records("a", 120, error_rate=0.0)
    await t.records("b", 120, error_rate=0.7)
    ctx = ModuleContext(name="prompts", store=store, changes=store.changes, audit=admin.plane._require_running().audit,
                        settings=admin.plane.cfg, data_dir=tmp_path, services=ServiceRegistry())

    class Settings:
        analysis = AnalysisSettings(interval_s=0.05)

    async with analysis_running(ctx, service, Settings()):
        assert isinstance(ctx.services[RESULTS], ResultsService)
        async with asyncio.timeout(30):
            while (await service.get("exp1")).runtime.stopped_variants != ["b"]:
                await asyncio.sleep(0.05)  # polling the state the supervisor writes
    assert len(await events(admin, "exp1", "guardrail_stop")) == 1
