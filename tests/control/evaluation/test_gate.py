"""Promotion gates: their REST, and their verdicts through the serving module's promote API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from control.evaluation import EvaluationModule
from control.evaluation.tables import gates
from tests.control.evaluation.support_j import API, agg, data, fail, key, seed_run
from tests.control.serving.serving_support import API as SERVING
from tests.control.serving.serving_support import ServingApp, endpoint, model, serving_app

GATES = f"{API}/gates"


@pytest.fixture
async def app(database_url: str, tmp_path: Path) -> AsyncIterator[ServingApp]:
    async with serving_app(database_url, tmp_path / "data", extra=[EvaluationModule()]) as app:
        yield app


async def staged(app: ServingApp, name: str = "chat") -> tuple[str, str, str]:
    """An approved model's endpoint, ready and promoted to STG: ``(model id, endpoint id, route)``."""
    m = await model(app, f"{name}-model")
    ep = await endpoint(app, m["id"], name)
    await app.reconcile()
    data(await app.client.post(f"{SERVING}/{ep['id']}/promote", json={"environment": "STG"}))
    return m["id"], ep["id"], ep["route"]


async def promote(app: ServingApp, ep: str, status: int = 200, **extra: Any) -> dict[str, Any]:
    resp = await app.client.post(f"{SERVING}/{ep}/promote", json={"environment": "PROD", **extra})
    return data(resp) if status == 200 else fail(resp, status)  # type: ignore[no-any-return]


def on_endpoint(ep: str, route: str) -> list[dict[str, str]]:
    return [{"kind": "endpoint", "id": ep, "route": route}]


async def test_gate_rest(app: ServingApp) -> None:
    c = app.client
    m, ep, _ = await staged(app)
    cfg = {"thresholds": [{"metric": "judge_score", "min": 4}], "datasetId": "ds_a"}
    gate = data(await c.put(f"{GATES}/model/{m}", json=cfg))
    assert gate["subjectKind"] == "model" and gate["subjectId"] == m and gate["updatedBy"] == "bootstrap"
    assert gate["config"]["thresholds"] == [{"metric": "judge_score", "min": 4.0, "max": None}]
    assert data(await c.get(f"{GATES}/model/{m}"))["config"] == gate["config"]
    replaced = data(await c.put(f"{GATES}/model/{m}", json={"thresholds": [{"metric": "bleu", "max": 90}]}))
    assert replaced["config"]["thresholds"][0]["metric"] == "bleu"

    bad = fail(await c.put(f"{GATES}/endpoint/{ep}", json={"thresholds": [{"metric": "bleu"}],
                                                            "baseline": {"kind": "route", "id": "prod"}}), 422)
    assert [e["field"] for e in bad["data"]["errors"]] == ["thresholds[0]", "nonInferiorityMetric",
                                                           "nonInferiorityMargin"]
    assert fail(await c.put(f"{GATES}/endpoint/{ep}", json={"thresholds": [{"metric": "bleu", "min": 5, "max": 1}]}),
                422)["data"]["errors"][0]["message"] == "min is above max"
    fail(await c.put(f"{GATES}/endpoint/{ep}", json={"thresholds": [{"metric": "nope", "min": 1}]}), 400)
    fail(await c.put(f"{GATES}/endpoint/ep_missing", json={}), 404)
    fail(await c.put(f"{GATES}/model/mdl_missing", json={}), 404)
    fail(await c.put(f"{GATES}/team/{m}", json={}), 400)

    viewer, _ = await key(app.app, "viewer", "v")
    developer, _ = await key(app.app, "developer", "d")
    data(await c.get(f"{GATES}/model/{m}", headers=viewer))
    fail(await c.put(f"{GATES}/model/{m}", json={}, headers=viewer), 403)
    data(await c.put(f"{GATES}/endpoint/{ep}", json={}, headers=developer))
    assert data(await c.delete(f"{GATES}/endpoint/{ep}", headers=developer)) == {"deleted": True}
    fail(await c.get(f"{GATES}/endpoint/{ep}"), 404)
    fail(await c.delete(f"{GATES}/endpoint/{ep}"), 404)
    audit = data(await c.get("/llm-ops/v1/audit/logs?resourceType=gate"))["items"]
    assert [(e["action"], e["resourceId"]) for e in audit][:2] == [
        ("evaluation.gate.delete", f"endpoint/{ep}"), ("evaluation.gate.put", f"endpoint/{ep}")]


async def test_only_prod_is_gated_and_no_gate_passes(app: ServingApp) -> None:
    _m, ep, _ = await staged(app)  # DEV -> STG went through the gate: "not gated"
    audit = data(await app.client.get(f"/llm-ops/v1/audit/logs?action=serving.endpoint.promote&resourceId={ep}"))
    assert audit["items"][0]["detail"] == "DEV -> STG; gate passed: not gated: only promotions to PROD are (DEV -> STG)"
    assert (await promote(app, ep))["environment"] == "PROD"
    audit = data(await app.client.get(f"/llm-ops/v1/audit/logs?action=serving.endpoint.promote&resourceId={ep}"))
    assert audit["items"][0]["detail"] == "STG -> PROD; gate passed: no gate configured for the endpoint or its model"


async def test_thresholds_on_the_latest_run_of_the_candidate(app: ServingApp) -> None:
    m, ep, route = await staged(app)
    store = app.app.plane.store
    data(await app.client.put(f"{GATES}/model/{m}", json={
        "thresholds": [{"metric": "judge_score", "min": 4}, {"metric": "latency_s", "max": 2}], "datasetId": "ds_a"}))
    refused = await promote(app, ep, 409)
    assert "no succeeded evaluation run on dataset ds_a on endpoint chat" in refused["message"]

    await seed_run(store, targets=on_endpoint(ep, route), metrics={"0": {"judge_score": agg(4.5), "latency_s": agg(1)}},
                   dataset=("ds_other", 1))  # another dataset: not evidence for this gate
    old = await seed_run(store, targets=[{"kind": "route", "id": route, "route": route}], age_s=60,
                         metrics={"0": {"judge_score": agg(4.8), "latency_s": agg(1)}})
    low = await seed_run(store, targets=[{"kind": "model", "id": m, "route": route}], age_s=10,
                         metrics={"0": {"judge_score": agg(3.5), "latency_s": agg(1.5)}})
    refused = await promote(app, ep, 409)
    verdict = refused["data"]["gate"]
    assert verdict["passed"] is False
    assert verdict["reason"] == f"run {low}: judge_score 3.5 fails min 4; latency_s 1.5 meets max 2"
    assert verdict["evidence"]["candidateRun"] == low and verdict["evidence"]["gate"] == f"model/{m}"
    assert old != low

    unavailable = await seed_run(store, targets=on_endpoint(ep, route), age_s=5, metrics={"0": {
        "judge_score": agg(None, 0, available=False), "latency_s": agg(1)}})
    assert "judge_score unavailable" in (await promote(app, ep, 409))["data"]["gate"]["reason"]
    missing = await seed_run(store, targets=on_endpoint(ep, route), age_s=4, metrics={"0": {"latency_s": agg(1)}})
    assert f"run {missing}: judge_score missing from the run (fails)" in (await promote(app, ep, 409))["message"]
    assert unavailable != missing

    good = await seed_run(store, targets=[{"kind": "route", "id": "other", "route": "other"}, *on_endpoint(ep, route)],
                          metrics={"1": {"judge_score": agg(4.2), "latency_s": agg(0.5)}})  # the second target
    promoted = await app.client.post(f"{SERVING}/{ep}/promote", json={"environment": "PROD"})
    assert data(promoted)["environment"] == "PROD"
    entry = data(await app.client.get(f"/llm-ops/v1/audit/logs?action=serving.endpoint.promote&resourceId={ep}"))[
        "items"][0]
    assert entry["after"]["gate"]["evidence"]["candidateRun"] == good
    assert entry["after"]["gate"]["evidence"]["candidateTarget"] == 1
    assert "judge_score 4.2 meets min 4" in entry["detail"]


async def test_an_admin_overrides_a_failed_gate(app: ServingApp) -> None:
    _m, ep, _ = await staged(app)
    data(await app.client.put(f"{GATES}/endpoint/{ep}", json={"thresholds": [{"metric": "bleu", "min": 30}]}))
    await promote(app, ep, 409)
    over = await promote(app, ep, override=True, reason="hotfix; evaluated by hand")
    assert over["environment"] == "PROD"
    entry = data(await app.client.get(f"/llm-ops/v1/audit/logs?action=serving.endpoint.promote&resourceId={ep}"))[
        "items"][0]
    assert entry["after"]["override"] is True and "overridden: hotfix" in entry["detail"]


def _per_row(values: list[float]) -> dict[int, dict[int, dict[str, float]]]:
    return {0: {i: {"token_f1": v} for i, v in enumerate(values)}}


async def test_non_inferiority_against_the_baselines_latest_run(app: ServingApp) -> None:
    m, ep, route = await staged(app)
    store = app.app.plane.store
    base = [0.6, 0.8] * 15
    data(await app.client.put(f"{GATES}/endpoint/{ep}", json={
        "baseline": {"kind": "route", "id": "prod-chat"}, "nonInferiorityMetric": "token_f1",
        "nonInferiorityMargin": 0.05}))
    # The model's gate would pass outright; the endpoint's own gate wins.
    data(await app.client.put(f"{GATES}/model/{m}", json={}))
    cand = await seed_run(store, targets=on_endpoint(ep, route), scores=_per_row([b - 0.01 for b in base]))
    refused = await promote(app, ep, 409)
    assert "no succeeded run on baseline route prod-chat on dataset ds_a v1 to compare token_f1" in refused["message"]

    await seed_run(store, targets=[{"kind": "route", "id": "prod-chat", "route": "prod-chat"}], dataset=("ds_a", 2),
                   scores=_per_row(base))  # another version of the dataset: not comparable
    baseline = await seed_run(store, targets=[{"kind": "route", "id": "prod-chat", "route": "prod-chat"}],
                              scores=_per_row(base), age_s=30)
    verdict = (await app.client.post(f"{SERVING}/{ep}/promote", json={"environment": "PROD", "override": False}))
    assert verdict.status_code == 200, verdict.text
    entry = data(await app.client.get(f"/llm-ops/v1/audit/logs?action=serving.endpoint.promote&resourceId={ep}"))[
        "items"][0]["after"]["gate"]
    assert entry["evidence"]["candidateRun"] == cand and entry["evidence"]["baselineRun"] == baseline
    assert entry["reason"].startswith(f"non-inferior to baseline route prod-chat (run {baseline}) within margin "
                                      f"0.05: token_f1: difference -0.01 (95% CI -0.01 to -0.01, 30 shared items")


async def test_an_inferior_candidate_is_refused(app: ServingApp) -> None:
    m, ep, route = await staged(app)
    store = app.app.plane.store
    base = [0.6, 0.8] * 15
    data(await app.client.put(f"{GATES}/model/{m}", json={
        "baseline": {"kind": "route", "id": "prod-chat"}, "nonInferiorityMetric": "token_f1",
        "nonInferiorityMargin": 0.05, "thresholds": [{"metric": "token_f1", "min": 0.5}]}))
    await seed_run(store, targets=[{"kind": "route", "id": "prod-chat", "route": "prod-chat"}], scores=_per_row(base))
    # 0.1 worse on half the rows, equal on the rest: mean -0.05, CI low below -0.05.
    await seed_run(store, targets=on_endpoint(ep, route), metrics={"0": {"token_f1": agg(0.65)}},
                   scores=_per_row([b - (0.1 if i % 3 else 0.0) for i, b in enumerate(base)]))
    reason = (await promote(app, ep, 409))["data"]["gate"]["reason"]
    assert "token_f1 0.65 meets min 0.5" in reason
    assert "inferior or not shown non-inferior to baseline route prod-chat" in reason
    assert "lower is better" not in reason and "higher is better" in reason


async def test_the_gate_never_raises(app: ServingApp) -> None:
    m, ep, _ = await staged(app)
    data(await app.client.put(f"{GATES}/model/{m}", json={"thresholds": [{"metric": "bleu", "min": 1}]}))
    async with app.app.plane.store.begin() as conn:  # a row this version cannot read
        await conn.execute(update(gates).values(config={"thresholds": "not a list"}))
    refused = await promote(app, ep, 409)
    assert refused["data"]["gate"]["passed"] is False
    assert "the gate could not judge this promotion (ValidationError)" in refused["message"]
