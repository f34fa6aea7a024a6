"""adapters/usage_store.py: exactly-once batches and rollups that equal the sums of the rows, on both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import pytest
from sqlalchemy import func, select, type_coerce

from adapters.adminapi.host import load_control_plane
from adapters.adminapi.settings import ControlCfg
from adapters.dataplane import ROLLUP_DIMENSIONS, usage_records, usage_rollups
from adapters.store import SqlStore, migrate, open_store
from adapters.store.types import UsdAmount
from adapters.usage import Principal, UsageRecord
from adapters.usage_store import UsageRow, rollup_deltas, row_from_record, write_usage

HOUR = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def row(i: int, **kw: Any) -> UsageRow:
    """A stored row; money given in dollars (``cost_usd``, ``gpu_usd_per_hour``) as records carry it."""
    base: dict[str, Any] = {"record_id": f"rec-{i}", "request_id": f"req-{i}", "ts": HOUR + 60 * i, "endpoint": "chat",
                            "route": "chat", "model": "m", "provider": "p", "status": 200, "latency_s": 0.5,
                            "usage_source": "upstream", "prompt_tokens": 10, "completion_tokens": 5}
    money = {"cost_usd": "cost_nano_usd", "gpu_usd_per_hour": "gpu_nano_usd_per_hour"}
    for dollars, nanos in money.items():
        if dollars in kw:
            kw[nanos] = int((kw.pop(dollars) * 1_000_000_000).to_integral_value(ROUND_HALF_EVEN))
    return UsageRow(**{**base, **kw})


def mixed_rows() -> list[UsageRow]:
    """Two hours, teams and keys present and absent, errors, estimates, unpriced and GPU-hour rows."""
    return [
        row(1, team="a", key_id="k1", cost_usd=Decimal("0.000123456789"), price_source="litellm"),
        row(2, team="a", key_id="k1", cost_usd=Decimal("0.1"), price_source="config", status=502,
            cached_read_tokens=3, cache_write_tokens=2, reasoning_tokens=1),
        row(3, team="a", key_id="k1", usage_source="estimated"),  # unpriced
        row(4, variant="B", usage_source="counted", price_source="gpu_hour",
            gpu_usd_per_hour=Decimal("2.5")),  # priced per hour: neither cost nor unpriced
        row(5, variant="B", price_source="gpu_hour", gpu_usd_per_hour=Decimal("4")),
        row(70, team="b", endpoint="embeddings", completion_tokens=0, cost_usd=Decimal("0.25"),
            price_source="config"),  # the next hour
    ]


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    s = open_store(database_url, feed_mode="local")
    await migrate(s, load_control_plane(ControlCfg(), modules=[], environ={}).migration_plan())
    try:
        yield s
    finally:
        await s.aclose()


def expected(rows: list[UsageRow]) -> list[dict[str, Any]]:
    """``rollup_deltas`` as the store keeps them: money in whole nano-dollars."""
    nano = Decimal("0.000000001")
    return [{**d, "cost_usd": d["cost_usd"].quantize(nano)} for d in rollup_deltas(rows)]


async def rollups(store: SqlStore) -> list[dict[str, Any]]:
    async with store.read() as conn:
        rows = (await conn.execute(select(usage_rollups).order_by(usage_rollups.c.hour, usage_rollups.c.team,
                                                                   usage_rollups.c.variant))).mappings().all()
    return [{k: v for k, v in r.items() if k != "id"} for r in rows]


async def sums_of_records(store: SqlStore) -> list[dict[str, Any]]:
    """The rollups recomputed from usage_records by SQL (gpu_usd_per_hour aside: no record column)."""
    c = usage_records.c
    keys = [func.coalesce(c[d], "").label(d) for d in ROLLUP_DIMENSIONS]
    async with store.read() as conn:
        rows = (await conn.execute(
            select(func.count().label("requests"), func.sum(c.prompt_tokens).label("prompt_tokens"),
                   func.sum(c.completion_tokens).label("completion_tokens"),
                   func.sum(c.cached_read_tokens).label("cached_read_tokens"),
                   type_coerce(func.coalesce(func.sum(c.cost_usd), 0), UsdAmount).label("cost_usd"),
                   func.sum(c.latency_s).label("latency_s_sum"), *keys)
            .group_by(*keys))).mappings().all()
    return sorted((dict(r) for r in rows), key=lambda r: tuple(r[d] for d in ROLLUP_DIMENSIONS))


async def test_rollups_equal_the_sums_of_the_records(store: SqlStore) -> None:
    rows = mixed_rows()
    assert await write_usage(store, rows) == 6
    got = await rollups(store)
    assert len(got) == 3
    first = next(r for r in got if r["team"] == "a")  # hour 0, team a, key k1
    assert (first["key_id"], first["variant"], first["requests"], first["errors"]) == ("k1", "", 3, 1)
    assert (first["unpriced_requests"], first["estimated_requests"], first["prompt_tokens"]) == (1, 1, 30)
    assert first["cost_usd"] == Decimal("0.100123457")  # nano-dollars, half-even, exact on SQLite too
    assert (first["cached_read_tokens"], first["cache_write_tokens"], first["reasoning_tokens"]) == (3, 2, 1)
    gpu = next(r for r in got if r["variant"] == "B")
    assert (gpu["team"], gpu["requests"], gpu["unpriced_requests"], gpu["estimated_requests"]) == ("", 2, 0, 1)
    assert gpu["gpu_usd_per_hour"] == Decimal("4") and gpu["cost_usd"] == 0  # the highest hourly price
    later = got[-1]
    assert later["hour"].timestamp() == HOUR + 3600 and later["endpoint"] == "embeddings"
    # every rollup equals the records' own sums, whichever backend computed it
    recomputed = await sums_of_records(store)  # by dimensions over both hours (the hour is no record column)
    assert len(recomputed) == 3
    for rec in recomputed:
        mine = [r for r in got if all(r[d] == rec[d] for d in ROLLUP_DIMENSIONS)]
        assert sum(m["requests"] for m in mine) == rec["requests"]
        assert sum(m["prompt_tokens"] for m in mine) == rec["prompt_tokens"]
        assert sum(m["cost_usd"] for m in mine) == rec["cost_usd"]
        assert sum(m["latency_s_sum"] for m in mine) == pytest.approx(rec["latency_s_sum"])
    # and the Python reference (what SQLite upserts) agrees with what the store holds on either backend
    assert expected(rows) == got


async def test_a_batch_written_twice_counts_once(store: SqlStore) -> None:
    rows = mixed_rows()
    assert await write_usage(store, rows[:4]) == 4
    before = await rollups(store)
    assert await write_usage(store, rows[:4]) == 0  # a replayed batch: nothing new
    assert await rollups(store) == before
    assert await write_usage(store, rows) == 2  # half old, half new: only the new two are added
    assert await rollups(store) == expected(rows)
    # the same record twice in one batch is one record
    assert await write_usage(store, [row(100), row(100)]) == 1
    async with store.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(usage_records))).scalar() == 7
        total = (await conn.execute(select(func.sum(usage_rollups.c.requests)))).scalar()
    assert total == 7


async def test_hostile_strings_fit_their_columns(store: SqlStore) -> None:
    rec = UsageRecord(request_id="r", route="x" * 500, provider="p\x00q", model="m\x00" * 300, stream=True,
                      status=404, latency_s=0.01, error="e" * 1000, principal=Principal("k" * 99, "t" * 99),
                      variant="v" * 99)
    rec.record_id = "abc"
    stored = row_from_record(rec)
    assert await write_usage(store, [stored]) == 1
    async with store.read() as conn:
        got = (await conn.execute(select(usage_records))).one()
    assert (len(got.route), got.provider, got.model, len(got.error)) == (200, "pq", "m" * 200, 200)
    assert (len(got.key_id), len(got.team), len(got.variant), got.stream) == (40, 64, 64, True)


def test_spill_line_round_trips_money_exactly() -> None:
    import msgspec

    r = row(1, cost_usd=Decimal("0.000000001"), gpu_usd_per_hour=Decimal("12.34"), team="a")
    assert (r.cost_nano_usd, r.gpu_nano_usd_per_hour) == (1, 12_340_000_000)
    line = msgspec.json.encode(r)
    assert msgspec.json.decode(line, type=UsageRow) == r
    assert b"completion_tokens" in line and b"cache_write_tokens" not in line  # defaults are left out


async def test_columns_read_back_as_sqlalchemy_types_on_both_backends(store: SqlStore) -> None:
    """The fast paths bypass SQLAlchemy's column types on the way in; what comes out must be the same."""
    from datetime import UTC, datetime

    r = row(7, ts=HOUR + 12.345678, stream=True, usage_source="counted", cost_usd=Decimal("1.000000001"),
            ttft_s=0.05, team="a")
    assert await write_usage(store, [r]) == 1
    async with store.read() as conn:
        got = (await conn.execute(select(usage_records))).one()
        later = (await conn.execute(select(usage_records.c.record_id)
                                    .where(usage_records.c.ts > datetime.fromtimestamp(HOUR + 12, UTC)))).all()
    assert got.ts == datetime.fromtimestamp(HOUR + 12.345678, UTC)
    assert (got.stream, got.estimated, got.cost_usd, got.ttft_s) == (True, True, Decimal("1.000000001"), 0.05)
    assert (got.team, got.key_id, got.variant, got.attempts) == ("a", None, None, 1)
    assert [x.record_id for x in later] == ["rec-7"]  # compares with SQLAlchemy-bound datetimes
