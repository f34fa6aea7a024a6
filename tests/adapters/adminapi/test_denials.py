"""A flood of refused admin requests writes a bounded number of audit rows (adapters/adminapi/denials.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select

from adapters.adminapi import ControlCfg
from adapters.adminapi.audit import AuditWriter
from adapters.adminapi.denials import OVERFLOW, DenialStats, DenialWindows
from adapters.adminapi.tables import ADMIN_MIGRATIONS, audit_log
from adapters.adminapi.testing import AdminTestApp, admin_test_app
from adapters.store import migrate, open_store, utcnow
from adapters.store.changes import STORE_MIGRATIONS
from tests.adapters.adminapi.conftest import DemoModule

API = "/llm-ops/v1"
WINDOW_S = 2.0


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[AdminTestApp]:
    cfg = ControlCfg(data_dir=str(tmp_path / "data"), change_feed="local", denied_audit_window_s=WINDOW_S)
    async with admin_test_app(cfg, modules=[DemoModule()]) as app:
        yield app


async def _denied(admin: AdminTestApp) -> list[dict[str, Any]]:
    resp = await admin.client.get(f"{API}/audit/logs", params={"outcome": "denied", "pageSize": 200})
    return list(reversed(resp.json()["data"]["items"]))


async def test_a_flood_of_bad_keys_writes_one_row_then_one_aggregate(admin: AdminTestApp) -> None:
    bad = {"authorization": "Bearer llmops_0123456789abcdef_" + "b" * 43}
    statuses = await asyncio.gather(*(admin.client.get(f"{API}/demo/things", headers=bad) for _ in range(200)))
    assert {r.status_code for r in statuses} == {401}
    # One row per window opened (the flood may outlast a window on a slow machine): not one per request.
    rows = await _denied(admin)
    assert 1 <= len(rows) <= 3 and rows[0]["detail"] == "Invalid admin key"
    assert rows[0]["after"] == {"source": "127.0.0.1"}
    await asyncio.sleep(WINDOW_S + 0.5)  # every window closes: its count becomes one row
    rows = await _denied(admin)
    aggregates = [r for r in rows if "count" in r["after"]]
    assert len(rows) <= 6 and len(aggregates) >= 1
    assert len(rows) - len(aggregates) + sum(r["after"]["count"] for r in aggregates) == 200  # all accounted for
    aggregate = aggregates[0]
    assert aggregate["action"] == "auth.denied" and aggregate["statusCode"] == 401
    assert aggregate["after"]["source"] == "127.0.0.1" and aggregate["actorName"] == "anonymous"
    assert aggregate["detail"] == f"Invalid admin key ({aggregate['after']['count']} more from 127.0.0.1)"
    assert admin.plane.denial_stats.by_status == {401: 200}
    # The next denial opens a new window and is written at once again.
    await admin.client.get(f"{API}/demo/things", headers=bad)
    assert len(await _denied(admin)) == len(rows) + 1


async def test_different_reasons_get_their_own_windows(admin: AdminTestApp) -> None:
    await admin.client.get(f"{API}/demo/things", headers={"authorization": ""})
    await admin.client.get(f"{API}/demo/things", headers={"authorization": "Bearer nope"})
    await admin.client.get(f"{API}/demo/things", headers={"authorization": "Bearer nope"})
    assert [r["detail"].split(":")[0] for r in await _denied(admin)] == ["Missing bearer key", "Invalid admin key"]


def test_windows_are_bounded_and_overflow_shares_one() -> None:
    windows = DenialWindows(max_windows=3)
    kw: dict[str, Any] = {"at": utcnow(), "status_code": 401, "resource_id": "GET /x", "actor_name": "anonymous",
                          "request_id": "r"}
    firsts = [windows.admit("bad key", f"10.0.0.{i}", **kw)[1] for i in range(1000)]
    assert len(windows) == 4  # three real windows and the overflow one
    assert firsts.count(True) == 4
    aggregate = windows.close(OVERFLOW)
    assert aggregate is not None and aggregate.count == 1000 - 4


def test_denial_counter_is_exposed_to_prometheus() -> None:
    stats = DenialStats()
    registry = CollectorRegistry()
    registry.register(stats)
    stats.count(401)
    stats.count(401)
    stats.count(403)
    assert registry.get_sample_value("llmops_admin_auth_denials_total", {"status": "401"}) == 2
    assert registry.get_sample_value("llmops_admin_auth_denials_total", {"status": "403"}) == 1


async def test_aclose_writes_the_open_aggregates(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}", feed_mode="local")
    try:
        await migrate(store, {"store": STORE_MIGRATIONS, "admin": ADMIN_MIGRATIONS})
        writer = AuditWriter(store, window_s=3600)
        for i in range(5):
            await writer.denial(principal=None, key_id=None, request_id=f"r{i}", method="GET", path="/x",
                                status_code=401, reason="Invalid admin key", source="192.0.2.1")
        await writer.aclose()
        async with store.read() as conn:
            rows = (await conn.execute(select(audit_log.c.detail).order_by(audit_log.c.id))).scalars().all()
            assert (await conn.execute(select(func.count()).select_from(audit_log))).scalar_one() == 2
        assert rows == ["Invalid admin key", "Invalid admin key (4 more from 192.0.2.1)"]
    finally:
        await store.aclose()
