"""``GET runs/compare``: metric by metric, paired on shared dataset rows, and the recommendation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.adminapi import ControlCfg
from adapters.adminapi.testing import AdminTestApp, admin_test_app
from control.evaluation import EvaluationModule
from control.evaluation.compare import paired_difference, recommend
from control.evaluation.protocol import Aggregate
from tests.control.evaluation.support_j import API, agg, data, fail, seed_run

COMPARE = f"{API}/runs/compare"


@pytest.fixture
async def app(database_url: str, tmp_path: Path) -> AsyncIterator[AdminTestApp]:
    cfg = ControlCfg(database_url=database_url, data_dir=str(tmp_path / "data"), change_feed="local",
                     module_settings={"evaluation": {"worker": False}})
    async with admin_test_app(cfg, modules=[EvaluationModule()]) as app:  # its runs/{runId} routes too
        yield app


def _scores(**metrics: list[float]) -> dict[int, dict[int, dict[str, float]]]:
    rows = len(next(iter(metrics.values())))
    return {0: {i: {m: v[i] for m, v in metrics.items()} for i in range(rows)}}


BASE_F1 = [0.5, 0.6] * 10
DIFFS = [0.1, 0.3] * 10  # mean 0.2, every pair better: the CI is (0.1, 0.3) at most, entirely positive


async def two_runs(app: AdminTestApp, *, cand_latency: list[float] | None = None,
                   dataset: tuple[str, int] = ("ds_a", 1)) -> tuple[str, str]:
    store = app.plane.store
    base = await seed_run(store, scores=_scores(token_f1=BASE_F1, latency_s=[1.0] * 20),
                          metrics={"0": {"token_f1": agg(0.55), "latency_s": agg(1.0)}})
    cand = await seed_run(store, dataset=dataset, scores=_scores(
        token_f1=[b + d for b, d in zip(BASE_F1, DIFFS, strict=True)],
        latency_s=cand_latency or [1.02, 0.98] * 10), metrics={"0": {"token_f1": agg(0.75), "latency_s": agg(1.0)}})
    return base, cand


async def test_a_better_candidate_is_recommended_with_its_numbers(app: AdminTestApp) -> None:
    base, cand = await two_runs(app)
    found = data(await app.client.get(COMPARE, params={"runIds": f"{base},{cand}"}))
    assert found["runIds"] == [base, cand]
    by_metric = {m["metric"]: m for m in found["metrics"]}
    f1 = by_metric["token_f1"]
    assert f1["values"][base]["value"] == 0.55 and f1["values"][cand]["value"] == 0.75  # the runs' own aggregates
    assert f1["sharedItems"] == 20 and f1["higherIsBetter"] is True
    assert f1["difference"]["value"] == pytest.approx(0.2)
    assert 0.1 <= f1["difference"]["ciLow"] < 0.2 < f1["difference"]["ciHigh"] <= 0.3
    assert by_metric["latency_s"]["higherIsBetter"] is False
    rec = found["recommendation"]
    assert rec["promote"] is True, rec
    assert any(r.startswith("better on token_f1: difference 0.2 (95% CI 0.1") and "20 shared items" in r
               for r in rec["reasons"]), rec


async def test_significantly_worse_latency_blocks_promotion(app: AdminTestApp) -> None:
    base, cand = await two_runs(app, cand_latency=[1.4, 1.6] * 10)  # +0.5 s on every row; lower is better
    found = data(await app.client.get(COMPARE, params={"runIds": f"{base},{cand}"}))
    latency = {m["metric"]: m for m in found["metrics"]}["latency_s"]["difference"]
    assert latency["value"] == pytest.approx(0.5) and latency["ciLow"] > 0
    rec = found["recommendation"]
    assert rec["promote"] is False
    assert rec["reasons"][0].startswith("worse on latency_s: difference 0.5"), rec
    assert "lower is better" in rec["reasons"][0]


async def test_only_shared_rows_are_paired(app: AdminTestApp) -> None:
    store = app.plane.store
    a = await seed_run(store, scores={0: {i: {"exact_match": 1.0} for i in range(0, 10)}})
    b = await seed_run(store, scores={0: {i: {"exact_match": 0.0} for i in range(5, 15)}})
    c = await seed_run(store, scores={0: {i: {"exact_match": 0.0} for i in range(20, 30)}})
    em = data(await app.client.get(COMPARE, params={"runIds": f"{a},{b}"}))["metrics"][0]
    assert em["sharedItems"] == 5 and em["difference"]["value"] == -1.0 and em["differences"] == {}
    three = data(await app.client.get(COMPARE, params={"runIds": f"{a},{b},{c}"}))["metrics"][0]
    assert three["differences"][b]["n"] == 5 and three["differences"][c] is None
    assert three["difference"] == three["differences"][b]
    disjoint = data(await app.client.get(COMPARE, params={"runIds": f"{a},{c}"}))
    assert disjoint["metrics"][0]["difference"] is None and disjoint["metrics"][0]["sharedItems"] == 0
    assert disjoint["recommendation"] == {
        "promote": False, "reasons": ["no quality metric could be compared on shared items with a confidence "
                                      "interval"]}


async def test_a_pairwise_runs_second_target_is_an_arm(app: AdminTestApp) -> None:
    run = await seed_run(app.plane.store, targets=[{"kind": "route", "id": "a", "route": "a"},
                                                    {"kind": "route", "id": "b", "route": "b"}],
                         scores={0: {i: {"bleu": 10.0} for i in range(4)},
                                 1: {i: {"bleu": 12.0 + i} for i in range(4)}})
    found = data(await app.client.get(COMPARE, params={"runIds": f"{run},{run}:1"}))
    assert found["runIds"] == [run, f"{run}:1"]
    assert found["metrics"][0]["difference"]["value"] == pytest.approx(3.5)  # (2 + 3 + 4 + 5) / 4
    fail(await app.client.get(COMPARE, params={"runIds": f"{run},{run}:2"}), 400)
    assert "no target 1" in fail(await app.client.get(COMPARE, params={"runIds": f"{run},"
                                                                      f"{await seed_run(app.plane.store)}:1"}),
                                 404)["message"]


async def test_refusals(app: AdminTestApp) -> None:
    base, other_version = await two_runs(app, dataset=("ds_a", 2))
    clash = fail(await app.client.get(COMPARE, params={"runIds": f"{base},{other_version}"}), 409)
    assert "same dataset version" in clash["message"] and "ds_a v2" in clash["message"]
    assert clash["data"]["datasets"][other_version] == {"datasetId": "ds_a", "version": 2}
    running = await seed_run(app.plane.store, status="running")
    assert f"{running} is running" in fail(await app.client.get(COMPARE, params={"runIds": f"{base},{running}"}),
                                          409)["message"]
    assert "No evaluation run 'run_nope'" in fail(
        await app.client.get(COMPARE, params={"runIds": f"{base},run_nope"}), 404)["message"]
    for bad in (base, ",".join([base] * 6), f"{base}, {base}", f"{base};x", f"{base},"):
        fail(await app.client.get(COMPARE, params={"runIds": bad}), 400)
    assert fail(await app.client.get(COMPARE, params={"runIds": f"{base},{base}"}), 422)["data"]["errors"][0][
        "field"] == "runIds"
    fail(await app.client.get(COMPARE), 400)


async def test_viewers_may_compare(app: AdminTestApp) -> None:
    from tests.control.evaluation.support_j import key

    base, cand = await two_runs(app)
    viewer, _ = await key(app, "viewer", "v")
    data(await app.client.get(COMPARE, params={"runIds": f"{base},{cand}"}, headers=viewer))
    fail(await app.client.get(COMPARE, params={"runIds": f"{base},{cand}"}, headers={"authorization": ""}), 401)


def _diff(value: float, low: float, high: float, n: int = 30) -> Aggregate:
    return Aggregate(value=value, ci_low=low, ci_high=high, n=n)


def test_recommendation_rules() -> None:
    # Not significantly worse anywhere, a quality metric compared: promote, and say which were not inferior.
    rec = recommend({"bleu": _diff(-0.5, -1.5, 0.5), "cost_usd": _diff(0.0, -0.1, 0.1)})
    assert rec.promote and rec.reasons == ["not inferior on bleu: difference -0.5 (95% CI -1.5 to 0.5, 30 shared "
                                           "items; higher is better)"]
    # Lower is better: a CI entirely below zero on cost is an improvement, above zero a regression.
    assert recommend({"bleu": _diff(0, -1, 1), "cost_usd": _diff(-0.2, -0.3, -0.1)}).promote
    worse = recommend({"bleu": _diff(0, -1, 1), "perplexity": _diff(2.0, 1.0, 3.0)})
    assert not worse.promote and worse.reasons[0].startswith("worse on perplexity")
    # Token counts never decide; without any quality metric there is no recommendation to promote.
    assert recommend({"bleu": _diff(0, -1, 1), "completion_tokens": _diff(50, 40, 60)}).promote
    assert not recommend({"latency_s": _diff(-1, -2, -0.5)}).promote
    # A quality metric with no CI (one shared row) shows no evidence either way.
    assert not recommend({"bleu": Aggregate(value=1.0, ci_low=None, ci_high=None, n=1)}).promote


def test_paired_difference_is_candidate_minus_baseline_on_shared_rows() -> None:
    diff: Any = paired_difference({0: 1.0, 1: 2.0, 2: 3.0, 9: 100.0}, {0: 2.0, 1: 2.0, 2: 5.0, 7: -100.0})
    assert diff.n == 3 and diff.value == pytest.approx(1.0)
    assert paired_difference({0: 1.0}, {1: 1.0}) is None
