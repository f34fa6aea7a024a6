from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select

from adapters.store import STORE_MIGRATIONS, Snapshot, SqlStore, StoreUnavailable, create_tables, migrate
from adapters.store.migrations import Migration

names = Table("names", MetaData(), Column("id", Integer, primary_key=True), Column("name", String(20)))
PLAN = {"store": STORE_MIGRATIONS, "demo": [Migration(1, "names", create_tables(names))]}


async def _add(store: SqlStore, name: str) -> None:
    async with store.begin() as conn:
        await conn.execute(insert(names).values(name=name))
        await store.changes.mark(conn, "names")


async def test_snapshot_reloads_on_change_and_keeps_old_value_when_reload_fails(store: SqlStore) -> None:
    await migrate(store, PLAN)
    fail = False

    async def load() -> tuple[str, ...]:
        if fail:
            raise StoreUnavailable("database down")
        async with store.read() as conn:
            return tuple((await conn.execute(select(names.c.name).order_by(names.c.id))).scalars())

    snap: Snapshot[tuple[str, ...]] = Snapshot(store.changes, ("names",), load)
    with pytest.raises(RuntimeError):
        _ = snap.value
    await snap.start()
    try:
        assert snap.value == ()
        await _add(store, "a")
        await snap.wait_for_generation(2)
        assert snap.value == ("a",)
        fail = True
        await _add(store, "b")
        store.changes.publish(["names"])
        with pytest.raises(TimeoutError):
            await snap.wait_for_generation(3, timeout_s=0.2)
        assert snap.value == ("a",)  # stale but consistent
        fail = False
        store.changes.publish(None)
        await snap.wait_for_generation(3)
        assert snap.value == ("a", "b")
    finally:
        await snap.aclose()


async def test_snapshot_start_fails_when_first_load_fails(store: SqlStore) -> None:
    async def load() -> int:
        raise StoreUnavailable("down")

    snap: Snapshot[int] = Snapshot(store.changes, ("t",), load)
    with pytest.raises(StoreUnavailable):
        await snap.start()
    assert not store.changes._subscriptions
