"""One deadline per unit of work: a hung database answers StoreUnavailable in time, not after a minute."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from adapters.store import StoreUnavailable, open_store
from tests.adapters.store._outage import frozen
from tests.servers import start_postgres

DEADLINE_S = 1.0
MARGIN_S = 3.0  # generous: the point is "about the deadline", not "the 60 s command timeout"


async def _timed(coro: object) -> float:
    start = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await coro  # type: ignore[misc]
    return time.monotonic() - start


async def _write(store: object) -> None:
    async with store.begin() as conn:  # type: ignore[attr-defined]
        await conn.execute(text("INSERT INTO t VALUES (1)"))


async def _read(store: object) -> None:
    async with store.read() as conn:  # type: ignore[attr-defined]
        await conn.execute(text("SELECT count(*) FROM t"))


async def test_frozen_postgres_fails_every_unit_within_the_deadline() -> None:
    with start_postgres() as server:
        store = open_store(server.url(), feed_mode="local", timeout_s=DEADLINE_S)
        try:
            async with store.begin() as conn:
                await conn.execute(text("CREATE TABLE t (x int)"))
            await _read(store)  # warm pool: the hung-host case, where connecting is not what blocks
            with frozen(server):
                for unit in (_write(store), _read(store), store.ping()):
                    assert await _timed(unit) < DEADLINE_S + MARGIN_S
            # The timed-out connections were dropped, not returned half-used: the store recovers at once.
            async with asyncio.timeout(10):
                await _write(store)
                await _read(store)
        finally:
            await store.aclose()


async def test_frozen_postgres_mid_transaction_rolls_back_server_side() -> None:
    with start_postgres() as server:
        store = open_store(server.url(), feed_mode="local", timeout_s=DEADLINE_S)
        try:
            async with store.begin() as conn:
                await conn.execute(text("CREATE TABLE t (x int)"))

            async def half_done() -> None:
                async with store.begin() as conn:
                    await conn.execute(text("INSERT INTO t VALUES (1)"))
                    with frozen(server):
                        await conn.execute(text("INSERT INTO t VALUES (2)"))

            assert await _timed(half_done()) < DEADLINE_S + MARGIN_S
            async with asyncio.timeout(10), store.read() as conn:
                assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one() == 0
        finally:
            await store.aclose()


async def test_sqlite_writer_waits_for_a_locked_file_only_until_the_deadline(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    store = open_store(f"sqlite:///{path}", feed_mode="local", timeout_s=DEADLINE_S)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        async with store.begin() as conn:
            await conn.execute(text("CREATE TABLE t (x int)"))
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        assert await _timed(_write(store)) < DEADLINE_S + MARGIN_S
        other.execute("ROLLBACK")
        await _write(store)
    finally:
        other.close()
        await store.aclose()


async def test_the_deadline_covers_the_whole_unit_and_can_be_lifted(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}", feed_mode="local", timeout_s=0.2)
    try:
        with pytest.raises(StoreUnavailable, match=r"did not answer within 0\.2s"):
            async with store.begin() as conn:
                await conn.execute(text("CREATE TABLE t (x int)"))
                await asyncio.sleep(1)
        async with store.read() as conn:  # rolled back
            assert (await conn.execute(text("SELECT count(*) FROM sqlite_master"))).scalar_one() == 0
        async with store.begin(timeout_s=math.inf) as conn:  # what migrations use
            await conn.execute(text("CREATE TABLE t (x int)"))
            await asyncio.sleep(0.4)
        async with store.read() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one() == 0
    finally:
        await store.aclose()


async def test_callers_own_timeout_is_not_a_store_outage(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}", feed_mode="local", timeout_s=5)
    try:
        with pytest.raises(TimeoutError):
            async with store.read(), asyncio.timeout(0.05):
                await asyncio.sleep(1)
    finally:
        await store.aclose()
