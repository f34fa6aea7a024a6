"""The validation report: does the file match the schema and required columns it was declared with?

Parse failures (ragged CSV, corrupt Parquet...) are raised by the readers as
``DatasetError``; ``report_for_error`` turns one into a failed report for
storing. Everything found after a successful parse lands in the report itself,
with the first offending 1-based data ``row`` where there is one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from control.catalog.datasets_analysis.errors import DatasetError, InvalidSchemaSpec
from control.catalog.datasets_analysis.logical import (
    ColumnInfo,
    compatible,
    logical_type,
    merge_types,
    normalize_schema,
)

__all__ = ["SchemaValidator", "ValidationIssue", "ValidationReport", "report_for_error"]

# What a string value must look like to count as the declared type (mirrors the CSV reader).
_LOOKS_LIKE = {
    "integer": r"^-?(?:0|[1-9]\d{0,17})$",
    "float": r"^[-+]?(?:(?:0|[1-9]\d*)(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$",
    "boolean": r"^(?i:true|false)$",
}


class ValidationIssue(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    code: str
    message: str
    column: str | None = None
    row: int | None = None
    line: int | None = None


class ValidationReport(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    format: str
    ok: bool
    row_count: int
    columns: list[ColumnInfo]
    errors: list[ValidationIssue]
    warnings: list[ValidationIssue]
    schema_compliance: float
    # Set when only the first rows_analysed of row_count rows were checked (the analysis row limit).
    sampled: bool = False
    rows_analysed: int | None = None


class SchemaValidator:
    """Feed every batch once, then ``report``. Bounded memory: a few counters per column."""

    def __init__(
        self, expected_schema: Mapping[str, str] | None = None, required_columns: Iterable[str] = ()
    ) -> None:
        self.expected = normalize_schema(expected_schema)
        self.required = list(dict.fromkeys(required_columns))
        if not all(isinstance(c, str) and c for c in self.required):
            raise InvalidSchemaSpec("required columns must be non-empty column names")
        self.row_count = 0
        self._types: dict[str, str] = {}
        self._nulls: dict[str, int] = dict.fromkeys(self.required, 0)
        self._first_null: dict[str, int] = {}
        self._first_mismatch: dict[str, int] = {}

    def feed(self, batch: pa.RecordBatch) -> None:
        offset = self.row_count
        self.row_count += batch.num_rows
        names = set(batch.schema.names)
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            self._types[name] = merge_types(self._types.get(name, "null"), logical_type(column.type))
            expected = self.expected.get(name)
            if expected is not None and name not in self._first_mismatch:
                row = _first_mismatch(column, expected)
                if row is not None:
                    self._first_mismatch[name] = offset + row + 1
        for name in self.required:
            column = batch.column(name) if name in names else None
            nulls = batch.num_rows if column is None else column.null_count
            if nulls:
                self._nulls[name] += nulls
                if name not in self._first_null:
                    first = 0 if column is None else pc.indices_nonzero(column.is_null())[0].as_py()
                    self._first_null[name] = offset + first + 1

    def compliance(self) -> float:
        checks = [self._expected_ok(name) for name in self.expected]
        checks += [name in self._types and not self._nulls[name] for name in self.required]
        return sum(checks) / len(checks) if checks else 1.0

    def _expected_ok(self, name: str) -> bool:
        return name in self._types and compatible(self._types[name], self.expected[name])

    def report(self, fmt: str, *, total_rows: int | None = None) -> ValidationReport:
        errors: list[ValidationIssue] = []
        warnings: list[ValidationIssue] = []
        if self.row_count == 0:
            errors.append(ValidationIssue(code="no_rows", message="the file holds no data rows"))
        for name in self.required:
            if name not in self._types:
                errors.append(_issue("missing_required_column", f"required column {name!r} is missing", name))
            elif self._nulls[name]:
                message = f"required column {name!r} has {self._nulls[name]} empty values"
                errors.append(_issue("null_in_required_column", message, name, self._first_null.get(name)))
        for name, expected in self.expected.items():
            if name not in self._types:
                errors.append(_issue("missing_column", f"expected column {name!r} is missing", name))
            elif not compatible(self._types[name], expected):
                errors.append(_issue(
                    "type_mismatch", f"column {name!r} holds {self._types[name]} values, expected {expected}",
                    name, self._first_mismatch.get(name),
                ))
        for name, actual in self._types.items():
            if self.expected and name not in self.expected:
                message = f"column {name!r} is not in the expected schema"
                warnings.append(_issue("unexpected_column", message, name))
            if actual == "null" and self.row_count:
                warnings.append(_issue("empty_column", f"column {name!r} has no values", name))
        total = self.row_count if total_rows is None else total_rows
        if total > self.row_count:
            warnings.append(ValidationIssue(code="sampled", message=(
                f"only the first {self.row_count} of {total} rows were validated, scanned and profiled "
                "(the analysis row limit)")))
        return ValidationReport(
            format=fmt, ok=not errors, row_count=total,
            columns=[ColumnInfo(name=n, type=t) for n, t in self._types.items()],
            errors=errors, warnings=warnings, schema_compliance=self.compliance(),
            sampled=total > self.row_count, rows_analysed=self.row_count,
        )


def _issue(code: str, message: str, column: str, row: int | None = None) -> ValidationIssue:
    return ValidationIssue(code=code, message=message, column=column, row=row)


def _first_mismatch(column: pa.Array, expected: str) -> int | None:
    """Index of the first non-null value that is not of the expected type, if any."""
    actual = logical_type(column.type)
    if compatible(actual, expected) or column.null_count == len(column):
        return None
    if actual == "string" and expected in _LOOKS_LIKE:
        bad = pc.invert(pc.match_substring_regex(column, _LOOKS_LIKE[expected]))
    else:
        bad = column.is_valid()
    hits = pc.indices_nonzero(pc.fill_null(bad, False))
    return hits[0].as_py() if len(hits) else None


def report_for_error(fmt: str, error: DatasetError) -> ValidationReport:
    """A failed report for a file that could not even be parsed, to keep beside the upload."""
    issue = ValidationIssue(code=error.code, message=error.message, row=error.row, line=error.line)
    return ValidationReport(
        format=fmt, ok=False, row_count=0, columns=[], errors=[issue], warnings=[], schema_compliance=0.0
    )
