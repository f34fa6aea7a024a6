from __future__ import annotations

from adapters.store import open_store, schema_drift
from adapters.store.migrations import migrate
from control.evaluation.tables import (
    EVALUATION_MIGRATIONS,
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
