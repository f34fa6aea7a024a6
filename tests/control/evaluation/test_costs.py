"""What a run costs: every call it makes (generation, perplexity, the judge) priced by the gateway, read back
by request id, and reported by kind; a usage record that comes late is waited for; replaced judge calls count."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from adapters.adminapi import ControlCfg
from adapters.adminapi.testing import AdminTestApp, admin_test_app
from adapters.dataplane import usage_records
from adapters.store import Store, utcnow
from adapters.testdoubles.mock_state import MockConfig, ScriptRule
from adapters.testdoubles.mock_upstream import MockServer
from control.evaluation.costs import GENERATION, JUDGE, drop_judgments, read_costs, run_costs
from control.evaluation.tables import items, judgments, runs
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
from tests.control.evaluation.support_j import JModule, data, seed_run

JUDGE_CFG = {"model": {"kind": "route", "id": "r2"}, "rubric": "helpfulness"}


def _usd(value: str | None) -> Decimal:
    assert value is not None
    return Decimal(value)


async def _records(store: Store, run_id: str) -> dict[str, Decimal | None]:
    """Every usage record the gateway wrote for this run's calls (their request ids start with the run's id)."""
    async with store.read() as conn:
        rows = (await conn.execute(select(usage_records.c.request_id, usage_records.c.cost_usd))).all()
    return {r: c for r, c in rows if r.startswith(run_id + ".")}


async def _judged(app: AdminTestApp, run_id: str, times: int) -> dict[str, Any] | None:
    run = data(await app.client.get(f"{API}/runs/{run_id}"))
    done = sum(e["event"] == "judging_finished" for e in run["timeline"])
    return run if done >= times and run["costs"]["judgeUsd"] is not None else None


async def test_a_run_reports_each_kind_of_call_and_a_total_equal_to_the_gateways_records(
    database_url: str, tmp_path: Path, mock: MockServer,
) -> None:
    mock.config = MockConfig(script=[ScriptRule(match="How helpful", reply='{"score": 4, "rationale": "fine"}')])
    catalog = FakeCatalog()
    catalog.datasets.add("ds", qa_rows(3))
    async with gateway(database_url, tmp_path, mock) as gw, \
            plane(database_url, tmp_path, catalog, settings(gw.url)) as (app, _module):
        store = app.plane.store
        assert store is not None
        body = run_body(type="llm_judge", judge=JUDGE_CFG, metrics=["perplexity", "exact_match", "judge_score"])
        run_id = data(await app.client.post(f"{API}/runs", json=body), 201)["id"]
        done = await finished(app, run_id)
        assert done["status"] == "succeeded", done["error"]
        rows = data(await app.client.get(f"{API}/runs/{run_id}/items"))["items"]
        outputs = [i["outputs"][0] for i in rows]
        calls = [j for i in rows for j in i["judgments"]]
        records = await _records(store, run_id)

        # Each call's cost is its usage record's, and every record of the run is one of its calls.
        assert len(outputs) == 3 and len(calls) == 3
        ids = {o["requestId"]: o["costUsd"] for o in outputs} | {o["perplexityRequestId"]: o["perplexityCostUsd"]
                                                                   for o in outputs} | {
            j["requestId"]: j["costUsd"] for j in calls}
        assert len(ids) == 9 and set(ids) == set(records)
        assert all(records[r] is not None and _usd(c) == records[r] for r, c in ids.items())
        costs = done["costs"]
        generation = sum(_usd(o["costUsd"]) for o in outputs)
        perplexity = sum(_usd(o["perplexityCostUsd"]) for o in outputs)
        judge = sum(_usd(j["costUsd"]) for j in calls)
        assert generation == 3 * Decimal("0.036") and perplexity > 0 and judge > 0
        assert (_usd(costs["generationUsd"]), _usd(costs["perplexityUsd"]), _usd(costs["judgeUsd"])) == (
            generation, perplexity, judge)
        assert _usd(costs["totalUsd"]) == generation + perplexity + judge == sum(c for c in records.values() if c)
        # costUsd and the per-item cost_usd metric stay the generation calls': what compares two models.
        assert _usd(done["costUsd"]) == generation
        assert Decimal(str(done["metrics"]["0"]["cost_usd"]["value"])) == Decimal("0.036")

        # The JSON export carries the perplexity call and the judge's cost per record; the CSV keeps its columns.
        exported = (await app.client.get(f"{API}/runs/{run_id}/export", params={"format": "json"})).json()
        assert [(_usd(e["perplexityCostUsd"]), _usd(e["judgeCostUsd"])) for e in exported] == [
            (_usd(o["perplexityCostUsd"]), _usd(i["judgments"][0]["costUsd"]))
            for o, i in zip(outputs, rows, strict=True)]
        header = next(csv.reader(io.StringIO((await app.client.get(
            f"{API}/runs/{run_id}/export", params={"format": "csv"})).text)))
        assert header == ["index", "target", "route", "input", "reference", "output", "error", "latencyS",
                          "promptTokens", "completionTokens", "costUsd", "requestId", "perplexity", "exact_match",
                          "judge_score"]

        # Another judge replaces the verdicts; what the first one cost still counts.
        data(await app.client.post(f"{API}/runs/{run_id}/llm-judge", json={"judge": {**JUDGE_CFG, "scaleMax": 10}}),
             202)
        rejudged = await until(lambda: _judged(app, run_id, 2), 60)
        records = await _records(store, run_id)
        assert len(records) == 12
        second = [j for i in data(await app.client.get(f"{API}/runs/{run_id}/items"))["items"]
                  for j in i["judgments"]]
        assert len(second) == 3 and not {j["requestId"] for j in second} & {j["requestId"] for j in calls}
        assert _usd(rejudged["costs"]["judgeUsd"]) == judge + sum(_usd(j["costUsd"]) for j in second)
        assert _usd(rejudged["costs"]["totalUsd"]) == sum(c for c in records.values() if c)
        assert _usd(rejudged["costUsd"]) == generation


@pytest.fixture
async def jplane(database_url: str, tmp_path: Path) -> AsyncIterator[AdminTestApp]:
    cfg = ControlCfg(database_url=database_url, data_dir=str(tmp_path / "data"), change_feed="local")
    async with admin_test_app(cfg, modules=[JModule()]) as app:
        yield app


def _record(request_id: str, cost: str | None) -> dict[str, Any]:
    return {"record_id": "rec-" + request_id, "request_id": request_id, "ts": utcnow(), "endpoint": "chat",
            "route": "judge", "model": "m0", "provider": "p0", "status": 200, "latency_s": 0.1,
            "usage_source": "upstream", "cost_usd": None if cost is None else Decimal(cost)}


def _judgment(run_id: str, idx: int, request_id: str) -> dict[str, Any]:
    return {"run_id": run_id, "idx": idx, "kind": "pointwise", "target": 0, "order": 0, "judge_route": "judge",
            "raw": '{"score": 3}', "parsed": True, "score": 3.0, "request_id": request_id, "created_at": utcnow()}


async def _judge_costs(store: Store, run_id: str) -> dict[str, Decimal | None]:
    async with store.read() as conn:
        return dict((await conn.execute(select(judgments.c.request_id, judgments.c.cost_usd).where(
            judgments.c.run_id == run_id))).all())


async def test_a_call_whose_usage_record_comes_late_is_priced_when_it_comes(jplane: AdminTestApp) -> None:
    store = jplane.plane.store
    assert store is not None
    run_id = await seed_run(store, outputs={0: {0: "a", 1: "b", 2: "c"}})
    async with store.begin() as conn:
        await conn.execute(update(items).where(items.c.run_id == run_id, items.c.idx == 0).values(request_id="g0"))
        await conn.execute(insert(judgments), [_judgment(run_id, i, f"j{i}") for i in range(3)])
        await conn.execute(insert(usage_records), [_record("j2", None)])  # unpriced: known, never waited for

    reading = asyncio.create_task(read_costs(store, run_id, (GENERATION, JUDGE), wait_s=60, poll_s=0.01))
    try:
        async with store.begin() as conn:  # the usage writer catches up on two of the calls
            await conn.execute(insert(usage_records), [_record("g0", "0.036"), _record("j0", "0.01")])
        assert (await until(lambda: _priced(store, run_id, "j0"), within_s=10)) == Decimal("0.01")
        assert not reading.done()  # j1 has no record yet: still polling
        assert (await _judge_costs(store, run_id))["j1"] is None
        async with store.begin() as conn:
            await conn.execute(insert(usage_records), [_record("j1", "0.02")])
        assert await asyncio.wait_for(reading, 10) == 0
    finally:
        reading.cancel()
    assert await _judge_costs(store, run_id) == {"j0": Decimal("0.01"), "j1": Decimal("0.02"), "j2": None}
    async with store.read() as conn:
        costs = await run_costs(conn, run_id, None)
    assert (costs.generation_usd, costs.perplexity_usd, costs.judge_usd, costs.total_usd) == (
        Decimal("0.036"), None, Decimal("0.03"), Decimal("0.066"))

    # A call with no record at all: the wait ends at its deadline, and says how many are missing.
    async with store.begin() as conn:
        await conn.execute(insert(judgments), [_judgment(run_id, 9, "late")])
    assert await read_costs(store, run_id, (JUDGE,), wait_s=0) == 1


async def _priced(store: Store, run_id: str, request_id: str) -> Decimal | None:
    return (await _judge_costs(store, run_id)).get(request_id)


async def test_dropped_judgments_keep_what_they_cost_in_the_run(jplane: AdminTestApp) -> None:
    store = jplane.plane.store
    assert store is not None
    run_id = await seed_run(store, outputs={0: {0: "a", 1: "b"}})
    async with store.begin() as conn:
        await conn.execute(insert(judgments), [_judgment(run_id, 0, "k0"), _judgment(run_id, 1, "k1")])
        await conn.execute(insert(usage_records), [_record("k0", "0.25"), _record("k1", "0.5")])
    await read_costs(store, run_id, (JUDGE,), wait_s=0)
    async with store.begin() as conn:
        # k1's row lost its read-back cost (as if dropped before it was read): the usage record's counts
        await conn.execute(update(judgments).where(judgments.c.request_id == "k1").values(cost_usd=None))
        await drop_judgments(conn, run_id, judgments.c.idx == 1)
    async with store.read() as conn:
        assert (await conn.execute(select(runs.c.replaced_judge_cost_usd).where(runs.c.id == run_id))
                ).scalar_one() == Decimal("0.5")
    async with store.begin() as conn:
        await drop_judgments(conn, run_id)
    assert await _judge_costs(store, run_id) == {}
    async with store.read() as conn:
        replaced = (await conn.execute(select(runs.c.replaced_judge_cost_usd).where(runs.c.id == run_id))
                    ).scalar_one()
        costs = await run_costs(conn, run_id, replaced)
    assert replaced == Decimal("0.75")
    assert costs.judge_usd == costs.total_usd == Decimal("0.75") and costs.generation_usd is None
