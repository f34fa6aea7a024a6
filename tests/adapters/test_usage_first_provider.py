"""A request that fell back records the provider first planned for it (``usage_records.first_provider``,
dataplane migration 5): a serving canary whose attempt failed before stable answered is judged on that
failure. Requests served by their first planned target leave it NULL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import msgspec
from sqlalchemy import select, text

from adapters.adminapi.host import load_control_plane
from adapters.adminapi.settings import ControlCfg
from adapters.dataplane import DATAPLANE_MIGRATIONS, usage_records
from adapters.store import migrate, open_store, schema_drift
from adapters.testdoubles.mock_upstream import Fault, MockServer
from adapters.usage import UsageRecord
from adapters.usage_store import UsageRow, row_from_record, write_usage
from tests.conftest import capture_usage, run_gateway, simple_config

MSG = [{"role": "user", "content": "hi"}]


async def _records(cfg: dict[str, Any], *bodies: dict[str, Any]) -> list[UsageRecord]:
    async with run_gateway(cfg) as gw:
        seen = capture_usage(gw.gateway)
        async with httpx.AsyncClient(base_url=gw.url, timeout=10) as h:
            for body in bodies:
                await h.post("/v1/chat/completions", json=body)
        await gw.gateway.usage.drain()
    return seen


async def test_the_gateway_names_the_first_planned_provider_only_on_fallbacks(mock: MockServer,
                                                                             mock2: MockServer) -> None:
    cfg = simple_config(mock.url, mock2.url, retries=0)
    mock.push_faults(Fault(kind="status", status=503))
    mock2.push_faults(Fault(kind="status", status=503))  # both failed: the fallback was last tried
    mock.push_faults(Fault(kind="status", status=503))  # served by the fallback
    mock.push_faults(Fault(kind="status", status=503))  # streamed, served by the fallback
    mock.push_faults(Fault(kind="status", status=400))  # the first target's answer is final
    plain = {"model": "r", "messages": MSG}
    failed, served, streamed, refused, direct = await _records(
        cfg, plain, plain, {**plain, "stream": True}, plain, plain)
    assert (served.status, served.provider, served.fallback, served.first_provider) == (200, "p1", True, "p0")
    assert (streamed.status, streamed.provider, streamed.first_provider) == (200, "p1", "p0")
    assert (failed.status, failed.fallback, failed.first_provider) == (503, True, "p0")
    assert (refused.status, refused.fallback, refused.first_provider) == (400, False, None)
    assert (direct.status, direct.provider, direct.first_provider) == (200, "p0", None)


async def test_first_provider_is_stored_and_null_otherwise(database_url: str) -> None:
    store = open_store(database_url, feed_mode="local")
    try:
        await migrate(store, load_control_plane(ControlCfg(), modules=[], environ={}).migration_plan())
        assert await schema_drift(store, usage_records) == []
        recs = [UsageRecord(request_id=f"q{i}", route="r", provider="serving:e1:stable", model="m", stream=False,
                            status=200, latency_s=0.1, record_id=f"rec-{i}") for i in range(3)]
        recs[0].fallback, recs[0].first_provider = True, "serving:e1:canary"
        recs[2].fallback, recs[2].first_provider = True, "x" * 150 + "\x00"  # made to fit its column
        rows = [row_from_record(r) for r in recs]
        assert await write_usage(store, rows) == 3
        async with store.read() as conn:
            stored = dict((await conn.execute(
                select(usage_records.c.record_id, usage_records.c.first_provider))).all())
        assert stored == {"rec-0": "serving:e1:canary", "rec-1": None, "rec-2": "x" * 100}
    finally:
        await store.aclose()


async def test_the_gateways_usage_writer_stores_it(database_url: str, tmp_path: Path, mock: MockServer,
                                                   mock2: MockServer) -> None:
    cfg = simple_config(mock.url, mock2.url, retries=0)
    cfg["control"] = {"database_url": database_url, "data_dir": str(tmp_path / "control"), "modules": []}
    cfg["metering"] = {"enabled": True, "spill_dir": str(tmp_path / "spill")}
    mock.push_faults(Fault(kind="status", status=503))
    async with run_gateway(cfg) as gw, httpx.AsyncClient(base_url=gw.url, timeout=10) as h:
        for rid in ("fell-back", "direct"):
            r = await h.post("/v1/chat/completions", json={"model": "r", "messages": MSG},
                             headers={"x-request-id": rid})
            assert r.status_code == 200, r.text
    store = open_store(database_url, feed_mode="local")  # the app has stopped: its writer flushed
    try:
        async with store.read() as conn:
            c = usage_records.c
            rows = (await conn.execute(select(c.request_id, c.provider, c.fallback, c.first_provider))).all()
    finally:
        await store.aclose()
    assert {r[0]: tuple(r[1:]) for r in rows} == {"fell-back": ("p1", True, "p0"), "direct": ("p0", False, None)}


def test_spill_lines_without_the_field_still_decode() -> None:
    """Spill files written before migration 5 replay unchanged; new lines carry the field only when set."""
    old = b'{"record_id":"a","request_id":"b","ts":1.0,"endpoint":"chat","route":"r","model":"m",' \
          b'"provider":"p","status":200,"latency_s":0.1,"usage_source":"upstream"}'
    row = msgspec.json.decode(old, type=UsageRow)
    assert row.first_provider is None
    assert b"first_provider" not in msgspec.json.encode(row)


async def test_migration_5_keeps_existing_rows(database_url: str) -> None:
    store = open_store(database_url, feed_mode="local")
    try:
        plan = dict(load_control_plane(ControlCfg(), modules=[], environ={}).migration_plan())
        await migrate(store, {**plan, "dataplane": DATAPLANE_MIGRATIONS[:4]})
        async with store.begin() as conn:  # a row as migration 4's table holds it
            await conn.execute(text(
                "INSERT INTO usage_records (record_id, request_id, ts, endpoint, route, model, provider, status,"
                " latency_s, usage_source, fallback) VALUES ('old', 'old', CURRENT_TIMESTAMP, 'chat', 'r', 'm', 'p',"
                " 200, 0.1, 'upstream', true)"))
        await migrate(store, plan)
        assert await schema_drift(store, usage_records) == []
        async with store.read() as conn:
            row = (await conn.execute(select(usage_records.c.fallback, usage_records.c.first_provider))).one()
        assert tuple(row) == (True, None)
    finally:
        await store.aclose()
