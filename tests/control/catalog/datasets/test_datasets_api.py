"""Dataset catalog end to end over HTTP: register, filter, upload CSV/JSONL/Parquet, reports, preview, compare."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from adapters.adminapi.testing import AdminTestApp
from tests.control.catalog._helpers import API, data, fail, stored_objects, upload

CSV = (b"id,question,answer,contact\n"
       b"1,What is 2+2?,4,alice@example.com\n"
       b"2,Capital of France?,Paris,bob@example.org\n"
       b"3,Largest planet?,Jupiter,\n"
       b"3,Largest planet?,Jupiter,\n")


def parquet(rows: list[dict[str, Any]]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue()


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


async def create(app: AdminTestApp, **body: Any) -> dict[str, Any]:
    return data(await app.client.post(f"{API}/datasets", json={"ownerTeam": "ml", **body}), 201)  # type: ignore[no-any-return]


async def test_register_and_filter_datasets(catalog: AdminTestApp) -> None:
    c = catalog.client
    qa = await create(catalog, name="qa-pairs", schema={"id": "int", "question": "text"}, requiredColumns=["id"])
    assert qa["schema"] == {"id": "integer", "question": "string"} and qa["piiStatus"] == "unknown"
    assert qa["latestVersion"] is None and qa["qualityScore"] is None
    chat = await create(catalog, name="chat-logs", ownerTeam="support", piiRules=["email", "phone"])
    await create(catalog, name="clean-set", ownerTeam="support", format="jsonl")
    data(await upload(catalog, f"datasets/{qa['id']}/upload", ("file", "qa.csv", CSV)), 201)
    data(await upload(catalog, f"datasets/{chat['id']}/upload", ("file", "chat.jsonl", jsonl(
        [{"text": "call me at +1 415 555 0100"}, {"text": "hello"}]))), 201)
    data(await upload(catalog, f"datasets/{chat['id']}/upload", ("file", "chat.jsonl", jsonl(
        [{"text": "hi"}, {"text": "bye"}]))), 201)

    async def names(query: str) -> list[str]:
        return [d["name"] for d in data(await c.get(f"{API}/datasets?{query}"))["items"]]

    assert await names("ownerTeam=support") == ["clean-set", "chat-logs"]
    assert await names("name=SET") == ["clean-set"]
    assert await names("piiStatus=detected") == ["qa-pairs"]
    assert await names("piiStatus=clean") == ["chat-logs"]  # the latest version (2) is clean
    assert await names("piiStatus=unknown") == ["clean-set"]
    assert await names("version=2") == ["chat-logs"]
    assert await names("minQuality=99") == ["chat-logs"]
    assert await names("maxQuality=99") == ["qa-pairs"]
    assert await names("minQuality=0&maxQuality=100&pageSize=1") == ["chat-logs"]
    page = data(await c.get(f"{API}/datasets?pageSize=1&page=3"))
    assert page["total"] == 3 and [d["name"] for d in page["items"]] == ["qa-pairs"]
    fail(await c.get(f"{API}/datasets?minQuality=150"), 400)
    assert await names("minQuality=80&maxQuality=20") == []  # an empty range matches nothing; not an error
    fail(await c.get(f"{API}/datasets?piiStatus=maybe"), 400)

    fail(await c.get(f"{API}/datasets/ds_missing"), 404)
    assert "already exists" in fail(await c.post(f"{API}/datasets", json={"name": "qa-pairs", "ownerTeam": "x"}),
                                    409)["message"]
    # A type outside the declared enum breaks the schema (400); a rule this deployment lacks is a 422.
    bad = fail(await c.post(f"{API}/datasets", json={"name": "x", "ownerTeam": "ml", "schema": {"a": "blob"},
                                                     "piiRules": ["email", "dna"]}), 400)
    assert [e["field"] for e in bad["data"]["errors"]] == ["schema"]
    unknown = fail(await c.post(f"{API}/datasets", json={"name": "x", "ownerTeam": "ml", "piiRules": ["email", "dna"]}),
                   422)
    assert [e["field"] for e in unknown["data"]["errors"]] == ["piiRules"] and "dna" in unknown["message"]
    fail(await c.post(f"{API}/datasets", json={"name": "x", "ownerTeam": "ml", "requiredColumns": ["a", "a"]}), 400)
    fail(await c.post(f"{API}/datasets", json={"name": "x", "ownerTeam": "ml", "format": "xlsx"}), 400)
    fail(await c.post(f"{API}/datasets", json={"name": "x", "ownerTeam": ["ml"]}), 400)


async def test_upload_formats_reports_preview_and_compare(catalog: AdminTestApp) -> None:
    c = catalog.client
    ds = await create(catalog, name="qa", requiredColumns=["question", "answer"])
    url = f"{API}/datasets/{ds['id']}"

    v1 = data(await upload(catalog, f"datasets/{ds['id']}/upload", ("file", "qa.csv", CSV)), 201)
    assert v1["version"] == 1 and v1["status"] == "ready" and v1["format"] == "csv" and v1["rowCount"] == 4
    assert v1["sha256"] == hashlib.sha256(CSV).hexdigest() and v1["validation"]["ok"] is True
    assert v1["storageUri"].endswith(f"/datasets/{ds['id']}/1/qa.csv")
    assert v1["piiStatus"] == "detected"
    emails = [f for f in v1["pii"]["findings"] if f["rule"] == "email"]
    assert emails == [{"column": "contact", "rule": "email", "count": 2, "examples": ["a***@e***.com",
                                                                                       "b***@e***.org"]}]
    breakdown = v1["quality"]["breakdown"]
    assert breakdown["duplicateRows"] == 1 and 0 < v1["quality"]["score"] < 100
    assert "alice@example.com" not in json.dumps(v1)

    preview = data(await c.get(f"{url}/preview?rows=3"))
    assert preview["version"] == 1 and preview["rowCount"] == 4 and len(preview["rows"]) == 3
    assert preview["redactedColumns"] == ["contact"]
    assert [r["contact"] for r in preview["rows"]] == ["a***@e***.com", "b***@e***.org", None]
    assert preview["rows"][0]["question"] == "What is 2+2?"
    assert {col["name"]: col["type"] for col in preview["schema"]} == {
        "id": "integer", "question": "string", "answer": "string", "contact": "string"}
    assert next(col for col in preview["columns"] if col["name"] == "id")["max"] == 3
    assert data(await c.get(f"{url}/validation")) == {**v1}

    v2 = data(await upload(catalog, f"datasets/{ds['id']}/upload", ("file", "qa.jsonl", jsonl([
        {"question": "q1", "answer": "a1", "score": 0.5}, {"question": "q2", "answer": "a2", "score": 1.5},
    ]))), 201)
    assert v2["version"] == 2 and v2["format"] == "jsonl" and v2["piiStatus"] == "clean"
    v3 = data(await upload(catalog, f"datasets/{ds['id']}/upload", ("file", "qa.parquet", parquet([
        {"question": f"q{i}", "answer": f"a{i}", "score": float(i)} for i in range(10)]))), 201)
    assert v3["format"] == "parquet" and v3["rowCount"] == 10 and v3["quality"]["score"] == 100.0
    assert data(await c.get(url))["latestVersion"] == 3

    diff = data(await c.get(f"{url}/versions/1/compare/2"))
    assert diff["fromVersion"] == 1 and diff["toVersion"] == 2 and not diff["identical"]
    assert [col["name"] for col in diff["schema"]["added"]] == ["score"]
    assert sorted(col["name"] for col in diff["schema"]["removed"]) == ["contact", "id"]
    assert diff["rowCount"] == {"old": 4, "new": 2, "delta": -2, "deltaRatio": -0.5}
    scores = data(await c.get(f"{url}/versions/2/compare/3"))
    score_stats = {s["stat"]: s for s in next(d for d in scores["stats"] if d["column"] == "score")["changes"]}
    assert score_stats["max"]["old"] == 1.5 and score_stats["max"]["new"] == 9.0
    assert data(await c.get(f"{url}/versions/3/compare/3"))["identical"] is True
    fail(await c.get(f"{url}/versions/1/compare/9"), 404)
    assert data(await c.get(f"{url}/preview?version=2"))["version"] == 2
    assert [v["version"] for v in data(await c.get(f"{url}/versions"))["items"]] == [3, 2, 1]
    assert len(stored_objects(catalog)) == 3
    audit = data(await c.get(f"/llm-ops/v1/audit/logs?action=catalog.dataset.*&resourceId={ds['id']}"))
    assert [e["action"] for e in audit["items"]] == ["catalog.dataset.upload"] * 3 + ["catalog.dataset.create"]
