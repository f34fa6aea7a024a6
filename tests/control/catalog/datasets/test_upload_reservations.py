"""Version numbers survive failures: a database outage mid-upload and abandoned reservations leave no gap."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

from sqlalchemy import insert, select

from adapters.adminapi import ControlCfg
from adapters.adminapi.testing import AdminTestApp, admin_test_app
from adapters.store import StoreUnavailable, utcnow
from control.catalog import CatalogModule
from control.catalog.tables import dataset_versions
from tests.control.catalog._helpers import API, data, multipart, stored_objects, upload
from tests.servers import start_postgres

GOOD = b"question,answer\nq1,a1\nq2,a2\n"


async def _rows(app: AdminTestApp, dataset_id: str) -> list[tuple[int, str]]:
    async with app.plane.store.begin() as conn:  # type: ignore[union-attr]
        rows = (await conn.execute(select(dataset_versions.c.version, dataset_versions.c.status)
                                   .where(dataset_versions.c.dataset_id == dataset_id)
                                   .order_by(dataset_versions.c.version))).all()
    return [(r.version, r.status) for r in rows]


async def test_stale_reservations_are_reaped_and_their_numbers_reused(catalog: AdminTestApp) -> None:
    ds = data(await catalog.client.post(f"{API}/datasets", json={"name": "qa", "ownerTeam": "ml"}), 201)
    path = f"datasets/{ds['id']}/upload"
    assert data(await upload(catalog, path, ("file", "qa.csv", GOOD)), 201)["version"] == 1
    async with catalog.plane.store.begin() as conn:  # type: ignore[union-attr]
        # Left behind by a crash two hours ago, and one by an upload still streaming right now.
        await conn.execute(insert(dataset_versions), [
            {"dataset_id": ds["id"], "version": 2, "status": "uploading", "filename": "old.csv",
             "created_at": utcnow() - timedelta(hours=2), "created_by": "x"},
            {"dataset_id": ds["id"], "version": 3, "status": "uploading", "filename": "now.csv",
             "created_at": utcnow(), "created_by": "x"}])
    assert data(await upload(catalog, path, ("file", "qa.csv", GOOD)), 201)["version"] == 4
    assert await _rows(catalog, ds["id"]) == [(1, "ready"), (3, "uploading"), (4, "ready")]


async def test_postgres_outage_mid_upload_creates_no_version(tmp_path: Path) -> None:
    with start_postgres() as server:
        cfg = ControlCfg(database_url=server.url(), data_dir=str(tmp_path / "data"), change_feed="local",
                         module_settings={"catalog": {"analysis": {"workers": 1}}})
        async with admin_test_app(cfg, modules=[CatalogModule()]) as app:
            ds = data(await app.client.post(f"{API}/datasets", json={"name": "qa", "ownerTeam": "ml"}), 201)
            path = f"datasets/{ds['id']}/upload"
            assert data(await upload(app, path, ("file", "qa.csv", GOOD)), 201)["version"] == 1

            body, headers = multipart(("file", "qa.csv", GOOD))
            reserved, resume = asyncio.Event(), asyncio.Event()

            async def slow_body() -> AsyncIterator[bytes]:
                yield body[: len(body) - 10]  # the part's headers: the server reserves version 2 ...
                reserved.set()  # ... and is now asking for the rest of the file
                await resume.wait()
                yield body[len(body) - 10:]

            sending = asyncio.create_task(app.client.post(f"{API}/{path}", content=slow_body(), headers=headers))
            await reserved.wait()
            assert await _rows(app, ds["id"]) == [(1, "ready"), (2, "uploading")]
            await asyncio.to_thread(server.stop)  # "fast": "immediate" would lose commits (synchronous_commit=off)
            resume.set()
            failed = await sending
            assert failed.status_code == 503, failed.text
            assert failed.json()["status"] == "error"

            await asyncio.to_thread(server.start)
            for _ in range(200):  # the reservation is removed in the background once the database is back
                try:
                    if await _rows(app, ds["id"]) == [(1, "ready")]:
                        break
                except StoreUnavailable:
                    pass
                await asyncio.sleep(0.1)
            assert await _rows(app, ds["id"]) == [(1, "ready")]
            assert stored_objects(app) == [f"datasets/{ds['id']}/1/qa.csv"]
            assert data(await upload(app, path, ("file", "qa.csv", GOOD)), 201)["version"] == 2


async def test_stale_reservations_are_reaped_at_start_up(tmp_path: Path) -> None:
    cfg = ControlCfg(database_url=f"sqlite+aiosqlite:///{tmp_path / 'llmops.db'}", data_dir=str(tmp_path / "data"),
                     change_feed="local")
    async with admin_test_app(cfg, modules=[CatalogModule()]) as app:
        ds = data(await app.client.post(f"{API}/datasets", json={"name": "qa", "ownerTeam": "ml"}), 201)
        async with app.plane.store.begin() as conn:  # type: ignore[union-attr]
            await conn.execute(insert(dataset_versions).values(
                dataset_id=ds["id"], version=1, status="uploading", filename="old.csv",
                created_at=utcnow() - timedelta(hours=2), created_by="x"))
    async with admin_test_app(cfg, modules=[CatalogModule()]) as app:
        assert await _rows(app, ds["id"]) == []
