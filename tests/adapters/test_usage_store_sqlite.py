"""adapters/usage_store.py's SQLite encoding: timestamps exactly as ``datetime`` writes them, NULLs
never bound (the driver adapts each bound None through its registry), one statement per NULL pattern."""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, datetime
from typing import Any

from adapters.usage_store import UsageRow, _sqlite_groups, _sqlite_insert, _sqlite_tuple, _ts_text

HOUR = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _reference(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def test_timestamps_match_datetime_to_the_microsecond() -> None:
    edges = [HOUR, HOUR + 0.5e-6, HOUR + 1.5e-6, HOUR + 2.5e-6, HOUR + 0.9999995, HOUR + 0.9999994,
             HOUR + 59.9999999, HOUR - 0.0000001, 86399.9999996, 0.0, 1e-7, 1_700_000_000.123456]
    rng = random.Random(7)
    values = edges + [rng.uniform(0, 4e9) for _ in range(20_000)] + [HOUR + rng.random() for _ in range(20_000)]
    for ts in values:
        assert _ts_text(ts) == _reference(ts), ts


def _row(i: int, **kw: object) -> UsageRow:
    base: dict[str, object] = {"record_id": f"rec-{i}", "request_id": f"req-{i}", "ts": HOUR + i, "endpoint": "chat",
                               "route": "r", "model": "m", "provider": "p", "status": 200, "latency_s": 0.5,
                               "usage_source": "upstream"}
    return UsageRow(**{**base, **kw})  # type: ignore[arg-type]


def test_nulls_are_literals_grouped_by_pattern() -> None:
    rows = [_row(1), _row(2), _row(3, team="a", key_id="k", cost_nano_usd=5, price_source="config", ttft_s=0.1)]
    groups = _sqlite_groups(rows)
    assert len(groups) == 2  # two NULL patterns, one statement each
    for nulls, values in groups.items():
        sql = _sqlite_insert(nulls)
        assert sql.count("?") == len(values[0]) and sql.count("NULL") == sum(nulls)
        assert all(v is not None for row in values for v in row)  # nothing bound is None
    db = sqlite3.connect(":memory:")
    from adapters.usage_store import _COLUMNS

    db.execute(f"CREATE TABLE usage_records ({', '.join(_COLUMNS)}, UNIQUE (record_id))")
    for nulls, values in groups.items():
        db.executemany(_sqlite_insert(nulls), values)
    got = {r[0]: r for r in db.execute(f"SELECT {', '.join(_COLUMNS)} FROM usage_records")}
    for r in rows:
        assert got[r.record_id] == _sqlite_tuple(r)  # the NULLs where the row had None, the rest as bound


def _reference_deltas(rows: list[UsageRow]) -> dict[tuple[object, ...], dict[str, object]]:
    """Sums the obvious way, row by row (what ``rollup_deltas`` computed before it grouped first)."""
    from decimal import Decimal

    acc: dict[tuple[object, ...], dict[str, object]] = {}
    for r in rows:
        key = (datetime.fromtimestamp(r.ts - r.ts % 3600, UTC), r.team or "", r.key_id or "", r.route, r.model,
               r.provider, r.variant or "", r.endpoint)
        s: dict[str, Any] = acc.setdefault(key, {  # type: ignore[assignment]
            "requests": 0, "errors": 0, "unpriced_requests": 0, "estimated_requests": 0, "prompt_tokens": 0,
            "completion_tokens": 0, "cached_read_tokens": 0, "cache_write_tokens": 0, "reasoning_tokens": 0,
            "cost": 0, "gpu": 0, "latency_s_sum": 0.0})
        s["requests"] += 1
        s["errors"] += r.status >= 400
        s["estimated_requests"] += r.usage_source in ("counted", "estimated")
        for f in ("prompt_tokens", "completion_tokens", "cached_read_tokens", "cache_write_tokens",
                  "reasoning_tokens"):
            s[f] += getattr(r, f)
        s["latency_s_sum"] += r.latency_s
        if r.cost_nano_usd is not None:
            s["cost"] += r.cost_nano_usd
        elif r.price_source != "gpu_hour":
            s["unpriced_requests"] += 1
        if r.gpu_nano_usd_per_hour is not None and r.gpu_nano_usd_per_hour > s["gpu"]:
            s["gpu"] = r.gpu_nano_usd_per_hour
    for s in acc.values():
        s["cost_usd"] = Decimal(s.pop("cost")) / Decimal(10**9)  # type: ignore[arg-type]
        s["gpu_usd_per_hour"] = Decimal(s.pop("gpu")) / Decimal(10**9)  # type: ignore[arg-type]
    return acc


def test_rollup_deltas_equal_row_by_row_sums() -> None:
    from adapters.dataplane import ROLLUP_DIMENSIONS
    from adapters.usage_store import rollup_deltas

    rng = random.Random(11)
    rows = [_row(i, ts=HOUR + rng.uniform(-4000, 8000), team=rng.choice([None, "a", "b"]),
                 key_id=rng.choice([None, "k"]), variant=rng.choice([None, "B"]), status=rng.choice([200, 404, 502]),
                 usage_source=rng.choice(["upstream", "counted", "estimated"]), prompt_tokens=rng.randrange(100),
                 completion_tokens=rng.randrange(50), reasoning_tokens=rng.randrange(5),
                 cost_nano_usd=rng.choice([None, 0, rng.randrange(10**6)]),
                 price_source=rng.choice([None, "config", "gpu_hour"]),
                 gpu_nano_usd_per_hour=rng.choice([None, rng.randrange(10**10)]), latency_s=rng.random())
            for i in range(2000)]
    got = rollup_deltas(rows)
    keys = [(d["hour"], *(d[k] for k in ROLLUP_DIMENSIONS)) for d in got]
    assert keys == sorted(keys)  # one locking order for concurrent writers
    want = _reference_deltas(rows)
    assert {k: {f: v for f, v in d.items() if f != "hour" and f not in ROLLUP_DIMENSIONS}
            for k, d in zip(keys, got, strict=True)} == want
