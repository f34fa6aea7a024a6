"""rebuild_rollups: the hourly rollups recomputed from usage_records, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert, select

from adapters.adminapi.testing import AdminTestApp
from adapters.dataplane import ROLLUP_DIMENSIONS, usage_records, usage_rollups
from adapters.store import DuplicateKey, Store
from control.observability import ObservabilitySettings, UsageQuery, query_usage, rebuild_rollups
from tests.control.observability._data import insert_rollups, rollup

H2 = datetime(2026, 12, 1, 0, tzinfo=UTC)
H3 = datetime(2026, 12, 1, 1, tzinfo=UTC)
OPENAI = {"team": "a", "key_id": "k1", "route": "chat", "model": "gpt-4o", "provider": "openai", "endpoint": "chat"}
VLLM = {"route": "local", "model": "llama", "provider": "vllm", "endpoint": "chat"}


def record(n: int, ts: datetime, **extra: Any) -> dict[str, Any]:
    """A whole usage_records row (one executemany needs the same keys in every row)."""
    return {"record_id": f"rec-{n}", "request_id": f"req-{n}", "ts": ts, "status": 200, "latency_s": 0.5,
            "usage_source": "upstream", "team": None, "key_id": None, "variant": None, "prompt_tokens": 0,
            "completion_tokens": 0, "cached_read_tokens": 0, "cache_write_tokens": 0, "reasoning_tokens": 0,
            "cost_usd": None, "price_source": None, "error": None, "estimated": False, **extra}


RECORDS = [
    record(1, H2 + timedelta(minutes=1), **OPENAI, prompt_tokens=100, completion_tokens=20, cached_read_tokens=50,
           cache_write_tokens=10, reasoning_tokens=5, cost_usd=Decimal("0.0001"), price_source="config"),
    record(2, H2 + timedelta(minutes=2), **OPENAI, status=500, latency_s=0.25, error="upstream_error"),  # unpriced
    record(3, H2 + timedelta(minutes=59, seconds=59.9), **OPENAI, prompt_tokens=10, completion_tokens=10,
           cost_usd=Decimal("0.00001"), price_source="litellm", usage_source="estimated", estimated=True),
    record(4, H2 + timedelta(minutes=3), **VLLM, prompt_tokens=30, completion_tokens=70, price_source="gpu_hour"),
    record(5, H3, **OPENAI, prompt_tokens=1, cost_usd=Decimal("0.000000001"), price_source="config"),
    record(6, H2 - timedelta(microseconds=1), **OPENAI, prompt_tokens=1000),  # before the window
    record(7, H3 + timedelta(hours=1), **OPENAI, prompt_tokens=1000),  # at its (exclusive) end
]


async def rollups(store: Store) -> list[dict[str, Any]]:
    async with store.read() as conn:
        result = await conn.execute(select(usage_rollups).order_by(usage_rollups.c.hour, usage_rollups.c.provider))
        return [{k: v for k, v in row._mapping.items() if k != "id"} for row in result]


@pytest.fixture
async def store(obs: AdminTestApp) -> Store:
    assert obs.plane.store is not None
    async with obs.plane.store.begin() as conn:
        await conn.execute(insert(usage_records), RECORDS)
    return obs.plane.store


async def test_rebuild_replaces_the_window_with_sums_of_the_records(store: Store) -> None:
    stale = rollup({"hour": H2, **OPENAI, "requests": 99, "cost_usd": Decimal(7)})
    gpu = rollup({"hour": H2, **VLLM, "requests": 5, "gpu_usd_per_hour": Decimal("3.00")})  # price is kept
    earlier = rollup({"hour": H2 - timedelta(hours=1), **OPENAI, "requests": 42})  # outside: untouched
    await insert_rollups(store, [stale, gpu, earlier])

    # the window widens to whole hours: 00:30 -> 00:00, 01:30 -> 02:00 (exclusive)
    written = await rebuild_rollups(store, H2 + timedelta(minutes=30), H3 + timedelta(minutes=30))

    assert written == 3
    got = await rollups(store)
    assert got[0] == earlier
    assert got[1] == rollup({
        "hour": H2, **OPENAI, "requests": 3, "errors": 1, "unpriced_requests": 1, "estimated_requests": 1,
        "prompt_tokens": 110, "completion_tokens": 30, "cached_read_tokens": 50, "cache_write_tokens": 10,
        "reasoning_tokens": 5, "cost_usd": Decimal("0.00011"), "latency_s_sum": 1.25})
    # a GPU-hour-priced record is not "unpriced", and its provider keeps the hourly price it had
    assert got[2] == rollup({"hour": H2, **VLLM, "requests": 1, "prompt_tokens": 30, "completion_tokens": 70,
                             "gpu_usd_per_hour": Decimal("3.00"), "latency_s_sum": 0.5})
    assert got[3] == rollup({"hour": H3, **OPENAI, "requests": 1, "prompt_tokens": 1,
                             "cost_usd": Decimal("0.000000001"), "latency_s_sum": 0.5})
    assert len(got) == 4

    # the rebuilt hour is stored exactly as the writer stores it: the unique key still catches a duplicate
    with pytest.raises(DuplicateKey):
        await insert_rollups(store, [{"hour": H2, **OPENAI}])


async def test_prices_given_for_gpu_providers_win_and_reports_read_the_rebuild(store: Store) -> None:
    await rebuild_rollups(store, H2, H3 + timedelta(hours=1), gpu_usd_per_hour={"vllm": Decimal("2.5")})
    got = {(r["hour"], r["provider"]): r["gpu_usd_per_hour"] for r in await rollups(store)}
    assert got == {(H2, "openai"): 0, (H2, "vllm"): Decimal("2.5"), (H3, "openai"): 0}

    report = await query_usage(store, UsageQuery(H2, H3 + timedelta(hours=1), "total", ("provider",)),
                               ObservabilitySettings(gpus={"vllm": 4}))
    by_provider = {row.dims[0]: row.metrics for row in report.rows}
    assert by_provider["vllm"].cost_nano == 2_500_000_000 and by_provider["vllm"].gpu_micro_hours == 4_000_000
    assert by_provider["openai"].cost_nano == 110_001 and by_provider["openai"].unpriced_requests == 1
    assert report.totals.requests == 5 and report.totals.cost_nano == 2_500_110_001


async def test_rebuilding_twice_or_an_hour_at_a_time_changes_nothing(store: Store) -> None:
    await rebuild_rollups(store, H2, H3 + timedelta(hours=1))
    first = await rollups(store)
    assert await rebuild_rollups(store, H2, H3 + timedelta(hours=1)) == 3
    assert await rollups(store) == first
    assert await rebuild_rollups(store, H2, H3 + timedelta(hours=1), chunk=timedelta(hours=1)) == 3
    assert await rollups(store) == first
    assert {tuple(r[d] for d in ROLLUP_DIMENSIONS) for r in first} == {
        ("a", "k1", "chat", "gpt-4o", "openai", "", "chat"), ("", "", "local", "llama", "vllm", "", "chat")}
