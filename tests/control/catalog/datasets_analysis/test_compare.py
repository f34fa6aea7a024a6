"""Version compare over two profiles."""

from __future__ import annotations

import msgspec
import pyarrow as pa
import pytest

from control.catalog.datasets_analysis import DatasetProfile, Profiler, compare_profiles


def _profile(columns: dict) -> DatasetProfile:
    profiler = Profiler()
    profiler.feed(pa.RecordBatch.from_pydict(columns))
    # Compare works on stored profiles, so go through JSON as the catalog will.
    return msgspec.json.decode(msgspec.json.encode(profiler.finish("csv")), type=DatasetProfile)


def test_identical_profiles() -> None:
    v1 = _profile({"a": [1, 2], "t": ["x", "y"]})
    diff = compare_profiles(v1, v1)
    assert diff.identical
    assert (diff.row_count.delta, diff.stats, diff.schema.added) == (0, [], [])


def test_schema_row_count_and_stats_diff() -> None:
    v1 = _profile({"id": [1, 2, 3, 4], "label": [0, 1, 0, 1], "old": ["a", "b", "c", "d"]})
    v2 = _profile({"id": [1, 2, 3, 4, 5, 6], "label": ["0", "1", "0", "1", "x", None], "new": [True] * 6})
    diff = compare_profiles(v1, v2)
    assert not diff.identical
    assert [(c.name, c.type) for c in diff.schema.added] == [("new", "boolean")]
    assert [(c.name, c.type) for c in diff.schema.removed] == [("old", "string")]
    assert [(t.name, t.old_type, t.new_type) for t in diff.schema.type_changed] == [("label", "integer", "string")]
    assert (diff.row_count.old, diff.row_count.new, diff.row_count.delta) == (4, 6, 2)
    assert diff.row_count.delta_ratio == pytest.approx(0.5)
    by_column = {s.column: {c.stat: c for c in s.changes} for s in diff.stats}
    assert set(by_column) == {"id", "label"}
    id_changes = by_column["id"]
    assert (id_changes["max"].old, id_changes["max"].new, id_changes["max"].delta) == (4, 6, 2.0)
    assert id_changes["mean"].delta == pytest.approx(3.5 - 2.5)
    assert "min" not in id_changes
    label = by_column["label"]
    assert label["nullRatio"].new == pytest.approx(1 / 6)
    assert label["length.max"].old is None and label["length.max"].new == 1


def test_empty_old_version_has_no_ratio() -> None:
    diff = compare_profiles(_profile({"a": pa.array([], pa.int64())}), _profile({"a": [1]}))
    assert (diff.row_count.delta, diff.row_count.delta_ratio) == (1, None)


def test_diff_encodes_camel_case() -> None:
    diff = compare_profiles(_profile({"a": [1]}), _profile({"a": [2]}))
    body = msgspec.json.decode(msgspec.json.encode(diff))
    assert set(body) == {"schema", "rowCount", "stats", "identical"}
    assert set(body["schema"]) == {"added", "removed", "typeChanged"}
    assert body["stats"][0]["changes"][0].keys() >= {"stat", "old", "new"}
