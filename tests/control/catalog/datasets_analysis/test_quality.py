"""Quality ratios on data with known answers, and the documented formula."""

from __future__ import annotations

import pyarrow as pa
import pytest

from control.catalog.datasets_analysis import Profiler, score_quality
from control.catalog.datasets_analysis.quality import WEIGHTS, DuplicateCounter


def _quality(batches: list[pa.RecordBatch], compliance: float = 1.0, max_rows: int = 10_000_000):
    profiler, dups = Profiler(), DuplicateCounter(max_rows=max_rows)
    for batch in batches:
        profiler.feed(batch)
        dups.feed(batch)
    return score_quality(profiler.finish("parquet"), dups, compliance)


ROWS = {
    "id": [1, 1, 2, 3, None, 4, 4, 4, 5, 6],
    "text": ["aa", "aa", "bb", None, None, "cc", "cc", "cc", "dd", "ee"],
}


def test_missing_and_duplicate_ratios_are_exact() -> None:
    report = _quality([pa.RecordBatch.from_pydict(ROWS)])
    b = report.breakdown
    assert b.missing_ratio == pytest.approx(3 / 20)
    assert (b.duplicate_rows, b.duplicate_ratio) == (3, pytest.approx(0.3))
    assert b.length_outlier_ratio == 0.0
    assert b.schema_compliance == 1.0
    assert report.score == pytest.approx(100 * (0.35 * 0.85 + 0.25 * 0.7 + 0.25 + 0.15), abs=0.05)


def test_duplicates_across_batches_and_compliance_weight() -> None:
    half = pa.RecordBatch.from_pydict({"a": [1, 2], "b": ["x", "y"]})
    report = _quality([half, half], compliance=0.5)
    assert report.breakdown.duplicate_ratio == 0.5
    expected = 100 * (WEIGHTS["missing"] + WEIGHTS["duplicates"] * 0.5 + WEIGHTS["schema"] * 0.5 + WEIGHTS["length"])
    assert report.score == round(expected, 1)


def test_missing_key_and_null_are_the_same_row() -> None:
    first = pa.RecordBatch.from_pydict({"a": [1]})
    second = pa.RecordBatch.from_pydict({"a": [1], "b": pa.array([None], pa.string())})
    assert _quality([first, second]).breakdown.duplicate_rows == 1


def test_values_that_only_differ_across_columns_are_not_duplicates() -> None:
    batch = pa.RecordBatch.from_pydict({"a": ["x", None], "b": [None, "x"]})
    assert _quality([batch]).breakdown.duplicate_rows == 0


def test_length_outliers() -> None:
    text = ["abcdefghij"] * 20 + ["x" * 200]
    report = _quality([pa.RecordBatch.from_pydict({"t": text})])
    assert report.breakdown.length_outlier_ratio == pytest.approx(1 / 21)
    (lengths,) = report.text_lengths
    assert (lengths.column, lengths.min, lengths.p50, lengths.p95, lengths.max) == ("t", 10, 10, 10, 200)
    assert lengths.outlier_ratio == pytest.approx(1 / 21)


def test_one_character_differences_are_not_outliers() -> None:
    text = [f"hello {i}" for i in range(100)]  # lengths 7 and 8
    assert _quality([pa.RecordBatch.from_pydict({"t": text})]).breakdown.length_outlier_ratio == 0.0


def test_duplicate_hashing_stops_at_max_rows() -> None:
    batch = pa.RecordBatch.from_pydict({"a": [1, 1, 1, 2, 3, 4, 5, 6]})
    b = _quality([batch], max_rows=4).breakdown
    assert (b.duplicate_rows, b.duplicate_ratio, b.duplicates_sampled) == (2, 0.5, True)


def test_perfect_data_scores_100() -> None:
    report = _quality([pa.RecordBatch.from_pydict({"a": [1, 2, 3], "t": ["x", "y", "z"]})])
    assert report.score == 100.0


def test_nested_columns_take_part_in_duplicates() -> None:
    rows = [{"m": [{"r": "u", "c": "hi"}]}, {"m": [{"r": "u", "c": "hi"}]}, {"m": [{"r": "u", "c": "yo"}]}]
    assert _quality([pa.RecordBatch.from_pylist(rows)]).breakdown.duplicate_rows == 1
