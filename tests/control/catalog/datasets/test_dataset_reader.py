"""The DATASET_READER seam: what evaluation and training read of a dataset, from real uploads.

Every test runs on SQLite and PostgreSQL (``catalog`` fixture); one reads back through S3 (moto's
S3 server, a test double speaking the real wire protocol).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import update

from adapters.adminapi import Conflict, ControlCfg, NotFound, ServiceUnavailable
from adapters.adminapi.seams import DATASET_READER, CatalogDatasetVersion, DatasetReader
from adapters.adminapi.settings import ObjectStoreCfg
from adapters.adminapi.testing import AdminTestApp, admin_test_app
from adapters.objectstore import S3Config
from control.catalog import CatalogModule
from control.catalog.datasets import reader as reader_module
from control.catalog.tables import datasets
from tests.control.catalog._helpers import API, data, upload

CSV = ("id,question,answer,note\n"
       "007,Capital of Japan?,東京,\n"
       "2,\"Two lines,\nwith a comma\",1.50,NULL\n"
       "3,¿Qué tal?,مرحبا 👋,true\n").encode()
CSV_ROWS = [
    {"id": "007", "question": "Capital of Japan?", "answer": "東京", "note": None},
    {"id": "2", "question": "Two lines,\nwith a comma", "answer": "1.50", "note": None},
    {"id": "3", "question": "¿Qué tal?", "answer": "مرحبا 👋", "note": "true"},
]
JSONL_ROWS: list[dict[str, Any]] = [
    {"id": 1, "messages": [{"role": "system", "content": "Réponds en français."},
                           {"role": "user", "content": "Bonjour"}], "reference": "Salut"},
    {"id": 2, "messages": [{"role": "user", "name": "ana", "content": [{"type": "text", "text": "日本語で"}]}],
     "reference": "はい", "context": {"k": [1, 2.5, None, True]}},
    {"id": 3, "messages": [{"role": "user", "content": "x"}], "reference": 42},
]


# One analysis worker, never replaced: spawning one is most of each test's time.
CATALOG_SETTINGS = {"catalog": {"analysis": {"workers": 1, "tasks_per_child": 1000}}}


def _cfg(database_url: str, tmp_path: Path, **extra: Any) -> ControlCfg:
    return ControlCfg(database_url=database_url, data_dir=str(tmp_path / "data"), change_feed="local",
                      max_upload_bytes=256 * 1024, module_settings=CATALOG_SETTINGS, **extra)


@pytest.fixture
async def catalog(database_url: str, tmp_path: Path) -> AsyncIterator[AdminTestApp]:
    async with admin_test_app(_cfg(database_url, tmp_path), modules=[CatalogModule()]) as app:
        yield app


@pytest.fixture
def reader(catalog: AdminTestApp) -> DatasetReader:
    return _reader(catalog)


def _reader(app: AdminTestApp) -> DatasetReader:
    return app.plane._require_running().contexts["catalog"].services[DATASET_READER]


async def _dataset(app: AdminTestApp, name: str, *files: tuple[str, bytes], status: int = 201) -> str:
    ds = data(await app.client.post(f"{API}/datasets", json={"name": name, "ownerTeam": "ml"}), 201)
    for filename, content in files:
        resp = await upload(app, f"datasets/{ds['id']}/upload", ("file", filename, content))
        assert resp.status_code in (201, 422), resp.text
    return str(ds["id"])


async def _version(app: AdminTestApp, dataset_id: str, version: int | None = None) -> CatalogDatasetVersion:
    async with app.plane._require_running().contexts["catalog"].store.read() as conn:
        return await _reader(app).version(conn, dataset_id, version)


async def _all(reader: DatasetReader, dataset_id: str, version: int, batch_rows: int) -> list[list[dict[str, Any]]]:
    return [batch async for batch in reader.rows(dataset_id, version, batch_rows=batch_rows)]


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


async def test_each_format_reads_back_as_written(catalog: AdminTestApp, reader: DatasetReader,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    await _csv_rows_are_the_files_text_in_order(catalog, reader)
    await _jsonl_values_stay_as_written(catalog, reader)
    await _parquet_values_become_json_like(catalog, reader)
    await _batches_keep_file_order_across_many_rows(catalog, reader, monkeypatch)


async def _csv_rows_are_the_files_text_in_order(catalog: AdminTestApp, reader: DatasetReader) -> None:
    ds = await _dataset(catalog, "qa-csv", ("qa.csv", CSV))
    v = await _version(catalog, ds, 1)
    assert v == CatalogDatasetVersion(dataset_id=ds, name="qa-csv", version=1, format="csv", row_count=3,
                                      columns=["id", "question", "answer", "note"], pii_status="clean")
    batches = await _all(reader, ds, 1, batch_rows=2)
    assert [len(b) for b in batches] == [2, 1]
    assert [r for b in batches for r in b] == CSV_ROWS
    assert await _all(reader, ds, 1, batch_rows=3) == [CSV_ROWS]


async def _jsonl_values_stay_as_written(catalog: AdminTestApp, reader: DatasetReader) -> None:
    """Lists of messages stay lists of dicts with their own keys; types mixed across rows survive; a BOM
    and blank lines carry no row."""
    body = b"\xef\xbb\xbf" + _jsonl(JSONL_ROWS[:2]) + b"\n  \n" + _jsonl(JSONL_ROWS[2:])
    ds = await _dataset(catalog, "chat-jsonl", ("chat.jsonl", body))
    v = await _version(catalog, ds)
    assert (v.format, v.row_count, v.version) == ("jsonl", 3, 1)
    assert set(v.columns) == {"id", "messages", "reference", "context"}
    rows = [r for b in await _all(reader, ds, 1, batch_rows=1) for r in b]
    assert rows == JSONL_ROWS
    assert "name" not in rows[0]["messages"][0] and "context" not in rows[0]  # nothing invented


async def _parquet_values_become_json_like(catalog: AdminTestApp, reader: DatasetReader) -> None:
    msg = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    table = pa.table({
        "id": pa.array([1, 2], pa.int64()),
        "score": pa.array([0.5, None], pa.float64()),
        "text": pa.array(["naïve café", "中文"]),
        "messages": pa.array([[{"role": "user", "content": "hi"}], []], msg),
        "at": pa.array([dt.datetime(2024, 5, 1, 12, 30), None], pa.timestamp("us")),
        "day": pa.array([dt.date(2024, 5, 1), dt.date(1999, 12, 31)], pa.date32()),
        "price": pa.array([Decimal("1.50"), Decimal("-0.01")], pa.decimal128(5, 2)),
        "blob": pa.array([b"\x00\xff", None], pa.binary()),
        "tags": pa.array([[("a", 1)], []], pa.map_(pa.string(), pa.int32())),
    })
    sink = io.BytesIO()
    pq.write_table(table, sink)
    ds = await _dataset(catalog, "pq", ("rows.parquet", sink.getvalue()))
    assert (await _version(catalog, ds)).columns == table.column_names
    rows = [r for b in await _all(reader, ds, 1, batch_rows=10) for r in b]
    assert rows == [
        {"id": 1, "score": 0.5, "text": "naïve café", "messages": [{"role": "user", "content": "hi"}],
         "at": "2024-05-01T12:30:00", "day": "2024-05-01", "price": "1.50", "blob": "AP8=", "tags": [["a", 1]]},
        {"id": 2, "score": None, "text": "中文", "messages": [], "at": None, "day": "1999-12-31", "price": "-0.01",
         "blob": None, "tags": []},
    ]
    assert json.loads(json.dumps(rows)) == rows  # plain JSON round trip


async def _batches_keep_file_order_across_many_rows(catalog: AdminTestApp, reader: DatasetReader,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Row i of the file is the i-th row yielded, whatever the batch size; parsing runs off the event loop."""
    n = 1_000
    csv = ("i,text\n" + "".join(f"{i},row {i} ✓\n" for i in range(n))).encode()
    jl = _jsonl([{"i": i, "text": f"row {i}"} for i in range(n)])
    ds_csv = await _dataset(catalog, "many-csv", ("m.csv", csv))
    ds_jl = await _dataset(catalog, "many-jsonl", ("m.jsonl", jl))
    threads: set[int] = set()
    take = reader_module._take

    def spy(rows: Any, k: int) -> list[dict[str, Any]]:
        threads.add(threading.get_ident())
        return take(rows, k)

    monkeypatch.setattr(reader_module, "_take", spy)
    for ds, ident in ((ds_csv, str), (ds_jl, int)):
        for batch_rows in (1, 7, 256, 1000, 5000):
            batches = await _all(reader, ds, 1, batch_rows=batch_rows)
            assert all(len(b) == batch_rows for b in batches[:-1]) and 0 < len(batches[-1]) <= batch_rows
            assert [r["i"] for b in batches for r in b] == [ident(i) for i in range(n)]
    assert threads and threading.get_ident() not in threads


async def test_unready_unknown_deleted_and_lost(catalog: AdminTestApp, reader: DatasetReader) -> None:
    await _versions_that_are_not_ready_or_not_there(catalog, reader)
    await _a_lost_file_is_unavailable_and_early_stops_release(catalog, reader)


async def _versions_that_are_not_ready_or_not_there(catalog: AdminTestApp, reader: DatasetReader) -> None:
    ragged = b"a,b\n1,2\n3\n"
    ds = await _dataset(catalog, "mixed", ("v1.csv", b"a,b\n1,2\n"), ("v2.csv", ragged))
    v = await _version(catalog, ds)  # the latest *ready* version
    assert (v.version, v.row_count) == (1, 1)
    with pytest.raises(Conflict, match="invalid"):
        await _version(catalog, ds, 2)
    with pytest.raises(Conflict, match="invalid"):
        await _all(reader, ds, 2, batch_rows=10)
    with pytest.raises(NotFound):
        await _version(catalog, ds, 3)
    with pytest.raises(NotFound):
        await _all(reader, ds, 3, batch_rows=10)
    with pytest.raises(NotFound):
        await _version(catalog, "ds_missing")
    empty = await _dataset(catalog, "empty")
    with pytest.raises(Conflict, match="no ready version"):
        await _version(catalog, empty)
    async with catalog.plane._require_running().contexts["catalog"].store.begin() as conn:  # a tombstone
        await conn.execute(update(datasets).where(datasets.c.id == ds).values(deleted_at=dt.datetime.now(dt.UTC)))
    with pytest.raises(NotFound):
        await _version(catalog, ds, 1)
    with pytest.raises(NotFound):
        await _all(reader, ds, 1, batch_rows=10)


async def _a_lost_file_is_unavailable_and_early_stops_release(catalog: AdminTestApp, reader: DatasetReader) -> None:
    ds = await _dataset(catalog, "lost", ("a.jsonl", _jsonl([{"i": i} for i in range(10)])))
    async with contextlib.aclosing(reader.rows(ds, 1, batch_rows=3)) as rows:
        assert [r["i"] for r in await anext(rows)] == [0, 1, 2]  # stop after one batch
    assert [r["i"] for b in await _all(reader, ds, 1, batch_rows=3) for r in b] == list(range(10))
    objects = catalog.plane._require_running().contexts["catalog"].object_store
    assert objects is not None
    await objects.delete(f"datasets/{ds}/1/a.jsonl")
    with pytest.raises(ServiceUnavailable, match="missing from the object store"):
        await _all(reader, ds, 1, batch_rows=3)
    with pytest.raises(ValueError):
        await _all(reader, ds, 1, batch_rows=0)


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server_mod = pytest.importorskip("moto.server", reason="moto[server] (dev extra) is not installed")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
async def s3_catalog(moto_endpoint: str, tmp_path: Path) -> AsyncIterator[AdminTestApp]:
    """SQLite only: the database plays no part in where the file comes from."""
    from aiobotocore.session import get_session

    bucket = f"ds-{uuid.uuid4().hex[:12]}"
    async with get_session().create_client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                                           aws_access_key_id="test", aws_secret_access_key="test") as s3:
        await s3.create_bucket(Bucket=bucket)
    s3_cfg = S3Config(bucket=bucket, prefix="tenant/", endpoint_url=moto_endpoint, access_key_id="test",
                      secret_access_key="test", max_attempts=1)
    cfg = _cfg(f"sqlite+aiosqlite:///{tmp_path / 'llmops.db'}", tmp_path,
               object_store=ObjectStoreCfg(kind="s3", s3=s3_cfg))
    async with admin_test_app(cfg, modules=[CatalogModule()]) as app:
        yield app


async def test_rows_stream_from_s3(s3_catalog: AdminTestApp) -> None:
    ds = await _dataset(s3_catalog, "on-s3", ("chat.jsonl", _jsonl(JSONL_ROWS)), ("qa.csv", CSV))
    reader = _reader(s3_catalog)
    assert [r for b in await _all(reader, ds, 1, batch_rows=2) for r in b] == JSONL_ROWS
    assert [r for b in await _all(reader, ds, 2, batch_rows=2) for r in b] == CSV_ROWS
