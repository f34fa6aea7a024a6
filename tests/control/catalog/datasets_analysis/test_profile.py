"""Per-column statistics and the JSON-safe preview."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import statistics

import msgspec
import pyarrow as pa
import pytest

from control.catalog.datasets_analysis import DatasetProfile, Profiler


def _profile(*batches: pa.RecordBatch, sample_rows: int = 20) -> DatasetProfile:
    profiler = Profiler(sample_rows=sample_rows)
    for batch in batches:
        profiler.feed(batch)
    return profiler.finish("parquet")


def _col(profile: DatasetProfile, name: str):  # type: ignore[no-untyped-def]
    return next(c for c in profile.columns if c.name == name)


def test_numeric_stats_across_batches() -> None:
    values = [3, 1, 4, 1, 5, 9, 2, 6]
    profile = _profile(
        pa.RecordBatch.from_pydict({"n": values[:4]}),
        pa.RecordBatch.from_pydict({"n": pa.array([*values[4:], None], pa.float64())}),
    )
    n = _col(profile, "n")
    assert (n.type, n.min, n.max, n.null_count) == ("float", 1, 9, 1)
    assert n.mean == pytest.approx(statistics.fmean(values))
    assert n.std == pytest.approx(statistics.pstdev(values))
    assert n.null_ratio == pytest.approx(1 / 9)
    assert (n.distinct_estimate, n.distinct_exact) == (7, True)


def test_nan_and_inf_do_not_poison_means() -> None:
    n = _col(_profile(pa.RecordBatch.from_pydict({"n": [1.0, float("nan"), float("inf"), 3.0]})), "n")
    assert (n.min, n.max, n.mean) == (1.0, 3.0, 2.0)


def test_string_lengths_booleans_and_dates() -> None:
    batch = pa.RecordBatch.from_pydict({
        "s": ["a", "bbb", "cc", None],
        "b": [True, False, True, None],
        "d": [dt.date(2024, 1, 2), dt.date(2023, 5, 6), None, dt.date(2025, 1, 1)],
    })
    profile = _profile(batch)
    s, b, d = _col(profile, "s"), _col(profile, "b"), _col(profile, "d")
    assert (s.length.min, s.length.p50, s.length.max, s.length.mean) == (1, 2, 3, 2.0)
    assert (s.mean, s.min) == (None, None)
    assert b.true_count == 2
    assert (d.type, d.min, d.max) == ("date", "2023-05-06", "2025-01-01")


def test_distinct_is_estimated_past_the_sketch_size() -> None:
    n = 50_000
    s = _col(_profile(pa.RecordBatch.from_pydict({"s": [f"value-{i % 20_000}" for i in range(n)]})), "s")
    assert not s.distinct_exact
    assert s.distinct_estimate == pytest.approx(20_000, rel=0.1)


def test_preview_is_json_safe_and_bounded() -> None:
    batch = pa.RecordBatch.from_pydict({
        "when": [dt.datetime(2024, 1, 2, 3, 4, 5)] * 3,
        "blob": [b"\x00\xff"] * 3,
        "f": [float("nan"), 1.5, 2.5],
        "dec": pa.array([decimal.Decimal("1.10")] * 3, pa.decimal128(5, 2)),
        "long": ["x" * 5000] * 3,
        "nested": [{"k": [1, 2]}] * 3,
    })
    profile = _profile(batch, batch, sample_rows=4)
    assert len(profile.preview) == 4
    first = profile.preview[0]
    assert first["when"] == "2024-01-02T03:04:05"
    assert first["blob"] == "AP8="
    assert first["f"] is None
    assert first["dec"] == "1.10"
    assert len(first["long"]) == 1001 and first["long"].endswith("…")
    assert first["nested"] == {"k": [1, 2]}
    assert msgspec.json.decode(msgspec.json.encode(profile))["preview"][0]["f"] is None
    assert _col(profile, "dec").mean == pytest.approx(1.1)


def test_late_column_counts_earlier_rows_as_null() -> None:
    profile = _profile(pa.RecordBatch.from_pydict({"a": [1, 2]}), pa.RecordBatch.from_pydict({"a": [3], "b": ["x"]}))
    b = _col(profile, "b")
    assert (b.null_count, b.null_ratio) == (2, pytest.approx(2 / 3))
    assert [(c.name, c.type) for c in profile.schema] == [("a", "integer"), ("b", "string")]


def test_profile_round_trips_through_json() -> None:
    profile = _profile(pa.RecordBatch.from_pydict({"a": [1, 2], "s": ["x", None], "f": [0.5, math.pi]}))
    encoded = msgspec.json.encode(profile)
    assert b'"rowCount":2' in encoded and b'"nullRatio"' in encoded
    assert msgspec.json.decode(encoded, type=DatasetProfile) == profile
