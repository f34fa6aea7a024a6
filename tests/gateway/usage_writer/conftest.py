"""Helpers for the usage writer's tests: records, a migrated store, polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from adapters.adminapi.host import load_control_plane
from adapters.adminapi.settings import ControlCfg
from adapters.dataplane import usage_records, usage_rollups
from adapters.store import SqlStore, migrate, open_store
from adapters.usage import Principal, UsageRecord


def record(i: int, **kw: Any) -> UsageRecord:
    base: dict[str, Any] = {"request_id": f"req-{i}", "route": "chat", "provider": "p", "model": "m", "stream": False,
                            "status": 200, "latency_s": 0.25, "prompt_tokens": 10, "completion_tokens": 3,
                            "principal": Principal("k1", "team-a"), "cost_usd": Decimal("0.001"),
                            "price_source": "config"}
    return UsageRecord(**{**base, **kw})


async def open_migrated(url: str, **kw: Any) -> SqlStore:
    store = open_store(url, feed_mode="local", **kw)
    await migrate(store, load_control_plane(ControlCfg(), modules=[], environ={}).migration_plan())
    return store


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    s = await open_migrated(database_url)
    try:
        yield s
    finally:
        await s.aclose()


async def stored(store: SqlStore) -> dict[str, int]:
    """request_id -> how many rows carry it."""
    async with store.read() as conn:
        rows = (await conn.execute(select(usage_records.c.request_id, func.count())
                                   .group_by(usage_records.c.request_id))).all()
    return {rid: n for rid, n in rows}


async def rollup_requests(store: SqlStore) -> int:
    async with store.read() as conn:
        return int((await conn.execute(select(func.coalesce(func.sum(usage_rollups.c.requests), 0)))).scalar_one())


async def until(check: Callable[[], Any], within_s: float, what: str) -> None:
    """Poll `check` (sync or async) until truthy."""
    deadline = time.monotonic() + within_s
    while True:
        got = check()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
