"""Dataset analysis runs in memory-limited worker processes of its own, and survives their failures."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.adminapi import ControlCfg
from adapters.adminapi.testing import AdminTestApp, admin_test_app
from control.catalog import CatalogModule
from tests.control.catalog._helpers import API, data, fail, stored_objects, upload

DETECTOR = "tests.control.catalog.datasets._detectors:make"


@pytest.fixture
async def catalog(tmp_path: Path) -> AsyncIterator[AdminTestApp]:
    settings = {"pii_detectors": [DETECTOR], "analysis": {"workers": 1, "memory_limit_mb": 1024}}
    cfg = ControlCfg(database_url=f"sqlite+aiosqlite:///{tmp_path / 'llmops.db'}", data_dir=str(tmp_path / "data"),
                     change_feed="local", max_upload_bytes=1 << 20, module_settings={"catalog": settings})
    async with admin_test_app(cfg, modules=[CatalogModule()]) as app:
        yield app


async def _dataset(app: AdminTestApp) -> str:
    created = data(await app.client.post(f"{API}/datasets", json={"name": "d", "ownerTeam": "ml"}), 201)
    return f"datasets/{created['id']}/upload"


async def test_analysis_runs_outside_the_serving_process(catalog: AdminTestApp) -> None:
    path = await _dataset(catalog)
    report = data(await upload(catalog, path, ("file", "a.csv", b"text\nWHOAMI\nhello\n")), 201)
    (finding,) = report["pii"]["findings"]
    worker_pid = int(finding["rule"].removeprefix("pid_"))
    assert worker_pid != os.getpid()


async def test_memory_limit_and_dead_workers_become_413_and_the_pool_recovers(catalog: AdminTestApp) -> None:
    path = await _dataset(catalog)
    oom = fail(await upload(catalog, path, ("file", "a.csv", b"text\nALLOCATE\n")), 413)
    assert "1024 MiB memory limit" in oom["message"] and "stopped" not in oom["message"]
    assert oom["data"]["status"] == "invalid"
    assert oom["data"]["validation"]["errors"][0]["code"] == "analysis_memory_limit"

    killed = fail(await upload(catalog, path, ("file", "b.csv", b"text\nDIE\n")), 413)
    assert "its worker was stopped" in killed["message"]

    good = data(await upload(catalog, path, ("file", "c.csv", b"text\nhello\n")), 201)
    assert good["status"] == "ready" and good["version"] == 3
    assert stored_objects(catalog) == [good["storageUri"].split("/objects/", 1)[1]]


async def test_deep_json_is_422_with_the_line(catalog: AdminTestApp) -> None:
    path = await _dataset(catalog)
    deep = b'{"a": 1}\n{"x": ' + b"[" * 5000 + b"]" * 5000 + b"}\n"
    body = fail(await upload(catalog, path, ("file", "deep.jsonl", deep)), 422)
    issue = body["data"]["validation"]["errors"][0]
    assert issue["code"] == "too_deep" and issue["line"] == 2 and "line 2" in body["message"]


async def test_nul_byte_past_the_first_64_kib_of_a_csv_is_422(catalog: AdminTestApp) -> None:
    path = await _dataset(catalog)
    csv = b"question,answer\n" + b"".join(b"q%d,a%d\n" % (i, i) for i in range(10_000)) + b"q,a\x00b\n"
    body = fail(await upload(catalog, path, ("file", "late-nul.csv", csv)), 422)
    issue = body["data"]["validation"]["errors"][0]
    assert issue["code"] == "invalid_encoding" and issue["line"] == 10_002 and body["data"]["status"] == "invalid"
