"""The runs REST surface without a worker: validation (400/422 naming the field), list filters, 404s, cancel
of a queued run, audit. Both databases."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, update

from adapters.adminapi.testing import AdminTestApp
from adapters.store import utcnow
from control.evaluation.tables import judgments, reviews, runs
from tests.control.evaluation.support import API, FakeCatalog, plane, publish_routes, qa_rows, run_body
from tests.control.evaluation.support_j import agg, seed_run


@pytest.fixture
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[AdminTestApp, FakeCatalog]]:
    catalog = FakeCatalog()
    catalog.datasets.add("ds", qa_rows(3))
    catalog.datasets.add("ds", "uploading", version=2)
    catalog.datasets.add("other", [{"q": "x", "a": "y", "ctx": "z"}] * 5)
    catalog.models.add("mdl_ext", "ext-model")  # an approved external model: the catalog publishes its route
    catalog.models.add("mdl_base", "base-model", "base")
    settings = {"worker": False, "gateway_url": "http://127.0.0.1:9", "gateway_routes": ["r", "r2"]}
    async with plane(database_url, tmp_path, catalog, settings) as (app, _module):
        await publish_routes(app, "ext-model")
        yield app, catalog


def errors(resp: Any, status: int) -> dict[str, str]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["status"] == "fail" and body["message"]
    return {e["field"]: e["message"] for e in body["data"]["errors"]}


async def test_create_records_the_run_and_its_event_and_audit(api: tuple[AdminTestApp, FakeCatalog]) -> None:
    app, _ = api
    resp = await app.client.post(f"{API}/runs", json=run_body(
        targets=[{"kind": "route", "id": "r"}, {"kind": "model", "id": "mdl_ext"}], limit=2))
    assert resp.status_code == 201, resp.text
    run = resp.json()["data"]
    assert run["status"] == "queued" and run["type"] == "automated"
    assert run["targets"] == [{"kind": "route", "id": "r", "route": "r"},
                              {"kind": "model", "id": "mdl_ext", "route": "ext-model"}]
    assert run["modelIds"] == ["mdl_ext"]
    assert run["dataset"] == {"datasetId": "ds", "version": 1, "name": "ds data"}
    assert run["progress"] == {"done": 0, "failed": 0, "total": 4}  # 2 rows (limit) x 2 targets
    assert run["createdBy"] == "bootstrap" and run["timeline"][0]["event"] == "created"
    got = (await app.client.get(f"{API}/runs/{run['id']}")).json()["data"]
    assert got["id"] == run["id"] and got["metrics"] == {} and got["samples"] == []
    audit = (await app.client.get(f"/llm-ops/v1/audit/logs?action=evaluation.*&resourceId={run['id']}")).json()
    assert [e["action"] for e in audit["data"]["items"]] == ["evaluation.run.create"]


@pytest.mark.parametrize(("body", "field"), [
    (run_body(type="llm_judge"), "judge"),
    (run_body(type="human"), "review"),
    (run_body(judge={"model": {"kind": "route", "id": "r2"}, "mode": "pairwise"}, type="llm_judge"), "targets"),
    (run_body(mapping={"input": "q", "messages": "q"}), "mapping.input"),
    (run_body(mapping={"reference": "a"}), "mapping.input"),
    (run_body(mapping={"input": "q"}, metrics=["bleu"]), "mapping.reference"),
    (run_body(metrics=["judge_score"]), "metrics"),
    (run_body(params={"model": "x"}), "params.model"),
    (run_body(targets=[{"kind": "route", "id": "r"}, {"kind": "route", "id": "r"}]), "targets"),
    (run_body(targets=[{"kind": "route", "id": "nope"}]), "targets[0].id"),
    (run_body(targets=[{"kind": "route", "id": "r"}, {"kind": "model", "id": "mdl_none"}]), "targets[1].id"),
    (run_body(targets=[{"kind": "model", "id": "mdl_base"}]), "targets[0].id"),
    (run_body(targets=[{"kind": "endpoint", "id": "ep_1"}]), "targets[0].id"),
    (run_body(type="llm_judge", judge={"model": {"kind": "route", "id": "judge-x"}}), "judge.model.id"),
    (run_body(dataset={"datasetId": "missing"}), "dataset.datasetId"),
    (run_body(dataset={"datasetId": "ds", "version": 2}), "dataset.version"),
    (run_body(dataset={"datasetId": "ds", "version": 7}), "dataset.version"),
    (run_body(mapping={"input": "question", "reference": "a"}), "mapping.input"),
    (run_body(mapping={"input": "q", "context": "ctx"}), "mapping.context"),
])
async def test_refusals_name_the_field(api: tuple[AdminTestApp, FakeCatalog], body: dict[str, Any],
                                       field: str) -> None:
    app, _ = api
    found = errors(await app.client.post(f"{API}/runs", json=body), 422)
    assert field in found, found
    listed = (await app.client.get(f"{API}/runs")).json()["data"]
    assert listed["total"] == 0  # nothing was written


@pytest.mark.parametrize(("body", "field"), [
    (run_body(extra=1), "extra"),
    (run_body(targets=[]), "targets"),
    (run_body(concurrency=0), "concurrency"),
    (run_body(metrics=["nope"]), "metrics[0]"),
    (run_body(targets=[{"kind": "pod", "id": "x"}]), "targets[0].kind"),
])
async def test_schema_violations_are_400_naming_the_field(api: tuple[AdminTestApp, FakeCatalog],
                                                          body: dict[str, Any], field: str) -> None:
    app, _ = api
    assert field in errors(await app.client.post(f"{API}/runs", json=body), 400)


async def test_list_filters_and_pages(api: tuple[AdminTestApp, FakeCatalog]) -> None:
    app, _ = api
    ids = []
    for body in (run_body(), run_body(targets=[{"kind": "model", "id": "mdl_ext"}]),
                 run_body(dataset={"datasetId": "other"}, mapping={"input": "q", "reference": "a", "context": "ctx"}),
                 run_body(type="llm_judge", judge={"model": {"kind": "route", "id": "r2"}})):
        resp = await app.client.post(f"{API}/runs", json=body)
        assert resp.status_code == 201, resp.text
        ids.append(resp.json()["data"]["id"])
    store = app.plane.store
    assert store is not None
    async with store.begin() as conn:  # the first one is old and finished
        await conn.execute(update(runs).where(runs.c.id == ids[0]).values(
            created_at=utcnow() - timedelta(days=3), status="succeeded"))

    async def listed(**params: Any) -> list[str]:
        resp = await app.client.get(f"{API}/runs", params=params)
        assert resp.status_code == 200, resp.text
        return [r["id"] for r in resp.json()["data"]["items"]]

    assert await listed() == [ids[3], ids[2], ids[1], ids[0]]  # newest first
    assert await listed(modelId="mdl_ext") == [ids[1]]
    assert await listed(datasetId="other") == [ids[2]]
    assert await listed(type="llm_judge") == [ids[3]]
    assert await listed(status="succeeded") == [ids[0]]
    assert set(await listed(status="queued")) == set(ids[1:])
    since = (utcnow() - timedelta(days=1)).isoformat()
    assert set(await listed(**{"from": since})) == set(ids[1:])
    assert await listed(to=since) == [ids[0]]
    page = (await app.client.get(f"{API}/runs", params={"pageSize": 2, "page": 2})).json()["data"]
    assert page["total"] == 4 and len(page["items"]) == 2
    assert "type" in errors(await app.client.get(f"{API}/runs", params={"type": "bogus"}), 400)
    assert "from" in errors(await app.client.get(f"{API}/runs", params={"from": "yesterday"}), 400)


async def test_unknown_runs_are_404_everywhere(api: tuple[AdminTestApp, FakeCatalog]) -> None:
    app, _ = api
    for method, path in (("GET", "runs/run_nope"), ("GET", "runs/run_nope/items"), ("GET", "runs/run_nope/export"),
                         ("POST", "runs/run_nope/cancel")):
        resp = await app.client.request(method, f"{API}/{path}")
        assert resp.status_code == 404, (path, resp.text)
        assert resp.json()["status"] == "fail" and "run_nope" in resp.json()["message"]


async def test_export_refuses_a_bad_format_in_the_envelope(api: tuple[AdminTestApp, FakeCatalog]) -> None:
    app, _ = api
    run = (await app.client.post(f"{API}/runs", json=run_body())).json()["data"]
    assert "format" in errors(await app.client.get(f"{API}/runs/{run['id']}/export?format=xml"), 400)
    csv_empty = await app.client.get(f"{API}/runs/{run['id']}/export?format=csv")
    assert csv_empty.status_code == 200 and csv_empty.text.splitlines()[0].startswith("index,target,route")
    assert (await app.client.get(f"{API}/runs/{run['id']}/export?format=json")).json() == []


async def test_cancel_a_queued_run_at_once_and_a_finished_one_is_a_conflict(
        api: tuple[AdminTestApp, FakeCatalog]) -> None:
    app, _ = api
    run = (await app.client.post(f"{API}/runs", json=run_body())).json()["data"]
    resp = await app.client.post(f"{API}/runs/{run['id']}/cancel")
    assert resp.status_code == 200, resp.text
    cancelled = resp.json()["data"]
    assert cancelled["status"] == "cancelled" and cancelled["finishedAt"]
    assert [e["event"] for e in cancelled["timeline"]] == ["created", "cancelled"]
    again = await app.client.post(f"{API}/runs/{run['id']}/cancel")
    assert again.status_code == 200 and again.json()["message"].startswith("No changes")
    store = app.plane.store
    assert store is not None
    other = (await app.client.post(f"{API}/runs", json=run_body())).json()["data"]
    async with store.begin() as conn:
        await conn.execute(update(runs).where(runs.c.id == other["id"]).values(status="succeeded"))
    conflict = await app.client.post(f"{API}/runs/{other['id']}/cancel")
    assert conflict.status_code == 409 and conflict.json()["status"] == "fail"
    audit = (await app.client.get("/llm-ops/v1/audit/logs?action=evaluation.run.cancel")).json()["data"]
    assert [e["resourceId"] for e in audit["items"]] == [run["id"]]


async def test_reads_need_viewer_and_writes_developer(api: tuple[AdminTestApp, FakeCatalog]) -> None:
    app, _ = api
    keys = {}
    for role in ("viewer", "developer"):
        resp = await app.client.post("/llm-ops/v1/admin/keys", json={"name": role, "role": role})
        assert resp.status_code == 201, resp.text
        keys[role] = {"authorization": f"Bearer {resp.json()['data']['key']}"}
    assert (await app.client.get(f"{API}/runs", headers=keys["viewer"])).status_code == 200
    assert (await app.client.post(f"{API}/runs", json=run_body(), headers=keys["viewer"])).status_code == 403
    assert (await app.client.post(f"{API}/runs", json=run_body(), headers=keys["developer"])).status_code == 201


async def test_export_has_a_column_for_scores_added_after_creation(api: tuple[AdminTestApp, FakeCatalog]) -> None:
    # A judge asked for later (POST llm-judge) and human ratings add metrics the run's own list never named.
    app, _ = api
    store = app.plane.store
    assert store is not None
    run = await seed_run(store, metrics={"0": {"exact_match": agg(1.0), "judge_score": agg(4.0),
                                               "human_score": agg(3.5)}},
                         scores={0: {0: {"exact_match": 1.0, "judge_score": 4.0, "human_score": 3.5},
                                     1: {"exact_match": 0.0, "judge_score": None}}})
    async with store.begin() as conn:
        await conn.execute(update(runs).where(runs.c.id == run).values(metrics=["exact_match", "latency_s"]))
    resp = await app.client.get(f"{API}/runs/{run}/export?format=csv")
    assert resp.status_code == 200, resp.text
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert [(r["exact_match"], r["judge_score"], r["human_score"]) for r in rows] == [
        ("1.0", "4.0", "3.5"), ("0.0", "", "")]
    assert "latency_s" not in rows[0]  # a column of its own already (latencyS)


async def test_items_show_the_judges_verdicts_and_the_reviewers_comments(
        api: tuple[AdminTestApp, FakeCatalog]) -> None:
    # Stored per call and per rating, these are what a person reads to trust (or not) a score: the judge's
    # rationale, an answer it gave outside the format (kept as received), a reviewer's comment.
    app, _ = api
    store = app.plane.store
    assert store is not None
    run = await seed_run(store, outputs={0: {0: "a0", 1: "a1", 2: "a2"}})
    now = utcnow()
    judged = {"run_id": run, "kind": "pointwise", "target": 0, "order": 0, "judge_route": "judge",
              "winner": None, "request_id": None, "latency_s": 0.1, "created_at": now}
    async with store.begin() as conn:
        await conn.execute(insert(judgments), [
            {**judged, "idx": 0, "raw": '{"score": 4, "rationale": "complete"}', "parsed": True, "score": 4.0,
             "rationale": "complete", "error": None},
            {**judged, "idx": 1, "raw": "I'd give it a 4", "parsed": False, "score": None, "rationale": None,
             "error": "no JSON object and no 'Score:' line"}])
        await conn.execute(insert(reviews), [
            {"run_id": run, "idx": 0, "target": 0, "reviewer": "rev-b", "score": 3.0, "comment": "too terse",
             "at": now},
            {"run_id": run, "idx": 0, "target": 0, "reviewer": "rev-a", "score": 5.0, "comment": "", "at": now}])
    page = (await app.client.get(f"{API}/runs/{run}/items")).json()["data"]
    by_index = {i["index"]: i for i in page["items"]}
    first = by_index[0]["judgments"]
    assert [(j["target"], j["parsed"], j["score"], j["rationale"], j["raw"]) for j in first] == [
        (0, True, 4.0, "complete", None)]  # parsed: the rationale says it, the raw answer is not repeated
    unparsed = by_index[1]["judgments"][0]
    assert (unparsed["parsed"], unparsed["score"], unparsed["raw"]) == (False, None, "I'd give it a 4")
    assert unparsed["error"]
    assert [(r["target"], r["reviewer"], r["score"], r["comment"]) for r in by_index[0]["reviews"]] == [
        (0, "rev-a", 5.0, ""), (0, "rev-b", 3.0, "too terse")]
    assert by_index[2]["judgments"] == [] and by_index[2]["reviews"] == []
    samples = (await app.client.get(f"{API}/runs/{run}")).json()["data"]["samples"]
    assert samples[0]["judgments"] == first and samples[0]["reviews"] == by_index[0]["reviews"]
