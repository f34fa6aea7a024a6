"""Quality score, 0 to 100, with the breakdown that produced it.

    score = 100 * ( 0.35 * (1 - missing_ratio)
                  + 0.25 * (1 - duplicate_ratio)
                  + 0.25 * schema_compliance
                  + 0.15 * (1 - length_outlier_ratio) )     rounded to one decimal

* missing_ratio: null cells / (rows * columns). A JSONL key absent from a record counts as null.
* duplicate_ratio: rows identical to an earlier row / rows (the first occurrence is not a duplicate).
* schema_compliance: share of the declared checks that pass (each expected column present
  with a compatible type; each required column present without nulls); 1.0 if none declared.
* length_outlier_ratio: string values whose length is outside Tukey's far-out fences
  (Q1 - 3*S, Q3 + 3*S, S = max(IQR, median/4, 1)) of their column / all non-null string values.

Duplicates are found by hashing each row to 8 bytes (Python's SipHash over a
canonical text form of the row) and counting distinct hashes at the end: 8 bytes
of memory per row, so 10 million rows cost about 80 MB. Past ``max_rows`` rows
hashing stops and the ratio covers the first ``max_rows`` only (``duplicatesSampled``).
A 64-bit hash makes a false duplicate about as likely as 1 in 10^7 at 10 million rows.
"""

from __future__ import annotations

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from control.catalog.datasets_analysis.logical import logical_type
from control.catalog.datasets_analysis.profile import DatasetProfile

__all__ = ["WEIGHTS", "DuplicateCounter", "QualityBreakdown", "QualityReport", "TextLengths", "score_quality"]

WEIGHTS = {"missing": 0.35, "duplicates": 0.25, "schema": 0.25, "length": 0.15}
_SCALAR = ("boolean", "integer", "float", "string", "date", "timestamp", "time", "duration", "null")
_encoder = msgspec.json.Encoder()


class QualityBreakdown(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    missing_ratio: float
    duplicate_ratio: float
    duplicate_rows: int
    duplicates_sampled: bool
    schema_compliance: float
    length_outlier_ratio: float


class TextLengths(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    column: str
    min: int
    p50: int
    p95: int
    max: int
    outlier_ratio: float


class QualityReport(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    score: float
    breakdown: QualityBreakdown
    text_lengths: list[TextLengths]
    weights: dict[str, float] = msgspec.field(default_factory=lambda: dict(WEIGHTS))


class DuplicateCounter:
    def __init__(self, *, max_rows: int = 10_000_000) -> None:
        self._max_rows = max_rows
        self._chunks: list[pa.Array] = []
        self.hashed_rows = 0
        self.sampled = False

    def feed(self, batch: pa.RecordBatch) -> None:
        room = self._max_rows - self.hashed_rows
        if room <= 0:
            self.sampled = self.sampled or batch.num_rows > 0
            return
        if batch.num_rows > room:
            batch, self.sampled = batch.slice(0, room), True
        keys = _row_keys(batch)
        self._chunks.append(pa.array([hash(k) for k in keys.to_pylist()], pa.int64()))
        self.hashed_rows += batch.num_rows

    def duplicates(self) -> int:
        if not self.hashed_rows:
            return 0
        return self.hashed_rows - pc.count_distinct(pa.chunked_array(self._chunks, pa.int64())).as_py()


def _row_keys(batch: pa.RecordBatch) -> pa.Array:
    """One string per row: 'name\\x1evalue\\x1f' for each non-null cell, columns in name order.

    Naming the columns and skipping nulls makes the key independent of which
    columns a batch happens to have (JSONL), so a missing key equals a null one.
    """
    parts = []
    for name in sorted(batch.schema.names):
        column = batch.column(name)
        if logical_type(column.type) in _SCALAR and not pa.types.is_null(column.type):
            text = pc.cast(column, pa.string())
        elif pa.types.is_null(column.type):
            continue
        else:  # lists, structs, binary: their JSON text (base64 for bytes)
            text = pa.array(
                [None if v is None else _encoder.encode(v).decode() for v in column.to_pylist()], pa.string()
            )
        cell = pc.binary_join_element_wise(name + "\x1e", text, "\x1f", "", null_handling="emit_null")
        parts.append(pc.fill_null(cell, ""))
    if not parts:
        return pa.array([""] * batch.num_rows, pa.string())
    return pc.binary_join_element_wise(*parts, "", null_handling="replace", null_replacement="")


def score_quality(
    profile: DatasetProfile, duplicates: DuplicateCounter, schema_compliance: float
) -> QualityReport:
    rows = profile.analysed  # the null counts cover the analysed rows, not a sample's whole file
    cells = rows * len(profile.columns)
    missing = sum(c.null_count for c in profile.columns) / cells if cells else 0.0
    dup_rows = duplicates.duplicates()
    dup_ratio = dup_rows / duplicates.hashed_rows if duplicates.hashed_rows else 0.0
    text = [c for c in profile.columns if c.length is not None]
    text_values = sum(rows - c.null_count for c in text)
    outliers = sum(c.length.outlier_count for c in text if c.length)
    outlier_ratio = outliers / text_values if text_values else 0.0
    score = 100 * (
        WEIGHTS["missing"] * (1 - missing)
        + WEIGHTS["duplicates"] * (1 - dup_ratio)
        + WEIGHTS["schema"] * schema_compliance
        + WEIGHTS["length"] * (1 - outlier_ratio)
    )
    return QualityReport(
        score=round(score, 1),
        breakdown=QualityBreakdown(
            missing_ratio=missing, duplicate_ratio=dup_ratio, duplicate_rows=dup_rows,
            duplicates_sampled=duplicates.sampled, schema_compliance=schema_compliance,
            length_outlier_ratio=outlier_ratio,
        ),
        text_lengths=[
            TextLengths(
                column=c.name, min=c.length.min, p50=c.length.p50, p95=c.length.p95, max=c.length.max,
                outlier_ratio=c.length.outlier_count / (rows - c.null_count) if rows > c.null_count else 0.0,
            )
            for c in text if c.length
        ],
    )
