from __future__ import annotations

from adapters.store import open_store, schema_drift
from adapters.store.migrations import migrate
from control.governance.tables import GOVERNANCE_MIGRATIONS, policies, policy_teams, policy_versions


async def test_live_tables_match_what_migrations_build(database_url: str) -> None:
    store = open_store(database_url, feed_mode="local")
    try:
        await migrate(store, {"governance": GOVERNANCE_MIGRATIONS})
        assert await schema_drift(store, policies, policy_versions, policy_teams) == []
    finally:
        await store.aclose()
