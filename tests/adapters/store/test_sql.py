"""SqlStore against both databases: transactions, error translation, portable types, outages."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, func, insert, select, text
from sqlalchemy import exc as sa_exc

from adapters.store import (
    ConstraintViolation,
    DuplicateKey,
    Json,
    SqlStore,
    StoreUnavailable,
    UtcDateTime,
    new_id,
    open_store,
)
from tests.servers import free_port, start_postgres

meta = MetaData()
parents = Table(
    "parents", meta,
    Column("id", String(40), primary_key=True),
    Column("name", String(50), nullable=False, unique=True),
    Column("at", UtcDateTime),
    Column("doc", Json),
)
children = Table(
    "children", meta,
    Column("id", Integer, primary_key=True),
    Column("parent_id", String(40), ForeignKey("parents.id"), nullable=False),
)


async def _create(store: SqlStore) -> None:
    async with store.begin() as conn:
        await conn.run_sync(meta.create_all)


async def _names(store: SqlStore) -> list[str]:
    async with store.read() as conn:
        return list((await conn.execute(select(parents.c.name).order_by(parents.c.name))).scalars())


async def test_begin_commits_and_rolls_back_on_error(store: SqlStore) -> None:
    await _create(store)
    async with store.begin() as conn:
        await conn.execute(insert(parents).values(id="p1", name="kept"))
    with pytest.raises(RuntimeError, match="boom"):
        async with store.begin() as conn:
            await conn.execute(insert(parents).values(id="p2", name="lost"))
            raise RuntimeError("boom")
    assert await _names(store) == ["kept"]


async def test_ddl_is_transactional_on_both_backends(store: SqlStore) -> None:
    # SQLite's Python driver autocommits DDL unless the store takes over BEGIN: a failed
    # migration must not leave a half-created schema behind.
    with pytest.raises(RuntimeError):
        async with store.begin() as conn:
            await conn.run_sync(meta.create_all)
            raise RuntimeError("migration failed halfway")
    async with store.read() as conn:
        tables = await conn.run_sync(lambda c: __import__("sqlalchemy").inspect(c).get_table_names())
    assert "parents" not in tables


async def test_unique_violation_is_duplicate_key_and_fk_violation_is_constraint(store: SqlStore) -> None:
    await _create(store)
    async with store.begin() as conn:
        await conn.execute(insert(parents).values(id="p1", name="a"))
    with pytest.raises(DuplicateKey):
        async with store.begin() as conn:
            await conn.execute(insert(parents).values(id="p2", name="a"))
    with pytest.raises(ConstraintViolation):
        async with store.begin() as conn:
            await conn.execute(insert(children).values(id=1, parent_id="missing"))
    assert await _names(store) == ["a"]


async def test_callers_own_errors_pass_through_untranslated(store: SqlStore) -> None:
    await _create(store)
    with pytest.raises(FileNotFoundError):  # an OSError from the caller is not a database outage
        async with store.begin() as conn:
            await conn.execute(insert(parents).values(id="p1", name="a"))
            raise FileNotFoundError("upload vanished")
    assert await _names(store) == []


async def test_utc_datetime_and_json_round_trip(store: SqlStore) -> None:
    await _create(store)
    at = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    doc = {"limits": {"rpm": 10}, "teams": ["a", "b"], "ratio": 0.5, "none": None}
    async with store.begin() as conn:
        await conn.execute(insert(parents).values(id="p1", name="a", at=at, doc=doc))
    async with store.read() as conn:
        row = (await conn.execute(select(parents))).one()
    assert row.at == at and row.at.tzinfo == UTC
    assert row.doc == doc
    async with store.read() as conn:  # time-range filters compare correctly on both backends
        later = await conn.execute(select(func.count()).where(parents.c.at > at - timedelta(seconds=1)))
        assert later.scalar_one() == 1


async def test_naive_datetime_is_refused(store: SqlStore) -> None:
    await _create(store)
    with pytest.raises(Exception, match="timezone-aware"):
        async with store.begin() as conn:
            await conn.execute(insert(parents).values(id="p1", name="a", at=datetime(2024, 1, 1)))


async def test_read_connection_never_persists_writes(store: SqlStore) -> None:
    await _create(store)
    async with store.read() as conn:
        await conn.execute(insert(parents).values(id="p1", name="a"))
    assert await _names(store) == []


async def test_concurrent_writers_do_not_hit_locked_database(store: SqlStore) -> None:
    await _create(store)

    async def write(i: int) -> None:
        async with store.begin() as conn:
            count = (await conn.execute(select(func.count()).select_from(parents))).scalar_one()
            await asyncio.sleep(0)  # yield mid-transaction so writers interleave
            await conn.execute(insert(parents).values(id=new_id("p"), name=f"n{i}-{count}"))

    await asyncio.gather(*(write(i) for i in range(25)))
    assert len(await _names(store)) == 25


async def test_ping_and_url_is_redacted(store: SqlStore) -> None:
    await store.ping()
    assert "secret" not in open_store("postgresql://u:secret@127.0.0.1:1/db").url


async def test_unreachable_postgres_is_store_unavailable() -> None:
    store = open_store(f"postgresql://postgres@127.0.0.1:{free_port()}/nope", connect_timeout_s=1)
    try:
        with pytest.raises(StoreUnavailable):
            await store.ping()
        with pytest.raises(StoreUnavailable):
            async with store.begin() as conn:
                await conn.execute(text("SELECT 1"))
    finally:
        await store.aclose()


async def test_postgres_going_away_and_coming_back() -> None:
    with start_postgres() as server:
        store = open_store(server.url(), connect_timeout_s=2)
        try:
            await store.ping()
            server.stop(mode="immediate")
            with pytest.raises(StoreUnavailable):
                await store.ping()
            with pytest.raises(StoreUnavailable):
                async with store.begin() as conn:
                    await conn.execute(text("SELECT 1"))
            server.start()
            await store.ping()  # pool_pre_ping replaces the dead pooled connections
        finally:
            await store.aclose()


async def test_sqlite_default_lives_in_the_data_dir(tmp_path: object) -> None:
    from pathlib import Path

    data_dir = Path(str(tmp_path)) / "nested" / ".llmops"
    store = open_store(None, data_dir=str(data_dir))
    try:
        await store.ping()
        assert (data_dir / "llmops.db").exists()
        assert store.dialect == "sqlite"
    finally:
        await store.aclose()


async def test_values_the_database_refuses_are_invalid_value(store: SqlStore) -> None:
    from adapters.store import InvalidValue

    await _create(store)
    if store.dialect == "sqlite":
        pytest.skip("SQLite stores NUL characters; only PostgreSQL refuses them")
    with pytest.raises(InvalidValue):
        async with store.begin() as conn:
            await conn.execute(insert(parents).values(id="p1", name="a\x00b"))


@pytest.mark.parametrize("write", [False, True])
async def test_a_cancel_the_driver_reports_as_an_error_stays_a_cancel(store: SqlStore, write: bool) -> None:
    # What asyncpg and SQLAlchemy do when a cancel lands mid-query: the coroutine sees their own error. A loop that
    # logs and carries on after `except Exception` (every background worker's shape) must still end when cancelled.
    inside = asyncio.Event()
    passes = 0

    async def worker() -> None:
        nonlocal passes
        while True:
            passes += 1
            try:
                async with store.begin() if write else store.read() as conn:
                    await conn.execute(text("SELECT 1"))
                    inside.set()
                    try:
                        await asyncio.sleep(30)
                    except asyncio.CancelledError:
                        raise sa_exc.PendingRollbackError("the driver's own error", None, None) from None
            except Exception:
                continue  # "the database is down: look again later"

    task = asyncio.create_task(worker())
    await asyncio.wait_for(inside.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert passes == 1
