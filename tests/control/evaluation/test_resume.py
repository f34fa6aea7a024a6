"""Restarts and takeovers: a run interrupted mid-way continues where it stopped, and no item is stored,
scored or counted twice. Both databases."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, update

from adapters.store import utcnow
from adapters.testdoubles.mock_state import MockConfig
from adapters.testdoubles.mock_upstream import MockServer
from control.evaluation.tables import events, items, runs
from tests.control.evaluation.support import (
    API,
    FakeCatalog,
    finished,
    gateway,
    plane,
    qa_rows,
    run_body,
    settings,
    until,
)


def _chat_calls(mock: MockServer) -> int:
    return len([r for r in mock.requests if r.path.endswith("/chat/completions")])


async def _item_keys(app: Any, run_id: str) -> list[tuple[int, int]]:
    store = app.plane.store
    async with store.read() as conn:
        return [(int(t), int(i)) for t, i in await conn.execute(
            select(items.c.target, items.c.idx).where(items.c.run_id == run_id).order_by(items.c.idx, items.c.target))]


async def test_a_restart_mid_run_loses_nothing_and_counts_nothing_twice(database_url: str, tmp_path: Path,
                                                                         mock: MockServer) -> None:
    mock.config = MockConfig(latency_s=0.1)
    rows = 30
    catalog = FakeCatalog()
    catalog.datasets.add("ds", qa_rows(rows))
    catalog.datasets.batch_rows = 7
    body = run_body(targets=[{"kind": "route", "id": "r"}, {"kind": "route", "id": "r2"}], concurrency=4)
    async with gateway(database_url, tmp_path, mock) as gw:
        async with plane(database_url, tmp_path, catalog, settings(gw.url)) as (app, _module):
            run = (await app.client.post(f"{API}/runs", json=body)).json()["data"]

            async def some_done() -> bool:
                return len(await _item_keys(app, run["id"])) >= 12

            await until(some_done)
        # the plane stopped with items in flight: they were dropped, the lease handed back
        async with plane(database_url, tmp_path, FakeCatalog(), {**settings(gw.url), "worker": False}) as (app, _m):
            stopped = (await app.client.get(f"{API}/runs/{run['id']}")).json()["data"]
            kept = await _item_keys(app, run["id"])
        assert stopped["status"] == "running" and 12 <= len(kept) < 2 * rows
        assert stopped["progress"]["done"] <= len(kept)
        calls_before = _chat_calls(mock)
        async with plane(database_url, tmp_path, catalog, settings(gw.url)) as (app, _module):
            done = await finished(app, run["id"])
            keys = await _item_keys(app, run["id"])
            store = app.plane.store
            assert store is not None
            async with store.read() as conn:
                scored = (await conn.execute(select(func.count()).select_from(items).where(
                    items.c.run_id == run["id"], items.c.scores["exact_match"].is_not(None)))).scalar_one()
    assert done["status"] == "succeeded"
    assert done["progress"] == {"done": 2 * rows, "failed": 0, "total": 2 * rows}
    assert keys == [(t, i) for i in range(rows) for t in (0, 1)]  # each exactly once
    assert scored == 2 * rows
    assert _chat_calls(mock) - calls_before == 2 * rows - len(kept)  # only what was missing was asked again
    events_seen = [e["event"] for e in done["timeline"]]
    assert events_seen[:2] == ["created", "started"] and "resumed" in events_seen and events_seen[-1] == "finished"
    resumed = next(e for e in done["timeline"] if e["event"] == "resumed")
    assert resumed["detail"]["done"] == len(kept)
    assert done["metrics"]["0"]["exact_match"]["n"] == rows and done["metrics"]["1"]["exact_match"]["n"] == rows


async def test_a_dead_replicas_run_is_taken_over_once_its_lease_expires(database_url: str, tmp_path: Path,
                                                                         mock: MockServer) -> None:
    catalog = FakeCatalog()
    catalog.datasets.add("ds", qa_rows(6))
    async with gateway(database_url, tmp_path, mock) as gw:
        async with plane(database_url, tmp_path, catalog, {**settings(gw.url), "worker": False}) as (app, _m):
            run = (await app.client.post(f"{API}/runs", json=run_body())).json()["data"]
            store = app.plane.store
            assert store is not None
            lease_until = utcnow() + timedelta(seconds=1.5)
            async with store.begin() as conn:  # a replica took it, stored two items, and died
                await conn.execute(update(runs).where(runs.c.id == run["id"]).values(
                    status="running", started_at=utcnow(), lease_owner="dead-host:1:abc", lease_until=lease_until))
                await conn.execute(insert(items), [
                    {"run_id": run["id"], "target": 0, "idx": i, "input": f"question number {i}",
                     "reference": f"answer {i}", "output": f"answer {i}", "scores": {}, "created_at": utcnow()}
                    for i in (0, 3)])
        async with plane(database_url, tmp_path, catalog, settings(gw.url)) as (app, _module):
            await until(lambda: _owner_changed(app, run["id"]), within_s=10)
            assert utcnow() >= lease_until  # not before the dead one's lease ran out
            done = await finished(app, run["id"])
    assert done["status"] == "succeeded" and done["progress"]["done"] == 6
    assert _chat_calls(mock) == 4  # rows 0 and 3 were already there
    assert done["metrics"]["0"]["exact_match"]["value"] == 2 / 6  # the dead replica's two exact answers count


async def _owner_changed(app: Any, run_id: str) -> bool:
    async with app.plane.store.read() as conn:
        owner = (await conn.execute(select(runs.c.lease_owner).where(runs.c.id == run_id))).scalar_one()
    return owner is not None and owner != "dead-host:1:abc"


async def test_a_lost_lease_stops_the_job_without_writing(database_url: str, tmp_path: Path,
                                                          mock: MockServer) -> None:
    mock.config = MockConfig(latency_s=0.1)
    catalog = FakeCatalog()
    catalog.datasets.add("ds", qa_rows(40))
    async with gateway(database_url, tmp_path, mock) as gw, \
            plane(database_url, tmp_path, catalog, settings(gw.url)) as (app, module):
        run = (await app.client.post(f"{API}/runs", json=run_body(concurrency=2))).json()["data"]
        await until(lambda: _keys_at_least(app, run["id"], 2))
        store = app.plane.store
        assert store is not None and module.worker is not None
        async with store.begin() as conn:  # another replica took it over (this one looked dead to it)
            await conn.execute(update(runs).where(runs.c.id == run["id"]).values(
                lease_owner="other:1:xyz", lease_until=utcnow() + timedelta(minutes=5)))
        await until(lambda: _no_job(module, run["id"]))
        async with store.read() as conn:
            row = (await conn.execute(select(runs).where(runs.c.id == run["id"]))).one()
            finished_events = (await conn.execute(select(func.count()).select_from(events).where(
                events.c.run_id == run["id"], events.c.event == "finished"))).scalar_one()
    assert row.status == "running" and row.lease_owner == "other:1:xyz" and finished_events == 0


async def _keys_at_least(app: Any, run_id: str, n: int) -> bool:
    return len(await _item_keys(app, run_id)) >= n


async def _no_job(module: Any, run_id: str) -> bool:
    return run_id not in module.worker.jobs
