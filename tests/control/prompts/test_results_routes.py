"""GET /llm-ops/v1/prompts/experiments/{id}/results on both databases, over records the usage writer's
own ``write_usage`` stored: a known effect is found (its interval covering it), no effect is not,
fallbacks are apart, feedback is joined, no NaN reaches the JSON."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.adminapi.testing import AdminTestApp
from adapters.store import Store
from tests.control.prompts._results_app import results_app, start_experiment
from tests.control.prompts._results_support import API, Traffic, experiment_doc
from tests.control.prompts.conftest import key


@pytest.fixture
async def app(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[AdminTestApp, Store]]:
    async with results_app(database_url, tmp_path) as (admin, _service, store):
        yield admin, store


def strict_json(text: str) -> Any:
    """json.loads refusing NaN and Infinity, which are not JSON."""
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in the response")
    return json.loads(text, parse_constant=refuse)


async def results(admin: AdminTestApp, exp_id: str, **params: Any) -> dict[str, Any]:
    resp = await admin.client.get(f"{API}/{exp_id}/results", params=params)
    assert resp.status_code == 200, resp.text
    return strict_json(resp.text)["data"]  # type: ignore[no-any-return]


def comparison(data: dict[str, Any], metric: str, variant: str = "b") -> dict[str, Any]:
    return next(c for c in data["comparisons"] if c["metric"] == metric and c["variant"] == variant)


def variant(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in data["variants"] if v["variant"] == name)


async def test_known_effect_is_significant_with_an_interval_covering_it(app: tuple[AdminTestApp, Store]) -> None:
    admin, store = app
    await start_experiment(admin, experiment_doc(metric="error_rate", min_effect=0.05))
    t = Traffic(store, "exp1", seed=11)
    await t.records("a", 1500, error_rate=0.05, latency_s=0.50, latency_sd=0.1, cost_usd=0.002)
    await t.records("b", 1500, error_rate=0.15, latency_s=0.70, latency_sd=0.1, cost_usd=0.003)
    data = await results(admin, "exp1")
    err = comparison(data, "error_rate")
    assert err["significant"] and err["pValue"] < 0.001 and err["test"].startswith("two-proportion")
    assert err["ciLow"] < 0.10 < err["ciHigh"] and err["ciLow"] > 0
    lat = comparison(data, "latency_p50_s")
    assert lat["significant"] and lat["ciLow"] < 0.20 < lat["ciHigh"] and "bootstrap" in lat["test"]
    cost = comparison(data, "cost_per_request_usd")
    assert cost["test"] == "Welch t-test" and cost["reason"] == "no variance in either arm: Welch's t does not apply"
    a, b = variant(data, "a"), variant(data, "b")
    assert a["requests"] == b["requests"] == 1500 and a["control"] and not b["control"]
    assert 0.03 < a["errorRate"] < 0.07 and 0.12 < b["errorRate"] < 0.18
    assert a["latencyP50S"] == pytest.approx(0.5, abs=0.02) and b["latencyP95S"] > b["latencyP50S"]
    assert a["costPerRequestUsd"] == pytest.approx(0.002) and a["costUsd"] == "3"  # exact decimal, no exponent
    assert a["promptTokensPerRequest"] == 10 and a["completionTokens"] == 5 * 1500
    ss = data["sampleSize"]
    assert ss["metric"] == "error_rate" and ss["minEffect"] == 0.05 and ss["minEffectSource"] == "configured"
    assert ss["requestsNeeded"] > 100 and set(ss["additionalRequests"]) == {"a", "b"}
    assert data["winnerCandidate"] == "a"  # error rate: lower is better, and b is significantly worse
    assert data["since"] is not None and data["runtime"]["state"] == "running"
    assert data["runtime"]["effectiveWeights"] == {"a": 0.5, "b": 0.5} and not data["sampling"]["sampled"]


async def test_no_effect_is_not_significant(app: tuple[AdminTestApp, Store]) -> None:
    admin, store = app
    await start_experiment(admin, experiment_doc(metric="error_rate"))
    t = Traffic(store, "exp1", seed=5)
    await t.records("a", 1000, error_rate=0.1, latency_s=0.5, latency_sd=0.1)
    await t.records("b", 1000, error_rate=0.1, latency_s=0.5, latency_sd=0.1)
    data = await results(admin, "exp1")
    for metric in ("error_rate", "latency_p50_s", "latency_p95_s"):
        c = comparison(data, metric)
        assert not c["significant"] and c["ciLow"] < 0 < c["ciHigh"], c
    assert data["winnerCandidate"] is None


async def test_fallbacks_counted_apart_and_feedback_joined(app: tuple[AdminTestApp, Store]) -> None:
    admin, store = app
    await start_experiment(admin, experiment_doc())
    t = Traffic(store, "exp1")
    await t.records("a", 30, latency_s=0.5, latency_sd=0.0)
    fell = await t.records("a", 10, latency_s=20.0, latency_sd=0.0, error_rate=1.0, fallback=True)
    await t.records("b", 30, latency_s=0.6, latency_sd=0.0)
    await t.feedback("a", scores=[1, 0, 1, 1], labels=[True, False, True, True])
    await t.feedback("a", scores=[0.0], request_ids=[fell[0].request_id])  # on a fell-back request: out
    await t.feedback("b", scores=[0.5, 0.5], labels=[False, True])
    data = await results(admin, "exp1")
    a, b = variant(data, "a"), variant(data, "b")
    assert (a["requests"], a["fallbacks"], a["errors"], a["errorRate"]) == (30, 10, 0, 0.0)
    assert a["latencyP95S"] == 0.5
    assert (a["feedbackScoreMean"], a["feedbackScores"], a["feedbackRate"], a["feedbackLabels"]) == (0.75, 4, 0.75, 4)
    assert a["feedbackExcludedFallback"] == 1
    assert (b["feedbackScoreMean"], b["feedbackRate"], b["fallbacks"]) == (0.5, 0.5, 0)


async def test_empty_experiment_has_nulls_not_nan(app: tuple[AdminTestApp, Store]) -> None:
    admin, _store = app
    await start_experiment(admin, experiment_doc(guardrails=[{"metric": "latency_p95_s", "max": 2.0}]))
    data = await results(admin, "exp1")
    a = variant(data, "a")
    assert a["requests"] == 0 and a["errorRate"] is None and a["latencyP50S"] is None and a["costUsd"] == "0"
    assert a["costPerRequestUsd"] is None and a["feedbackScoreMean"] is None
    assert all(c["pValue"] is None and c["reason"] for c in data["comparisons"])
    assert data["sampleSize"]["requestsNeeded"] is None and data["sampleSize"]["reason"]
    g = next(g for g in data["guardrails"] if g["variant"] == "b")
    assert g == {"variant": "b", "metric": "latency_p95_s", "max": 2.0, "maxRatioToControl": None,
                 "threshold": 2.0, "value": None, "minRequests": 100, "requests": 0, "evaluated": False,
                 "breached": False, "stopped": False}


async def test_guardrail_status_and_adaptive_runtime(app: tuple[AdminTestApp, Store]) -> None:
    admin, store = app
    await start_experiment(admin, experiment_doc(
        metric="error_rate", adaptive={"min_share": 0.1, "min_requests": 50},
        guardrails=[{"metric": "error_rate", "max": 0.3, "max_ratio_to_control": 2.0, "min_requests": 50}]))
    t = Traffic(store, "exp1", seed=3)
    await t.records("a", 200, error_rate=0.1)
    await t.records("b", 200, error_rate=0.4)
    data = await results(admin, "exp1")
    g = {x["variant"]: x for x in data["guardrails"]}
    assert g["b"]["evaluated"] and g["b"]["breached"] and not g["b"]["stopped"]
    assert g["b"]["value"] == pytest.approx(variant(data, "b")["errorRate"])
    assert g["b"]["threshold"] == pytest.approx(min(0.3, 2 * variant(data, "a")["errorRate"]))
    assert not g["a"]["evaluated"] and not g["a"]["breached"]  # control is never stopped by a guardrail
    adaptive = data["runtime"]["adaptive"]
    assert adaptive["algorithm"] == "thompson" and adaptive["probBest"]["a"] > 0.99
    assert sum(adaptive["suggestedWeights"].values()) == pytest.approx(1.0)


async def test_since_parameter_and_errors(app: tuple[AdminTestApp, Store]) -> None:
    admin, store = app
    await start_experiment(admin, experiment_doc())
    t = Traffic(store, "exp1")
    await t.records("a", 5)
    assert variant(await results(admin, "exp1", since=str(time.time() + 3600)), "a")["requests"] == 0
    assert variant(await results(admin, "exp1", since="2000-01-01T00:00:00Z"), "a")["requests"] == 5
    bad = await admin.client.get(f"{API}/exp1/results", params={"since": "yesterday"})
    assert bad.status_code == 400 and bad.json()["status"] == "fail"
    assert bad.json()["data"]["errors"][0]["field"] == "since"
    missing = await admin.client.get(f"{API}/nope/results")
    assert missing.status_code == 404 and missing.json() == {"status": "fail", "message": "No experiment 'nope'",
                                                             "data": None}


async def test_viewer_may_read_results(app: tuple[AdminTestApp, Store]) -> None:
    admin, _store = app
    await start_experiment(admin, experiment_doc())
    viewer = await key(admin, "viewer")
    resp = await admin.client.get(f"{API}/exp1/results", headers=viewer)
    assert resp.status_code == 200 and resp.json()["data"]["experimentId"] == "exp1"
    anonymous = await admin.client.get(f"{API}/exp1/results", headers={"authorization": ""})
    assert anonymous.status_code == 401
