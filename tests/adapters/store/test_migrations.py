"""Migration runner on both databases: empty, with data, failures, newer schema, races."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, inspect, select, text, update

from adapters.store import (
    Migration,
    MigrationPlanError,
    SchemaOutdated,
    SchemaTooNew,
    SqlStore,
    check_schema,
    create_tables,
    ddl,
    ensure_schema,
    migrate,
    open_store,
    schema_versions,
)

# Frozen v1 definition, as a migration module would keep it.
_items_v1 = Table(
    "items", MetaData(),
    Column("id", Integer, primary_key=True),
    Column("name", String(50), nullable=False),
)
items_live = Table(  # what queries use after v2
    "items", MetaData(),
    Column("id", Integer, primary_key=True),
    Column("name", String(50), nullable=False),
    Column("slug", String(60), nullable=False),
)


async def _backfill_slug(conn) -> None:  # type: ignore[no-untyped-def]
    await conn.execute(text("ALTER TABLE items ADD COLUMN slug VARCHAR(60) NOT NULL DEFAULT ''"))
    await conn.execute(update(items_live).values(slug=items_live.c.name + "-slug"))


V1 = Migration(1, "create items", create_tables(_items_v1))
V2 = Migration(2, "items.slug, backfilled", _backfill_slug)


async def _tables(store: SqlStore) -> set[str]:
    async with store.read() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def test_forward_on_empty_database_then_idempotent(store: SqlStore) -> None:
    plan = {"demo": [V1, V2], "other": [Migration(1, "t", ddl("CREATE TABLE other_t (id INTEGER PRIMARY KEY)"))]}
    assert await check_schema(store, plan) == [("demo", 1), ("demo", 2), ("other", 1)]
    applied = await migrate(store, plan)
    assert [(a.module, a.version) for a in applied] == [("demo", 1), ("demo", 2), ("other", 1)]
    assert {"items", "other_t", "schema_migrations"} <= await _tables(store)
    assert await migrate(store, plan) == []
    assert await check_schema(store, plan) == []
    async with store.read() as conn:
        assert await schema_versions(conn) == {"demo": 2, "other": 1}


async def test_forward_on_database_with_data_keeps_and_backfills_rows(store: SqlStore) -> None:
    await migrate(store, {"demo": [V1]})
    async with store.begin() as conn:
        await conn.execute(insert(_items_v1), [{"id": i, "name": f"n{i}"} for i in range(1, 4)])
    applied = await migrate(store, {"demo": [V1, V2]})
    assert [a.version for a in applied] == [2]
    async with store.read() as conn:
        rows = (await conn.execute(select(items_live).order_by(items_live.c.id))).all()
    assert [(r.id, r.name, r.slug) for r in rows] == [(1, "n1", "n1-slug"), (2, "n2", "n2-slug"), (3, "n3", "n3-slug")]


async def test_failing_migration_leaves_schema_and_versions_untouched(store: SqlStore) -> None:
    async def broken(conn) -> None:  # type: ignore[no-untyped-def]
        await conn.execute(text("CREATE TABLE half_done (id INTEGER PRIMARY KEY)"))
        raise RuntimeError("bug in migration")

    with pytest.raises(RuntimeError):
        await migrate(store, {"demo": [V1, Migration(2, "broken", broken)]})
    assert not {"items", "half_done"} & await _tables(store)
    async with store.read() as conn:
        assert await schema_versions(conn) == {}


async def test_newer_schema_is_refused(store: SqlStore) -> None:
    await migrate(store, {"demo": [V1, V2]})
    with pytest.raises(SchemaTooNew) as info:
        await ensure_schema(store, {"demo": [V1]}, auto_migrate=True)
    assert (info.value.module, info.value.db_version, info.value.code_version) == ("demo", 2, 1)
    with pytest.raises(SchemaTooNew):
        await migrate(store, {"demo": [V1]})


async def test_pending_without_auto_migrate_is_refused(store: SqlStore) -> None:
    await migrate(store, {"demo": [V1]})
    with pytest.raises(SchemaOutdated, match="llmops migrate") as info:
        await ensure_schema(store, {"demo": [V1, V2]}, auto_migrate=False)
    assert info.value.pending == [("demo", 2)]
    assert [a.version for a in await ensure_schema(store, {"demo": [V1, V2]}, auto_migrate=True)] == [2]


async def test_modules_absent_from_the_plan_are_ignored(store: SqlStore) -> None:
    await migrate(store, {"demo": [V1]})
    assert await check_schema(store, {}) == []


@pytest.mark.parametrize(
    "plan",
    [
        {"demo": [V2]},
        {"demo": [V1, V1]},
        {"Bad-Name": [V1]},
        {"demo": [Migration(1, "", create_tables(_items_v1))]},
    ],
)
def test_malformed_plans_fail_before_touching_the_database(plan: dict) -> None:  # type: ignore[type-arg]
    from adapters.store import migrations

    with pytest.raises(MigrationPlanError):
        migrations.validate_plan(plan)


async def test_two_processes_migrating_at_once_apply_each_version_once(database_url: str) -> None:
    a, b = open_store(database_url, feed_mode="local"), open_store(database_url, feed_mode="local")
    try:
        results = await asyncio.gather(migrate(a, {"demo": [V1, V2]}), migrate(b, {"demo": [V1, V2]}))
        assert sorted(len(r) for r in results) == [0, 2]
        async with a.read() as conn:
            assert await schema_versions(conn) == {"demo": 2}
    finally:
        await a.aclose()
        await b.aclose()


async def test_schema_drift_spots_columns_added_without_a_migration(store: SqlStore) -> None:
    from adapters.store import schema_drift

    await migrate(store, {"demo": [V1, V2]})
    assert await schema_drift(store, items_live) == []
    drifted = Table("items", MetaData(), Column("id", Integer, primary_key=True),
                    Column("name", String(50), nullable=True), Column("colour", String(10)))
    problems = await schema_drift(store, drifted, Table("nope", MetaData(), Column("id", Integer)))
    assert sorted(problems) == ["items.colour missing", "items.name: nullable is False in the database",
                                "items.slug not in the code's definition", "table nope missing"]
