"""A runtime that cannot render a deploy refuses it cleanly; specs name their route; canary judging's duty cycle."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.serving import DeploymentSpec, RuntimeFailure, Slot
from tests.control.catalog._helpers import data, fail
from tests.control.serving.serving_support import API, FakeRuntime, ServingApp, endpoint, model, serving_app


@dataclass
class UnrenderableRuntime(FakeRuntime):
    def render(self, spec: DeploymentSpec, slot: Slot) -> list[dict[str, Any]]:
        raise RuntimeFailure("model storage URI must be s3://")


async def test_a_runtime_that_cannot_render_refuses_the_deploy_with_422_and_stores_nothing(
    database_url: str, tmp_path: Path,
) -> None:
    runtime = UnrenderableRuntime()
    async with serving_app(database_url, tmp_path / "data", runtime=runtime) as app:
        m = await model(app, "m")
        refused = fail(await app.client.post(API, json={"name": "nope", "modelId": m["id"]}), 422)
        assert "s3://" in refused["message"]
        assert data(await app.client.get(API))["items"] == []
        assert runtime.applied == []


async def test_the_spec_carries_the_route_keda_wakes_on(app: ServingApp) -> None:
    m = await model(app, "m")
    await endpoint(app, m["id"], "chat", route="team/chat-v1")
    assert app.runtime.specs[-1].labels["llmops.io/route"] == "team/chat-v1"


async def test_slow_canary_judging_runs_at_most_a_twentieth_of_the_time(app: ServingApp) -> None:
    m = await model(app, "m")
    ep = (await endpoint(app, m["id"], "judged"))["id"]
    data(await app.client.post(f"{API}/{ep}/redeploy", json={"canaryPercent": 20}))
    await app.reconcile()
    candidate_type, bounds_type, _real = app.reconciler._judge  # type: ignore[misc]
    calls: list[float] = []

    async def judge(store: Any, candidates: Sequence[Any], bounds: Any, *, delay: float = 0.0) -> list[Any]:
        calls.append(delay)
        await asyncio.sleep(delay)
        return []

    async def slow(store: Any, candidates: Sequence[Any], bounds: Any) -> list[Any]:
        return await judge(store, candidates, bounds, delay=0.15)

    # the real judge's pass above may itself have been slow on a loaded machine: start its duty cycle afresh
    app.reconciler._judge, app.reconciler._judge_after = (candidate_type, bounds_type, slow), 0.0
    for _ in range(3):
        await app.reconcile()
    assert len(calls) == 1  # 0.15 s of judging: the next 3 s of passes skip it

    app.reconciler._judge, app.reconciler._judge_after = (candidate_type, bounds_type, judge), 0.0
    for _ in range(3):
        await app.reconcile()
    assert len(calls) == 4  # a cheap judge runs on every pass


async def test_an_oversized_revision_number_is_a_400_not_a_database_overflow(app: ServingApp) -> None:
    m = await model(app, "m")
    ep = (await endpoint(app, m["id"], "big"))["id"]
    refused = fail(await app.client.post(f"{API}/{ep}/rollback", json={"revision": 2**63}), 400)
    assert "revision" in str(refused)
    assert fail(await app.client.post(f"{API}/{ep}/rollback", json={"revision": 7}), 404)
