"""adapters/usage_store.py's SQLite encoding: timestamps exactly as ``datetime`` writes them, NULLs
never bound (the driver adapts each bound None through its registry), one statement per NULL pattern."""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, datetime

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
