"""adapters/dataplane.py: the data-plane tables, migrated by the host on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, insert, select, text, type_coerce

from adapters.adminapi.host import ModuleLoadError, load_control_plane
from adapters.adminapi.settings import ControlCfg
from adapters.dataplane import DATAPLANE_MIGRATIONS, gateway_keys, teams, usage_records, usage_rollups
from adapters.store import DuplicateKey, migrate, open_store, schema_drift, utcnow
from adapters.store.types import UsdAmount


def _usage(request_id: str, **extra: object) -> dict[str, object]:
    return {"record_id": "r-" + request_id, "request_id": request_id, "ts": utcnow(), "endpoint": "chat",
            "route": "chat", "model": "gpt-4o-mini", "provider": "openai", "status": 200, "latency_s": 0.25,
            "usage_source": "upstream", **extra}


def test_the_host_runs_dataplane_migrations_with_the_core_ones() -> None:
    plane = load_control_plane(ControlCfg(), modules=[], environ={})
    assert list(plane.migration_plan())[:3] == ["store", "admin", "dataplane"]
    assert plane.migration_plan()["dataplane"] is DATAPLANE_MIGRATIONS


def test_no_module_may_take_the_dataplane_name() -> None:
    class Impostor:
        name = "dataplane"
        routes = migrations = lifespan = staticmethod(lambda *a: ())

    with pytest.raises(ModuleLoadError, match="'dataplane'"):
        load_control_plane(ControlCfg(), modules=[Impostor()], environ={})  # type: ignore[list-item]


async def test_tables_migrate_and_round_trip(database_url: str) -> None:
    store = open_store(database_url, feed_mode="local")
    try:
        await migrate(store, load_control_plane(ControlCfg(), modules=[], environ={}).migration_plan())
        assert await schema_drift(store, teams, gateway_keys, usage_records, usage_rollups) == []
        now = utcnow()
        async with store.begin() as conn:
            await conn.execute(insert(teams).values(id="team_1", name="search", budget_usd=Decimal("500.00"),
                                                    budget_period="monthly", created_at=now, updated_at=now))
            await conn.execute(insert(gateway_keys).values(
                id="gk_1", team_id="team_1", name="ci", secret_sha256="a" * 64, roles=["user"],
                allowed_routes=["chat"], limits={"requestsPerMinute": 60}, created_at=now, created_by="admin",
                expires_at=now + timedelta(days=30)))
            await conn.execute(insert(usage_records).values(_usage(
                "req-1", key_id="gk_1", team="search", prompt_tokens=1200, completion_tokens=300,
                cached_read_tokens=1000, reasoning_tokens=50, cost_usd=Decimal("0.000123456789"), ttft_s=0.1)))
            await conn.execute(insert(usage_records).values(_usage("req-2", cost_usd=Decimal("0.1"),
                                                                   usage_source="estimated", estimated=True)))
            await conn.execute(insert(usage_records).values(_usage("req-3", status=502)))  # no price: null cost
        async with store.begin() as conn:
            row = (await conn.execute(select(usage_records).where(usage_records.c.request_id == "req-1"))).one()
            assert row.cost_usd == Decimal("0.000123457")  # nano-dollars, rounded half-even
            assert (row.cache_write_tokens, row.estimated, row.stream, row.attempts) == (0, False, False, 1)
            total = (await conn.execute(select(type_coerce(func.sum(usage_records.c.cost_usd), UsdAmount)))).scalar()
            assert total == Decimal("0.100123457")  # exact on SQLite too
            key = (await conn.execute(select(gateway_keys))).one()
            assert (key.roles, key.allowed_routes, key.revoked_at) == (["user"], ["chat"], None)
            budget = select(teams.c.budget_usd).where(teams.c.id == "team_1")  # migration 3 added a default team
            assert (await conn.execute(budget)).scalar() == Decimal("500")
        with pytest.raises(DuplicateKey):
            async with store.begin() as conn:  # a retried batch must not count a request twice
                await conn.execute(insert(usage_records).values(_usage("req-1")))
        async with store.begin() as conn:  # clients may reuse an x-request-id: a new record, not a duplicate
            await conn.execute(insert(usage_records).values(_usage("req-1", record_id="r-other")))
        with pytest.raises(DuplicateKey):
            async with store.begin() as conn:  # one secret, one key
                await conn.execute(insert(gateway_keys).values(
                    id="gk_2", team_id="team_1", name="dup", secret_sha256="a" * 64, roles=[], created_at=now,
                    created_by="admin"))
    finally:
        await store.aclose()


def test_usd_amount_refuses_floats() -> None:
    with pytest.raises(TypeError, match="not float"):
        UsdAmount().process_bind_param(0.1, None)  # type: ignore[arg-type]
    assert UsdAmount().process_bind_param(Decimal("1.5"), None) == 1_500_000_000  # type: ignore[arg-type]


async def test_v2_refuses_to_drop_a_v1_usage_table_that_holds_rows(database_url: str) -> None:
    store = open_store(database_url, feed_mode="local")
    try:
        plan = dict(load_control_plane(ControlCfg(), modules=[], environ={}).migration_plan())
        v1_only = {**plan, "dataplane": DATAPLANE_MIGRATIONS[:1]}
        await migrate(store, v1_only)
        async with store.begin() as conn:
            await conn.execute(text(
                "INSERT INTO usage_records (request_id, ts, route, model, provider, status, latency_s, usage_source)"
                " VALUES ('old', CURRENT_TIMESTAMP, 'r', 'm', 'p', 200, 0.1, 'upstream')"))
        with pytest.raises(Exception, match="holds rows"):
            await migrate(store, plan)
        async with store.begin() as conn:  # nothing lost
            assert (await conn.execute(text("SELECT count(*) FROM usage_records"))).scalar() == 1
    finally:
        await store.aclose()
