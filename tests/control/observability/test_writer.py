"""With the gateway's real usage writer (adapters/usage_store.py): its writes mark days dirty, and
rebuild_rollups recomputes exactly the rollups it keeps, so reports agree whichever built them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import select

from adapters.adminapi.testing import AdminTestApp
from adapters.dataplane import usage_rollups
from adapters.store import Store
from adapters.usage_store import UsageRow, write_usage
from control.observability import rebuild_rollups, refresh_days
from control.observability.tables import dirty_days

DAY = datetime(2026, 11, 30, tzinfo=UTC)
T0 = DAY.timestamp() + 3600 * 10  # 10:00 UTC


def rows() -> list[UsageRow]:
    common: dict[str, Any] = {"request_id": "req", "route": "chat", "status": 200, "latency_s": 0.5,
                              "usage_source": "upstream"}
    return [
        UsageRow(record_id="r1", ts=T0 + 1, endpoint="chat", model="gpt-4o", provider="openai", key_id="k1",
                 team="a", prompt_tokens=100, completion_tokens=20, cached_read_tokens=40, cost_nano_usd=200_000,
                 price_source="litellm", **common),
        UsageRow(record_id="r2", ts=T0 + 2, endpoint="chat", model="gpt-4o", provider="openai", key_id="k1",
                 team="a", **{**common, "status": 502, "usage_source": "none"}),
        UsageRow(record_id="r3", ts=T0 + 3, endpoint="chat", model="llama", provider="vllm", key_id="k2", team="b",
                 variant="b", prompt_tokens=30, completion_tokens=70, price_source="gpu_hour",
                 gpu_nano_usd_per_hour=4_000_000_000, **common),
        UsageRow(record_id="r4", ts=T0 + 3600 + 5, endpoint="embeddings", model="emb", provider="openai",
                 prompt_tokens=9, cost_nano_usd=9, price_source="config",
                 **{**common, "usage_source": "estimated"}),
    ]


async def snapshot(store: Store) -> list[dict[str, Any]]:
    async with store.read() as conn:
        result = await conn.execute(select(usage_rollups).order_by(usage_rollups.c.hour, usage_rollups.c.team))
        return [{k: v for k, v in r._mapping.items() if k != "id"} for r in result]


async def test_writer_rollups_mark_days_and_rebuild_matches_them(obs: AdminTestApp) -> None:
    store = obs.plane.store
    assert store is not None
    assert await write_usage(store, rows()) == 4
    async with store.read() as conn:
        assert list((await conn.execute(select(dirty_days.c.day))).scalars()) == [DAY]
    written = await snapshot(store)
    assert len(written) == 3 and written[1]["gpu_usd_per_hour"] == Decimal("4")

    url = "/llm-ops/v1/observability/usage?start=2026-11-30&end=2026-12-01&granularity=total&group_by=team"
    from_hours = (await obs.client.get(url)).json()["data"]
    assert from_hours["totals"]["cost_usd"] == "4.000200009"  # the vLLM hour ($4) and the token prices
    assert from_hours["totals"]["estimated_requests"] == 1 and from_hours["totals"]["unpriced_requests"] == 1

    await refresh_days(store, [DAY])
    assert (await obs.client.get(url)).json()["data"] == from_hours
    assert await write_usage(store, rows()[:1]) == 0  # a replayed batch changes nothing: the day stays clean
    async with store.read() as conn:
        assert list((await conn.execute(select(dirty_days.c.day))).scalars()) == []

    # More requests in the same hours: the writer's upsert updates existing rollup rows (its DO UPDATE path),
    # twice for a day already marked. The day is marked once, and the write goes through.
    more = [msgspec.structs.replace(r, record_id=r.record_id + "-again") for r in rows()]
    assert await write_usage(store, more[:2]) == 2
    assert await write_usage(store, more[2:]) == 2
    async with store.read() as conn:
        assert list((await conn.execute(select(dirty_days.c.day))).scalars()) == [DAY]
    doubled = (await obs.client.get(url)).json()["data"]
    assert doubled["totals"]["requests"] == 8 and doubled["totals"]["cost_usd"] == "4.000400018"
    await refresh_days(store, [DAY])
    assert (await obs.client.get(url)).json()["data"] == doubled
    written = await snapshot(store)

    await rebuild_rollups(store, DAY, DAY + timedelta(days=1))  # the vLLM price is kept from the rollups
    assert await snapshot(store) == written
    assert (await obs.client.get(url)).json()["data"] == doubled
