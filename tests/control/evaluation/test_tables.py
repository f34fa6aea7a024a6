from __future__ import annotations

from decimal import Decimal

from sqlalchemy import MetaData, insert, select

from adapters.store import open_store, schema_drift, utcnow
from adapters.store.migrations import migrate
from control.evaluation.costs import run_costs
from control.evaluation.tables import (
    EVALUATION_MIGRATIONS,
    _tables,
    assignments,
    events,
    gates,
    items,
    judgments,
    reviews,
    run_models,
    runs,
)


async def test_live_tables_match_what_migrations_build(database_url: str) -> None:
    store = open_store(database_url, feed_mode="local")
    try:
        await migrate(store, {"evaluation": EVALUATION_MIGRATIONS})
        assert await schema_drift(store, runs, run_models, items, judgments, assignments, reviews, gates,
                                  events) == []
    finally:
        await store.aclose()


async def test_a_database_of_the_previous_version_upgrades_and_keeps_its_rows(database_url: str) -> None:
    store = open_store(database_url, feed_mode="local")
    v1_runs, _, v1_items, v1_judgments, *_ = _tables(MetaData(), version=1)
    now = utcnow()
    try:
        await migrate(store, {"evaluation": EVALUATION_MIGRATIONS[:1]})  # as the previous release left it
        async with store.begin() as conn:
            await conn.execute(insert(v1_runs).values(
                id="run_old", name="old", type="llm_judge", status="succeeded", targets=[], model_ids=[],
                dataset_id="ds", dataset_version=1, dataset_name="ds", mapping={"input": "q"}, metrics=[], params={},
                concurrency=1, done=1, failed=0, total=1, cost_usd=Decimal("0.036"), created_at=now, created_by="t",
                updated_at=now))
            await conn.execute(insert(v1_items).values(
                run_id="run_old", target=0, idx=0, output="a", cost_usd=Decimal("0.036"), request_id="run_old.0.0.x",
                scores={"perplexity": 2.0}, created_at=now))
            await conn.execute(insert(v1_judgments).values(
                run_id="run_old", idx=0, kind="pointwise", target=0, order=0, judge_route="r", raw="{}",
                parsed=False, request_id="run_old.judge.y", created_at=now))
        await migrate(store, {"evaluation": EVALUATION_MIGRATIONS})
        assert await schema_drift(store, runs, run_models, items, judgments, assignments, reviews, gates,
                                  events) == []
        async with store.read() as conn:
            run = (await conn.execute(select(runs))).one()
            item = (await conn.execute(select(items))).one()
            judgment = (await conn.execute(select(judgments))).one()
            costs = await run_costs(conn, "run_old", run.replaced_judge_cost_usd)
        assert (run.id, run.cost_usd, run.replaced_judge_cost_usd) == ("run_old", Decimal("0.036"), None)
        assert (item.output, item.cost_usd, item.request_id, item.scores) == (
            "a", Decimal("0.036"), "run_old.0.0.x", {"perplexity": 2.0})
        assert (item.perplexity_request_id, item.perplexity_cost_usd) == (None, None)  # never recorded then
        assert (judgment.request_id, judgment.cost_usd) == ("run_old.judge.y", None)
        assert (costs.generation_usd, costs.perplexity_usd, costs.judge_usd, costs.total_usd) == (
            Decimal("0.036"), None, None, Decimal("0.036"))
    finally:
        await store.aclose()
