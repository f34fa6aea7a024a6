from __future__ import annotations

from adapters.adminapi.host import load_control_plane
from adapters.adminapi.settings import ControlCfg
from adapters.adminapi.tables import api_keys, audit_log
from adapters.store import migrate, open_store, schema_drift


async def test_live_tables_match_what_migrations_build(database_url: str) -> None:
    store = open_store(database_url, feed_mode="local")
    try:
        await migrate(store, load_control_plane(ControlCfg(), modules=[], environ={}).migration_plan())
        assert await schema_drift(store, api_keys, audit_log) == []
    finally:
        await store.aclose()
