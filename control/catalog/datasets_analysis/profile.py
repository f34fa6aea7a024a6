"""Preview, schema and per-column statistics, accumulated batch by batch.

Memory per column is bounded: running min/max/sum, a length histogram and a
distinct-count sketch (see ``_stats``); the preview keeps ``sample_rows`` rows.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from control.catalog.datasets_analysis._stats import DistinctEstimator, LengthHistogram
from control.catalog.datasets_analysis.logical import ColumnInfo, logical_type, merge_types

__all__ = ["ColumnProfile", "DatasetProfile", "LengthStats", "Profiler", "json_safe"]

Scalar = bool | int | float | str | None
_PREVIEW_CHARS = 1000
_NUMERIC = ("integer", "float")
_ORDERED = ("date", "timestamp", "time", "duration")
_HASHABLE = ("boolean", "integer", "float", "string", "date", "timestamp", "time", "duration")


class LengthStats(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Character lengths of a string column's non-null values."""

    min: int
    p50: int
    p95: int
    max: int
    mean: float
    outlier_count: int  # outside Tukey's far-out fences, see LengthHistogram.outliers


class ColumnProfile(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    name: str
    type: str
    null_count: int
    null_ratio: float
    distinct_estimate: int | None = None
    distinct_exact: bool = False
    min: Scalar = None
    max: Scalar = None
    mean: float | None = None
    std: float | None = None
    true_count: int | None = None
    length: LengthStats | None = None


class DatasetProfile(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    format: str
    row_count: int  # rows in the file
    schema: list[ColumnInfo]
    columns: list[ColumnProfile]
    preview: list[dict[str, Any]]
    rows_analysed: int | None = None  # rows the column statistics cover (None in profiles stored before sampling)

    @property
    def analysed(self) -> int:
        return self.row_count if self.rows_analysed is None else self.rows_analysed


class _Column:
    def __init__(self, name: str) -> None:
        self.name = name
        self.type = "null"
        self.non_null = 0
        self.min: Any = None
        self.max: Any = None
        self.num_count = 0
        self.num_sum = 0.0
        self.num_sumsq = 0.0
        self.true_count = 0
        self.lengths = LengthHistogram()
        self.distinct = DistinctEstimator()

    def feed(self, array: pa.Array) -> None:
        kind = logical_type(array.type)
        self.type = merge_types(self.type, kind)
        valid = len(array) - array.null_count
        self.non_null += valid
        if valid == 0:
            return
        if kind in _HASHABLE:
            self.distinct.add(array)
        if kind in _NUMERIC:
            self._feed_numbers(array)
        elif kind in _ORDERED:
            self._feed_extremes(array)
        elif kind == "boolean":
            self.true_count += pc.sum(array).as_py() or 0
        elif kind == "string":
            self.lengths.add(pc.utf8_length(array.drop_null()))

    def _feed_numbers(self, array: pa.Array) -> None:
        values = array.drop_null()
        if pa.types.is_decimal(values.type):
            values = pc.cast(values, pa.float64())
        if pa.types.is_floating(values.type):
            values = values.filter(pc.is_finite(values))  # NaN and inf would poison mean and std
        if len(values) == 0:
            return
        self._feed_extremes(values)
        floats = pc.cast(values, pa.float64())
        self.num_count += len(floats)
        self.num_sum += pc.sum(floats).as_py()
        self.num_sumsq += pc.sum(pc.multiply(floats, floats)).as_py()

    def _feed_extremes(self, array: pa.Array) -> None:
        extremes = pc.min_max(array)
        low, high = extremes["min"].as_py(), extremes["max"].as_py()
        if low is None:
            return
        self.min = low if self.min is None else min(self.min, low)
        self.max = high if self.max is None else max(self.max, high)

    def profile(self, row_count: int) -> ColumnProfile:
        nulls = row_count - self.non_null
        fields: dict[str, Any] = {
            "name": self.name, "type": self.type, "null_count": nulls,
            "null_ratio": nulls / row_count if row_count else 0.0,
        }
        if self.type in _HASHABLE:
            fields.update(distinct_estimate=self.distinct.estimate(), distinct_exact=self.distinct.exact)
        if self.type in _NUMERIC and self.num_count:
            mean = self.num_sum / self.num_count
            variance = max(0.0, self.num_sumsq / self.num_count - mean * mean)
            fields.update(min=self.min, max=self.max, mean=mean, std=math.sqrt(variance))
        elif self.type in _ORDERED:
            fields.update(min=json_safe(self.min), max=json_safe(self.max))
        elif self.type == "boolean":
            fields["true_count"] = self.true_count
        elif self.type == "string" and self.lengths.n:
            h = self.lengths
            fields["length"] = LengthStats(
                min=h.min or 0, p50=h.quantile(0.5), p95=h.quantile(0.95), max=h.max or 0,
                mean=h.total / h.n, outlier_count=h.outliers(),
            )
        return ColumnProfile(**fields)


class Profiler:
    """Feed every batch once, then ``finish``. Columns keep first-seen order."""

    def __init__(self, *, sample_rows: int = 20) -> None:
        self._sample_rows = sample_rows
        self._columns: dict[str, _Column] = {}
        self._preview: list[dict[str, Any]] = []
        self.row_count = 0

    def feed(self, batch: pa.RecordBatch) -> None:
        self.row_count += batch.num_rows
        for name, array in zip(batch.schema.names, batch.columns, strict=True):
            column = self._columns.get(name)
            if column is None:
                column = self._columns[name] = _Column(name)
            column.feed(array)
        missing = self._sample_rows - len(self._preview)
        if missing > 0:
            rows = batch.slice(0, missing).to_pylist()
            self._preview.extend({k: json_safe(v, _PREVIEW_CHARS) for k, v in row.items()} for row in rows)

    def finish(self, fmt: str, *, total_rows: int | None = None) -> DatasetProfile:
        """``total_rows``: the file's row count when only the first ``row_count`` rows were fed (a sample)."""
        columns = [c.profile(self.row_count) for c in self._columns.values()]
        return DatasetProfile(
            format=fmt,
            row_count=self.row_count if total_rows is None else total_rows,
            schema=[ColumnInfo(name=c.name, type=c.type) for c in columns],
            columns=columns,
            preview=self._preview,
            rows_analysed=self.row_count,
        )


def json_safe(value: Any, max_chars: int | None = None) -> Any:
    """A value JSON can carry: dates as ISO text, bytes as base64, NaN as null, long text cut."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value if max_chars is None or len(value) <= max_chars else value[:max_chars] + "…"
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value[:max_chars] if max_chars else value).decode()
    if isinstance(value, dict):
        return {str(k): json_safe(v, max_chars) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v, max_chars) for v in value]
    return str(value)
