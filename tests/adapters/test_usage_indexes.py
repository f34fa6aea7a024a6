"""Dataplane migration 6: usage_records keeps only the indexes something reads (the gateway pays each one
on every stored record, inside its own process on the embedded SQLite default)."""

from __future__ import annotations

from sqlalchemy import inspect

from adapters.adminapi.host import load_control_plane
from adapters.adminapi.settings import ControlCfg
from adapters.dataplane import DATAPLANE_MIGRATIONS, usage_records
from adapters.store import migrate, open_store, schema_drift


async def _indexes(store: object) -> set[str]:
    async with store.read() as conn:  # type: ignore[attr-defined]
        return {i["name"] for i in await conn.run_sync(lambda c: inspect(c).get_indexes("usage_records"))}


async def test_migration_6_drops_the_team_and_key_indexes(database_url: str) -> None:
    plan = load_control_plane(ControlCfg(), modules=[], environ={}).migration_plan()
    store = open_store(database_url, feed_mode="local")
    try:
        await migrate(store, {**plan, "dataplane": DATAPLANE_MIGRATIONS[:5]})  # a database from before it
        before = await _indexes(store)
        assert {"ix_usage_records_team_ts", "ix_usage_records_key_ts"} <= before
        await migrate(store, plan)
        after = await _indexes(store)
        assert after == before - {"ix_usage_records_team_ts", "ix_usage_records_key_ts"}
        assert {"ix_usage_records_ts", "ix_usage_records_request_id"} <= after  # what reports and feedback read
        assert {i.name for i in usage_records.indexes} <= after  # the live definition agrees (PostgreSQL also
        # lists the index behind the unique record_id)
        assert await schema_drift(store, usage_records) == []
    finally:
        await store.aclose()
