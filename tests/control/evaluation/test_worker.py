"""The worker against a real gateway routing to the mock upstream: outputs, tokens, cost, metrics, bounds."""

from __future__ import annotations

import asyncio
import csv
import io
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from adapters.dataplane import usage_records
from adapters.testdoubles.mock_state import Fault, MockConfig, ScriptRule
from adapters.testdoubles.mock_upstream import MockServer
from tests.control.evaluation.support import (
    API,
    FakeCatalog,
    Forwarder,
    finished,
    gateway,
    plane,
    qa_rows,
    run_body,
    settings,
    until,
)


async def test_a_run_generates_through_the_gateway_and_scores_every_item(database_url: str, tmp_path: Path,
                                                                         mock: MockServer) -> None:
    mock.config = MockConfig(script=[ScriptRule(match="number 1", reply="answer 1"),
                                     ScriptRule(match="number 2", reply="Answer 2!")])
    catalog = FakeCatalog()
    catalog.datasets.add("ds", qa_rows(6))
    async with gateway(database_url, tmp_path, mock) as gw, \
            plane(database_url, tmp_path, catalog, settings(gw.url)) as (app, _module):
        created = await app.client.post(f"{API}/runs", json=run_body())
        assert created.status_code == 201, created.text
        run = created.json()["data"]
        assert run["status"] == "queued" and run["progress"] == {"done": 0, "failed": 0, "total": 6}
        assert run["targets"] == [{"kind": "route", "id": "r", "route": "r"}]
        done = await finished(app, run["id"])
        assert done["status"] == "succeeded", done
        assert done["progress"] == {"done": 6, "failed": 0, "total": 6}
        items = (await app.client.get(f"{API}/runs/{run['id']}/items", params={"pageSize": 10})).json()["data"]
        assert items["total"] == 6
        by_index = {i["index"]: i for i in items["items"]}
        assert by_index[1]["outputs"][0]["text"] == "answer 1"
        assert by_index[1]["scores"]["0"]["exact_match"] == 1.0
        assert by_index[2]["scores"]["0"]["exact_match"] == 1.0  # SQuAD normalisation: case, punctuation
        assert by_index[3]["scores"]["0"]["exact_match"] == 0.0
        out = by_index[3]["outputs"][0]
        assert out["promptTokens"] == 4 and out["completionTokens"] == 16  # the mock counts words (and the role)
        # the gateway priced it: 4 * $0.001 + 16 * $0.002
        assert Decimal(out["costUsd"]) == Decimal("0.036")
        async with app.plane.store.read() as conn:  # type: ignore[union-attr]
            usage = (await conn.execute(select(usage_records.c.request_id).where(
                usage_records.c.request_id == out["requestId"]))).scalar_one()
        assert usage.startswith(run["id"])
        metrics = done["metrics"]["0"]
        assert metrics["exact_match"]["value"] == 2 / 6 and metrics["exact_match"]["n"] == 6
        assert metrics["exact_match"]["ciLow"] <= 2 / 6 <= metrics["exact_match"]["ciHigh"]
        assert metrics["bleu"]["available"] and "nrefs:1" in metrics["bleu"]["note"]
        assert metrics["completion_tokens"]["value"] > 1
        assert Decimal(done["costUsd"]) > 0
        assert [e["event"] for e in done["timeline"]] == ["created", "started", "finished"]
        assert len(done["samples"]) == 6
        seen = [r for r in mock.requests if r.path.endswith("/chat/completions")]
        assert len(seen) == 6 and all(r.headers.get("x-llmops-evaluation-run") is None for r in seen)


async def _progress(app: Any, run_id: str) -> dict[str, Any]:
    return dict((await app.client.get(f"{API}/runs/{run_id}")).json()["data"])


async def test_concurrency_is_bounded_by_the_run(database_url: str, tmp_path: Path, mock: MockServer) -> None:
    mock.config = MockConfig(latency_s=0.15)
    catalog = FakeCatalog()
    catalog.datasets.add("ds", qa_rows(12))
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, mock.active)
            await asyncio.sleep(0.002)

    async with gateway(database_url, tmp_path, mock) as gw, \
            plane(database_url, tmp_path, catalog, settings(gw.url)) as (app, _module):
        watcher = asyncio.create_task(watch())
        run = (await app.client.post(f"{API}/runs", json=run_body(concurrency=3))).json()["data"]
        done = await finished(app, run["id"])
        watcher.cancel()
    assert done["status"] == "succeeded" and done["progress"]["done"] == 12
    assert peak == 3  # reached, never passed


async def test_cancel_stops_new_items_and_lets_those_in_flight_finish(database_url: str, tmp_path: Path,
                                                                      mock: MockServer) -> None:
    mock.config = MockConfig(latency_s=0.2)
    catalog = FakeCatalog()
    catalog.datasets.add("ds", qa_rows(40))
    async with gateway(database_url, tmp_path, mock) as gw, \
            plane(database_url, tmp_path, catalog, settings(gw.url)) as (app, _module):
        run = (await app.client.post(f"{API}/runs", json=run_body(concurrency=2))).json()["data"]
        await until(lambda: _at_least(app, run["id"], 2))
        resp = await app.client.post(f"{API}/runs/{run['id']}/cancel")
        assert resp.status_code == 200 and resp.json()["data"]["status"] == "cancelling", resp.text
        done = await finished(app, run["id"])
        items = (await app.client.get(f"{API}/runs/{run['id']}/items", params={"pageSize": 200})).json()["data"]
    assert done["status"] == "cancelled" and done["error"] is None
    stored = done["progress"]["done"]
    assert 2 <= stored < 40 and done["progress"]["failed"] == 0
    assert items["total"] == stored
    assert all(i["outputs"][0]["text"] for i in items["items"])  # those in flight finished and were kept
    calls = [r for r in mock.requests if r.path.endswith("/chat/completions")]
    assert len(calls) == stored  # nothing started after the cancel was seen
    assert [e["event"] for e in done["timeline"]][-2:] == ["cancelling", "finished"]
    assert done["metrics"]["0"]["exact_match"]["n"] == stored  # what was done is scored


async def _at_least(app: Any, run_id: str, n: int) -> bool:
    return bool((await _progress(app, run_id))["progress"]["done"] >= n)


async def test_a_gateway_outage_pauses_the_run_instead_of_failing_items(database_url: str, tmp_path: Path,
                                                                        mock: MockServer) -> None:
    mock.config = MockConfig(latency_s=0.05)
    catalog = FakeCatalog()
    catalog.datasets.add("ds", qa_rows(24))
    async with gateway(database_url, tmp_path, mock) as gw:
        forwarder = Forwarder(int(gw.url.rsplit(":", 1)[1]))
        await forwarder.open()
        async with plane(database_url, tmp_path, catalog, settings(forwarder.url)) as (app, _module):
            run = (await app.client.post(f"{API}/runs", json=run_body(concurrency=2))).json()["data"]
            await until(lambda: _at_least(app, run["id"], 4))
            await forwarder.close()
            paused = await until(lambda: _event(app, run["id"], "paused"))
            assert "unreachable" in paused["detail"]["reason"]
            await asyncio.sleep(0.3)  # items answered just before the outage are written (batched, progress_s)
            before = (await _progress(app, run["id"]))["progress"]
            await asyncio.sleep(0.5)  # a while down: nothing fails, nothing finishes
            during = (await _progress(app, run["id"]))["progress"]
            assert during == before and during["failed"] == 0 and during["done"] < 24
            await forwarder.open()
            done = await finished(app, run["id"])
    assert done["status"] == "succeeded"
    assert done["progress"] == {"done": 24, "failed": 0, "total": 24}
    assert "resumed_after_outage" in [e["event"] for e in done["timeline"]]


async def _event(app: Any, run_id: str, name: str) -> dict[str, Any] | None:
    timeline = (await _progress(app, run_id))["timeline"]
    return next((e for e in timeline if e["event"] == name), None)


async def test_perplexity_from_the_upstreams_logprobs(database_url: str, tmp_path: Path, mock: MockServer) -> None:
    catalog = FakeCatalog()
    catalog.datasets.add("ds", qa_rows(3))
    async with gateway(database_url, tmp_path, mock) as gw, \
            plane(database_url, tmp_path, catalog, settings(gw.url)) as (app, _module):
        run = (await app.client.post(f"{API}/runs", json=run_body(metrics=["perplexity"]))).json()["data"]
        done = await finished(app, run["id"])
        items = (await app.client.get(f"{API}/runs/{run['id']}/items")).json()["data"]["items"]
    # the reference "answer <i>" after "question number <i>\n": tokens "\nanswer" (-0.5) and " <i>" (-1.0)
    expected = math.exp(0.75)
    assert [i["scores"]["0"]["perplexity"] for i in items] == pytest.approx([expected] * 3)
    agg = done["metrics"]["0"]["perplexity"]
    assert agg["available"] and agg["value"] == pytest.approx(expected) and agg["n"] == 3
    asked = [r.body for r in mock.requests if r.path.endswith("/v1/completions")]
    assert len(asked) == 3 and all(b["echo"] is True and b["logprobs"] == 1 for b in asked)
    assert set(done["metrics"]["0"]) == {"perplexity", "latency_s", "prompt_tokens", "completion_tokens",
                                         "cost_usd"}


@pytest.mark.parametrize("logprobs", [False, "omit"])
async def test_perplexity_is_unavailable_not_zero_without_logprobs(database_url: str, tmp_path: Path,
                                                                   mock: MockServer, logprobs: Any) -> None:
    mock.config = MockConfig(logprobs=logprobs)
    catalog = FakeCatalog()
    catalog.datasets.add("ds", qa_rows(3))
    async with gateway(database_url, tmp_path, mock) as gw, \
            plane(database_url, tmp_path, catalog, settings(gw.url)) as (app, _module):
        run = (await app.client.post(f"{API}/runs", json=run_body(metrics=["perplexity", "exact_match"]))
               ).json()["data"]
        done = await finished(app, run["id"])
        items = (await app.client.get(f"{API}/runs/{run['id']}/items")).json()["data"]["items"]
    assert done["status"] == "succeeded" and done["progress"]["failed"] == 0  # the answers themselves are fine
    agg = done["metrics"]["0"]["perplexity"]
    assert agg["available"] is False and agg["value"] is None and agg["n"] == 0
    assert "no logprobs" in agg["note"] and ("400" in agg["note"]) == (logprobs is False)
    assert all(i["scores"]["0"]["perplexity"] is None for i in items)
    assert done["metrics"]["0"]["exact_match"]["available"]


async def test_an_item_that_keeps_failing_is_recorded_and_the_run_goes_on(database_url: str, tmp_path: Path,
                                                                          mock: MockServer) -> None:
    catalog = FakeCatalog()
    rows = qa_rows(4)
    rows[2] = {"q": None, "a": "x"}  # nothing to send: fails without a call
    catalog.datasets.add("ds", rows)
    # item 1's call: 503 three times (a first try and two retries); the gateway itself does not retry (route r)
    mock.push_faults(Fault(kind="status", status=400))  # the first call: refused for good, not retried
    async with gateway(database_url, tmp_path, mock) as gw, \
            plane(database_url, tmp_path, catalog, settings(gw.url)) as (app, _module):
        run = (await app.client.post(f"{API}/runs", json=run_body(concurrency=1))).json()["data"]
        done = await finished(app, run["id"])
        items = (await app.client.get(f"{API}/runs/{run['id']}/items")).json()["data"]["items"]
    assert done["status"] == "succeeded" and done["progress"] == {"done": 4, "failed": 2, "total": 4}
    errors = {i["index"]: i["outputs"][0]["error"] for i in items}
    assert errors[0] is not None and errors[0].startswith("400") and errors[1] is None
    assert errors[2] == "row 2: column 'q' is empty" and errors[3] is None
    assert done["metrics"]["0"]["exact_match"]["n"] == 2  # failed items are missing, not wrong


async def test_retryable_answers_are_retried_then_the_item_fails(database_url: str, tmp_path: Path,
                                                                 mock: MockServer) -> None:
    catalog = FakeCatalog()
    catalog.datasets.add("ds", qa_rows(2))
    # item 0: 503 on its first try and both retries (fails); item 1: 503 once, then answered (four in a row:
    # below the gateway's circuit breaker's five)
    mock.push_faults(*[Fault(kind="status", status=503)] * 4)
    async with gateway(database_url, tmp_path, mock) as gw, \
            plane(database_url, tmp_path, catalog, settings(gw.url)) as (app, _module):
        run = (await app.client.post(f"{API}/runs", json=run_body(concurrency=1))).json()["data"]
        done = await finished(app, run["id"])
        items = (await app.client.get(f"{API}/runs/{run['id']}/items")).json()["data"]["items"]
    assert [i["outputs"][0]["error"] is None for i in items] == [False, True]
    assert items[0]["outputs"][0]["error"].startswith("503")
    assert done["progress"] == {"done": 2, "failed": 1, "total": 2}
    assert len([r for r in mock.requests if r.path.endswith("/chat/completions")]) == 5


async def test_every_item_failing_fails_the_run(database_url: str, tmp_path: Path, mock: MockServer) -> None:
    catalog = FakeCatalog()
    catalog.datasets.add("ds", [{"q": None, "a": "x"}] * 2)
    async with gateway(database_url, tmp_path, mock) as gw, \
            plane(database_url, tmp_path, catalog, settings(gw.url)) as (app, _module):
        run = (await app.client.post(f"{API}/runs", json=run_body())).json()["data"]
        done = await finished(app, run["id"])
    assert done["status"] == "failed" and done["error"].startswith("every item failed; the first: row 0")


async def test_export_streams_csv_and_json_one_record_per_item_and_target(database_url: str, tmp_path: Path,
                                                                          mock: MockServer) -> None:
    catalog = FakeCatalog()
    catalog.datasets.add("ds", [{"q": "première question, \"quoted\"", "a": "réponse"}, *qa_rows(600)[1:]])
    async with gateway(database_url, tmp_path, mock) as gw, \
            plane(database_url, tmp_path, catalog, settings(gw.url)) as (app, _module):
        body = run_body(targets=[{"kind": "route", "id": "r"}, {"kind": "route", "id": "r2"}], concurrency=16,
                        metrics=["exact_match", "token_f1"])
        run = (await app.client.post(f"{API}/runs", json=body)).json()["data"]
        await finished(app, run["id"], within_s=120)
        as_csv = await app.client.get(f"{API}/runs/{run['id']}/export", params={"format": "csv"})
        as_json = await app.client.get(f"{API}/runs/{run['id']}/export", params={"format": "json"})
    assert as_csv.status_code == 200 and as_csv.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in as_csv.headers["content-disposition"]
    records = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert len(records) == 1200  # 600 rows x 2 targets, across the export's pages
    assert [(r["index"], r["target"]) for r in records[:3]] == [("0", "0"), ("0", "1"), ("1", "0")]
    assert records[0]["input"] == "première question, \"quoted\"" and records[0]["route"] == "r"
    assert records[1]["route"] == "r2" and records[0]["exact_match"] in ("0.0", "1.0")
    assert set(records[0]) >= {"output", "latencyS", "costUsd", "requestId", "token_f1"}
    # per-item measurements are their own columns, filled; never a second, empty score column
    assert not {"latency_s", "prompt_tokens", "completion_tokens", "cost_usd"} & set(records[0])
    assert all(float(r["latencyS"]) >= 0 and int(r["completionTokens"]) > 0 for r in records)
    data = as_json.json()
    assert as_json.headers["content-type"].startswith("application/json") and len(data) == 1200
    assert data[0]["input"] == "première question, \"quoted\"" and data[0]["scores"]["exact_match"] in (0.0, 1.0)
    assert [(d["index"], d["target"]) for d in data] == [(int(r["index"]), int(r["target"])) for r in records]


async def test_an_llm_judge_run_keeps_both_its_metrics_and_the_judges(database_url: str, tmp_path: Path,
                                                                      mock: MockServer) -> None:
    mock.config = MockConfig(script=[ScriptRule(match="How helpful", reply='{"score": 4, "rationale": "fine"}')])
    catalog = FakeCatalog()
    catalog.datasets.add("ds", qa_rows(3))
    async with gateway(database_url, tmp_path, mock) as gw, \
            plane(database_url, tmp_path, catalog, settings(gw.url)) as (app, _module):
        body = run_body(type="llm_judge", judge={"model": {"kind": "route", "id": "r2"}})
        run = (await app.client.post(f"{API}/runs", json=body)).json()["data"]
        done = await finished(app, run["id"])
    assert done["status"] == "succeeded", done["error"]
    metrics = done["metrics"]["0"]
    assert metrics["judge_score"]["value"] == 4.0 and metrics["judge_score"]["n"] == 3
    assert metrics["exact_match"]["n"] == 3 and metrics["bleu"]["available"]  # generation's, kept beside
    assert done["judge"]["route"] == "r2"
    events = [e["event"] for e in done["timeline"]]
    assert events.index("judging_started") < events.index("finished")


async def test_an_unpriced_route_finishes_once_its_usage_records_exist_without_waiting_for_a_cost(
    database_url: str, tmp_path: Path, mock: MockServer,
) -> None:
    from tests.conftest import run_gateway
    from tests.control.evaluation.support import gateway_config

    cfg = gateway_config(database_url, tmp_path, mock)
    cfg["pricing"] = {"use_litellm_map": False, "models": []}  # m0 has no price: its records carry no cost
    catalog = FakeCatalog()
    catalog.datasets.add("ds", qa_rows(4))
    async with run_gateway(cfg) as gw, \
            plane(database_url, tmp_path, catalog, settings(gw.url, usage_wait_s=120)) as (app, _module):
        run = (await app.client.post(f"{API}/runs", json=run_body(metrics=["exact_match"]))).json()["data"]
        done = await finished(app, run["id"], within_s=60)  # waiting out usage_wait_s would take 120 s
        assert done["status"] == "succeeded" and done["costUsd"] is None
        items = (await app.client.get(f"{API}/runs/{run['id']}/items")).json()["data"]["items"]
        store = app.plane.store
        assert store is not None
        async with store.read() as conn:
            stored = (await conn.execute(select(usage_records.c.request_id, usage_records.c.cost_usd).where(
                usage_records.c.request_id.in_([i["outputs"][0]["requestId"] for i in items])))).all()
    assert len(stored) == 4 and all(cost is None for _, cost in stored)
