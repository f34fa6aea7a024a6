"""ChangeFeed: in-process delivery after commit, and cross-process via LISTEN/NOTIFY or polling."""

from __future__ import annotations

import asyncio

import pytest

from adapters.store import ALL_TOPICS, STORE_MIGRATIONS, SqlStore, migrate, open_store
from tests.servers import start_postgres

PLAN = {"store": STORE_MIGRATIONS}


async def test_marked_topics_are_published_after_commit_only(store: SqlStore) -> None:
    await migrate(store, PLAN)
    with store.changes.subscribe("policies") as sub:
        with pytest.raises(RuntimeError):
            async with store.begin() as conn:
                await store.changes.mark(conn, "policies")
                raise RuntimeError("rolled back")
        with pytest.raises(TimeoutError):
            await sub.wait(timeout_s=0.1)
        async with store.begin() as conn:
            await store.changes.mark(conn, "policies")
            await store.changes.mark(conn, "catalog")
        assert await sub.wait(timeout_s=1) == {"policies"}


async def test_slow_subscribers_get_one_coalesced_wakeup(store: SqlStore) -> None:
    await migrate(store, PLAN)
    with store.changes.subscribe() as everything:
        for topic in ("a", "b", "a"):
            async with store.begin() as conn:
                await store.changes.mark(conn, topic)
        assert await everything.wait(timeout_s=1) == {"a", "b"}
        with pytest.raises(TimeoutError):
            await everything.wait(timeout_s=0.05)


async def test_resync_wakes_every_subscriber_with_its_topics(store: SqlStore) -> None:
    with store.changes.subscribe("x", "y") as some, store.changes.subscribe() as every:
        store.changes.publish(None)
        assert await some.wait(timeout_s=1) == {"x", "y"}
        assert await every.wait(timeout_s=1) == {ALL_TOPICS}


async def test_closed_subscription_receives_nothing(store: SqlStore) -> None:
    sub = store.changes.subscribe("t")
    sub.close()
    store.changes.publish(["t"])
    with pytest.raises(TimeoutError):
        await sub.wait(timeout_s=0.05)


async def test_changes_in_another_process_reach_this_one(database_url: str) -> None:
    """Two stores on one database stand in for two replicas: LISTEN/NOTIFY on PostgreSQL, polling on SQLite."""
    reader = open_store(database_url, poll_interval_s=0.05)
    writer = open_store(database_url, feed_mode="local")
    try:
        await migrate(writer, PLAN)
        await reader.changes.start()
        await asyncio.wait_for(reader.changes.connected.wait(), 5)
        assert reader.changes.mode == ("listen" if reader.dialect == "postgresql" else "poll")
        with reader.changes.subscribe("governance.policies") as sub:
            async with writer.begin() as conn:
                await writer.changes.mark(conn, "governance.policies")
            assert await sub.wait(timeout_s=5) == {"governance.policies"}
    finally:
        await reader.aclose()
        await writer.aclose()


async def test_listen_reconnects_and_resyncs_after_postgres_restart() -> None:
    with start_postgres() as server:
        reader = open_store(server.url(), connect_timeout_s=2)
        writer = open_store(server.url(), feed_mode="local", connect_timeout_s=2)
        try:
            await migrate(writer, PLAN)
            await reader.changes.start()
            await asyncio.wait_for(reader.changes.connected.wait(), 5)
            with reader.changes.subscribe("t") as sub:
                server.stop()
                server.start()
                # Whatever was notified while we were disconnected is lost, so the feed says "resync".
                assert await sub.wait(timeout_s=15) == {"t"}
                assert reader.changes.connected.is_set()
                async with writer.begin() as conn:
                    await writer.changes.mark(conn, "t")
                assert await sub.wait(timeout_s=5) == {"t"}
        finally:
            await reader.aclose()
            await writer.aclose()


async def test_listen_mode_needs_postgres(tmp_path: object) -> None:
    with pytest.raises(ValueError, match="PostgreSQL"):
        open_store(f"sqlite:///{tmp_path}/x.db", feed_mode="listen")
