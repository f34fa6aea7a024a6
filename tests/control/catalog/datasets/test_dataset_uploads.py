"""Hostile and malformed dataset uploads: precise errors, and earlier versions intact afterwards."""

from __future__ import annotations

import hashlib
import io

import pyarrow as pa
import pyarrow.parquet as pq

from adapters.adminapi.testing import AdminTestApp
from tests.control.catalog._helpers import API, data, fail, file_at, multipart, stored_objects, upload
from tests.control.catalog.conftest import MAX_UPLOAD_BYTES

GOOD = b"question,answer\nq1,a1\nq2,a2\n"


def parquet_bytes() -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table({"question": ["q"] * 50, "answer": ["a"] * 50}), sink)
    return sink.getvalue()


async def test_bad_uploads_never_touch_earlier_versions(catalog: AdminTestApp) -> None:
    c = catalog.client
    ds = data(await c.post(f"{API}/datasets", json={"name": "qa", "ownerTeam": "ml",
                                                    "requiredColumns": ["question", "answer"]}), 201)
    path, url = f"datasets/{ds['id']}/upload", f"{API}/datasets/{ds['id']}"
    v1 = data(await upload(catalog, path, ("file", "qa.csv", GOOD)), 201)
    assert file_at(v1["storageUri"]) == GOOD

    # Unparseable content: recorded as an invalid version with the line/row, its file deleted (422).
    ragged = fail(await upload(catalog, path, ("file", "ragged.csv", b"question,answer\nq1,a1\nq2,a2,extra\n")), 422)
    assert ragged["data"]["status"] == "invalid" and ragged["data"]["version"] == 2
    issue = ragged["data"]["validation"]["errors"][0]
    assert issue["code"] == "ragged_row" and issue["line"] == 3 and "line 3" in ragged["message"]
    binary_lines = b'{"question": "q", "answer": "a"}\n\x00\x01\x02\n'
    binary = fail(await upload(catalog, path, ("file", "chat.jsonl", binary_lines)), 422)
    assert binary["data"]["validation"]["errors"][0] == {
        "code": "invalid_encoding", "message": binary["data"]["validation"]["errors"][0]["message"], "line": 2}
    truncated = fail(await upload(catalog, path, ("file", "cut.parquet", parquet_bytes()[:-30])), 422)
    assert truncated["data"]["validation"]["errors"][0]["code"] == "corrupt_parquet"
    bad_json = fail(await upload(catalog, path, ("file", "x.jsonl", b'{"question": "q", "answer": "a"}\n{oops\n')), 422)
    assert bad_json["data"]["validation"]["errors"][0]["line"] == 2
    # Parseable but failing its declared schema: invalid too, with the full report.
    missing = fail(await upload(catalog, path, ("file", "q.csv", b"question\nq1\n")), 422)
    assert [e["code"] for e in missing["data"]["validation"]["errors"]] == ["missing_required_column"]
    assert missing["data"]["rowCount"] == 1 and missing["data"]["storageUri"] is None
    mismatch = fail(await upload(catalog, path, ("file", "fake.parquet", GOOD)), 422)
    assert mismatch["data"]["validation"]["errors"][0]["code"] == "corrupt_parquet"

    # Rejected in transit: no version at all.
    for name in ("../../escape.csv", "a/b.csv", "..", ".env.csv", "nul\x00.csv"):
        body = fail(await upload(catalog, path, ("file", name, GOOD)), 400)
        assert body["data"] == {"filename": name}, name
    assert ".xlsx" in fail(await upload(catalog, path, ("file", "sheet.xlsx", b"PK")), 415)["message"]
    fail(await upload(catalog, path, ("file", "a.csv", GOOD), ("file", "b.csv", GOOD)), 400)
    fail(await upload(catalog, path, ("meta", None, b"x")), 400)
    fail(await upload(catalog, path), 400)
    fail(await c.post(url + "/upload", content=GOOD, headers={"content-type": "text/csv"}), 415)
    body, headers = multipart(("file", "qa.csv", GOOD))
    fail(await c.post(url + "/upload", content=body[:-20], headers=headers), 400)
    too_big = b"question,answer\n" + b"q,a\n" * (MAX_UPLOAD_BYTES // 4)
    assert fail(await upload(catalog, path, ("file", "big.csv", too_big)), 413)["data"]["maxUploadBytes"] == \
        MAX_UPLOAD_BYTES
    fail(await upload(catalog, path, ("file", "huge.csv", too_big * 10)), 413)
    fail(await upload(catalog, "datasets/ds_missing/upload", ("file", "qa.csv", GOOD)), 404)

    # Version 1 is exactly as it was; the invalid attempts are visible with their reports, without data.
    assert file_at(v1["storageUri"]) == GOOD and stored_objects(catalog) == [f"datasets/{ds['id']}/1/qa.csv"]
    dataset = data(await c.get(url))
    assert dataset["latestVersion"] == 1 and dataset["rowCount"] == 2
    versions = data(await c.get(f"{url}/versions"))
    assert [(v["version"], v["status"]) for v in versions["items"]] == [
        (7, "invalid"), (6, "invalid"), (5, "invalid"), (4, "invalid"), (3, "invalid"), (2, "invalid"), (1, "ready")]
    assert data(await c.get(f"{url}/validation"))["version"] == 7
    assert data(await c.get(f"{url}/validation?version=2"))["validation"]["errors"][0]["code"] == "ragged_row"
    fail(await c.get(f"{url}/validation?version=99"), 404)
    preview = data(await c.get(f"{url}/preview"))
    assert preview["version"] == 1 and preview["rows"] == [{"question": "q1", "answer": "a1"},
                                                           {"question": "q2", "answer": "a2"}]
    assert fail(await c.get(f"{url}/preview?version=2"), 409)["data"] == {"version": 2, "status": "invalid"}
    fail(await c.get(f"{url}/versions/1/compare/2"), 409)
    assert v1["sha256"] == hashlib.sha256(GOOD).hexdigest()
    # A later good upload takes the next number and becomes the latest.
    assert data(await upload(catalog, path, ("file", "qa.csv", GOOD)), 201)["version"] == 8


async def test_declared_format_and_empty_dataset(catalog: AdminTestApp) -> None:
    c = catalog.client
    ds = data(await c.post(f"{API}/datasets", json={"name": "pq", "ownerTeam": "ml", "format": "parquet"}), 201)
    url = f"{API}/datasets/{ds['id']}"
    assert fail(await c.get(f"{url}/preview"), 409)["message"].endswith("upload a file first")
    fail(await c.get(f"{url}/validation"), 404)
    wrong = fail(await upload(catalog, f"datasets/{ds['id']}/upload", ("file", "qa.csv", GOOD)), 415)
    assert wrong["data"] == {"filename": "qa.csv", "format": "parquet"}
    assert data(await upload(catalog, f"datasets/{ds['id']}/upload", ("file", "qa.parquet", parquet_bytes())),
                201)["rowCount"] == 50
    empty = fail(await upload(catalog, f"datasets/{ds['id']}/upload", ("file", "e.parquet", b"")), 422)
    assert empty["data"]["validation"]["errors"][0]["code"] == "empty_file"
