"""The daily summary: triggers mark changed days, refreshes rebuild them, and reports read the same either way."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update

from adapters.adminapi import ControlCfg, load_control_plane
from adapters.adminapi.testing import AdminTestApp, admin_test_app
from adapters.dataplane import usage_rollups
from adapters.store import Store, migrate, open_store
from control.observability import module, refresh_days, refresh_dirty
from control.observability.tables import daily_usage, dirty_days, hourly_gpu
from tests.control.observability._data import H0, H2, H3, OUTSIDE, ROWS, WINDOW, insert_rollups

API = "/llm-ops/v1/observability"
AGGREGATE = "/llm-ops/v1/governance/observability/cost-aggregate"
DAYS = [datetime(2026, 11, d, tzinfo=UTC) for d in (29, 30)] + [datetime(2026, 12, d, tzinfo=UTC) for d in (1, 2)]
# Every kind of report, over whole days (summary) and over windows that cut days (summary + hourly rows).
URLS = [
    f"{API}/usage?{WINDOW}",
    f"{API}/usage?{WINDOW}&granularity=total&group_by=team,key_id,route,model,provider,variant,endpoint",
    f"{API}/usage?{WINDOW}&group_by=team,model",
    f"{API}/usage?{WINDOW}&granularity=hour&group_by=provider",
    f"{API}/usage?{WINDOW}&granularity=total&team=b",
    f"{API}/usage?{WINDOW}&granularity=total&team=",
    f"{API}/usage?{WINDOW}&granularity=total&route=local&key_id=k1",
    f"{API}/usage?start=2026-11-29T12:00:00Z&end=2026-12-01T03:00:00Z&group_by=team",
    f"{API}/usage?start=2026-11-30T23:00:00Z&end=2026-12-03&granularity=total&group_by=endpoint",
    f"{API}/top-spenders?by=key_id&{WINDOW}",
    f"{API}/cost-profiles?{WINDOW}",
    *[f"{AGGREGATE}?start_date=2026-11-30&end_date=2026-12-01&resource_type={kind}"
      for kind in ("", "gpu", "api", "chat", "completions", "embeddings", "responses")],
]


async def marked(store: Store) -> list[datetime]:
    async with store.read() as conn:
        return list((await conn.execute(select(dirty_days.c.day).order_by(dirty_days.c.day))).scalars())


async def answers(app: AdminTestApp) -> list[Any]:
    out = []
    for url in URLS:
        resp = await app.client.get(url)
        assert resp.status_code == 200, (url, resp.text)
        out.append(resp.json()["data"])
    return out


@pytest.fixture
async def store(obs: AdminTestApp) -> Store:
    assert obs.plane.store is not None
    await insert_rollups(obs.plane.store, ROWS + OUTSIDE)
    return obs.plane.store


async def test_reports_are_the_same_from_the_summary_and_from_the_hourly_rows(obs: AdminTestApp,
                                                                             store: Store) -> None:
    assert await marked(store) == DAYS  # the triggers marked every day the inserts touched
    hourly = await answers(obs)
    assert await refresh_days(store, DAYS) == 4
    assert await marked(store) == []
    async with store.read() as conn:
        summary = (await conn.execute(select(daily_usage).where(daily_usage.c.team == "a",
                                                               daily_usage.c.day == DAYS[2]))).all()
    assert [(r.model, r.gpu_priced, r.gpu_cost_usd, r.gpu_micro_hours) for r in summary] == [
        ("llama", 1, Decimal("1.333333334"), 1_333_334)]  # a's third of 00:00 (the odd units) and all of 05:00
    assert await answers(obs) == hourly


async def test_a_change_after_the_refresh_marks_the_day_and_shows_at_once(obs: AdminTestApp, store: Store) -> None:
    await refresh_days(store, DAYS)
    url = f"{API}/usage?{WINDOW}&granularity=total&group_by=team"
    before = {r["team"]: r for r in (await obs.client.get(url)).json()["data"]["rows"]}
    async with store.begin() as conn:  # what the usage writer's upsert does to an existing row
        await conn.execute(update(usage_rollups).where(usage_rollups.c.hour == H0, usage_rollups.c.team == "b")
                           .values(requests=usage_rollups.c.requests + 1, cost_usd=Decimal("0.002")))
    assert await marked(store) == [DAYS[1]]
    after = {r["team"]: r for r in (await obs.client.get(url)).json()["data"]["rows"]}
    assert after["b"]["requests"] == before["b"]["requests"] + 1
    assert after["b"]["cost_usd"] == "0.335333333" and after["a"] == before["a"]
    await refresh_days(store, [DAYS[1]])
    assert {r["team"]: r for r in (await obs.client.get(url)).json()["data"]["rows"]} == after

    async with store.begin() as conn:  # a hand fix (or rebuild_rollups) deleting rows marks their days too
        await conn.execute(delete(usage_rollups).where(usage_rollups.c.hour == H3))
    assert await marked(store) == [DAYS[2]]
    assert (await obs.client.get(url)).json()["data"]["totals"]["cost_usd"] == "1.014645678"  # H3's $1 is gone


async def test_refresh_dirty_waits_until_a_day_has_been_over_for_the_grace(store: Store) -> None:
    now = DAYS[2] + timedelta(days=1, minutes=5)  # Dec 1 ended 5 minutes ago
    assert await refresh_dirty(store, now=now, grace_s=600) == 2  # Nov 29 and 30, not Dec 1 (nor Dec 2)
    assert await marked(store) == DAYS[2:]
    assert await refresh_dirty(store, now=now + timedelta(minutes=10), grace_s=600) == 1
    assert await marked(store) == DAYS[3:]


async def test_the_background_refresher_catches_up(database_url: str, tmp_path: Path) -> None:
    cfg = ControlCfg(database_url=database_url, data_dir=str(tmp_path), change_feed="local",
                     module_settings={"observability": {"refresh_interval_s": 0.05, "refresh_grace_s": 0}})
    three_days_ago = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=3)
    async with admin_test_app(cfg, modules=[module]) as app:
        assert app.plane.store is not None
        await insert_rollups(app.plane.store, [{**row, "hour": three_days_ago} for row in ROWS[4:7]])
        async with asyncio.timeout(20):
            while await marked(app.plane.store):
                await asyncio.sleep(0.05)
        async with app.plane.store.read() as conn:
            assert (await conn.execute(select(daily_usage.c.day).distinct())).scalars().all()


async def test_the_migration_marks_the_days_already_rolled_up(database_url: str, tmp_path: Path) -> None:
    store = open_store(database_url, data_dir=str(tmp_path), feed_mode="local")
    try:
        plan = dict(load_control_plane(ControlCfg(), modules=[module], environ={}).migration_plan())
        await migrate(store, {k: v for k, v in plan.items() if k != "observability"})
        await insert_rollups(store, [ROWS[0], {**ROWS[4], "hour": H2 + timedelta(hours=3)}])
        await migrate(store, plan)
        assert await marked(store) == DAYS[1:3]
    finally:
        await store.aclose()


async def test_migration_3_marks_summarised_days_with_gpu_rows_so_their_hourly_allocations_get_built(
        database_url: str, tmp_path: Path) -> None:
    store = open_store(database_url, data_dir=str(tmp_path), feed_mode="local")
    try:
        plan = dict(load_control_plane(ControlCfg(), modules=[module], environ={}).migration_plan())
        before = {k: v for k, v in plan.items() if k != "observability"}
        before["observability"] = [m for m in plan["observability"] if m.version < 3]
        await migrate(store, before)
        await insert_rollups(store, ROWS + OUTSIDE)
        async with store.begin() as conn:  # what migration 2's refresher left: every day summarised, none marked
            await conn.execute(delete(dirty_days))
        await migrate(store, plan)
        gpu_days = sorted({datetime(r["hour"].year, r["hour"].month, r["hour"].day, tzinfo=UTC)
                           for r in ROWS + OUTSIDE if r.get("gpu_usd_per_hour")})
        assert gpu_days and await marked(store) == gpu_days
        await refresh_days(store, gpu_days)
        async with store.read() as conn:
            daily = (await conn.execute(select(func.sum(daily_usage.c.gpu_cost_usd)))).scalar_one()
            hourly = (await conn.execute(select(func.sum(hourly_gpu.c.gpu_cost_usd)))).scalar_one()
        assert daily and hourly == daily  # every allocated nano-dollar is in both, per day and per hour
    finally:
        await store.aclose()
