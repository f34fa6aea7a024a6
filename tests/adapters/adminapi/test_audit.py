"""Audit log queries: filters, time ranges, paging, and atomicity with the audited change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from adapters.adminapi import Actor, Principal, Role
from adapters.adminapi.tables import audit_log
from adapters.adminapi.testing import AdminTestApp

from ._helpers import bearer, make_key

API = "/llm-ops/v1/audit/logs"


async def _entries(admin: AdminTestApp, query: str = "") -> dict:  # type: ignore[type-arg]
    resp = await admin.client.get(f"{API}?{query}")
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]  # type: ignore[no-any-return]


async def test_filters_by_actor_action_resource_and_outcome(admin: AdminTestApp) -> None:
    dev_id, dev = await make_key(admin, "developer", "dev-key")
    await admin.client.post("/llm-ops/v1/demo/things", json={"name": "a"}, headers=bearer(dev))
    await admin.client.post("/llm-ops/v1/demo/things", json={"name": "b"}, headers=bearer(dev))
    await admin.client.get("/llm-ops/v1/audit/logs", headers=bearer(dev))  # denied: developer < operator

    assert (await _entries(admin, f"actor={dev_id}"))["total"] == 3
    assert (await _entries(admin, "actor=dev-key"))["total"] == 3
    assert (await _entries(admin, "action=demo.thing.create"))["total"] == 2
    assert (await _entries(admin, "action=demo.*"))["total"] == 2
    assert (await _entries(admin, "action=demo"))["total"] == 0
    assert (await _entries(admin, "action=admin.*"))["total"] == 1
    assert (await _entries(admin, "resourceType=thing&resourceId=2"))["items"][0]["after"] == {"id": 2, "name": "b"}
    assert (await _entries(admin, "outcome=denied"))["items"][0]["actorKeyId"] == dev_id
    created = (await _entries(admin, "action=demo.thing.create&pageSize=1&page=2"))
    assert created["items"][0]["resourceId"] == "1" and created["total"] == 2


async def test_like_wildcards_in_filters_are_literal(admin: AdminTestApp) -> None:
    await admin.client.post("/llm-ops/v1/demo/things", json={"name": "a"})
    assert (await _entries(admin, "action=demo_%25*"))["total"] == 0
    assert (await _entries(admin, "action=%25"))["total"] == 0


async def test_time_range(admin: AdminTestApp) -> None:
    await admin.client.post("/llm-ops/v1/demo/things", json={"name": "a"})
    now = datetime.now(UTC)
    hour = timedelta(hours=1)
    fmt = "%Y-%m-%dT%H:%M:%S"
    assert (await _entries(admin, f"since={(now - hour).strftime(fmt)}Z"))["total"] == 1
    assert (await _entries(admin, f"until={(now - hour).strftime(fmt)}%2B00:00"))["total"] == 0
    assert (await _entries(admin, f"since={(now + hour).strftime(fmt)}"))["total"] == 0  # naive = UTC
    # An empty window (since after until) matches nothing; it is not an error.
    assert (await _entries(admin, f"since={now.strftime(fmt)}Z&until={(now - hour).strftime(fmt)}Z"))["total"] == 0
    assert (await admin.client.get(f"{API}?since=yesterday")).status_code == 400


async def test_time_filters_take_unix_seconds_and_any_valid_date_time(admin: AdminTestApp) -> None:
    await admin.client.post("/llm-ops/v1/demo/things", json={"name": "a"})
    now = datetime.now(UTC).timestamp()
    assert (await _entries(admin, f"since={now - 3600:.3f}&until={int(now) + 3600}"))["total"] == 1
    assert (await _entries(admin, f"until={int(now) - 3600}"))["total"] == 0
    # Valid date-times whose UTC instant lies outside datetime's range are clamped, not refused.
    assert (await _entries(admin, "since=0001-01-01T00:00:00%2B01:00"))["total"] == 1
    assert (await _entries(admin, "until=9999-12-31T23:59:59-01:00"))["total"] == 1
    assert (await _entries(admin, "until=null"))["total"] == 1  # no filter, as the document's null says


@pytest.mark.parametrize(("value", "status"), [
    ("253402300799", 200), ("-62135596800", 200), ("253402300798.9999999", 200), ("1e3", 200),
    # Just past the declared bounds: refused exactly there (a float parse let 253402300799.00003 through).
    ("253402300799.00003", 400), ("-62135596800.000001", 400), ("1e999", 400), ("nan", 400), ("", 400),
])
async def test_unix_seconds_are_bounded_exactly_as_declared(admin: AdminTestApp, value: str, status: int) -> None:
    resp = await admin.client.get(API, params={"since": value})
    assert resp.status_code == status, resp.text
    if status == 400:
        assert resp.json()["data"]["errors"][0]["field"] == "since"


@pytest.mark.parametrize("query", ["outcome=maybe", "pageSize=500", "actor=" + "x" * 101])
async def test_bad_filters_are_400(admin: AdminTestApp, query: str) -> None:
    assert (await admin.client.get(f"{API}?{query}")).status_code == 400


async def test_audit_entry_rolls_back_with_its_change(admin: AdminTestApp) -> None:
    store, audit = admin.plane.store, admin.plane._running.audit  # type: ignore[union-attr]
    assert store is not None
    actor = Actor(Principal("key_x", "x", Role.admin), "req-1")
    with pytest.raises(RuntimeError):
        async with store.begin() as conn:
            await audit.record(conn, actor, action="demo.thing.create", resource_type="thing", resource_id="9")
            raise RuntimeError("the change failed")
    async with store.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(audit_log))).scalar_one() == 0
