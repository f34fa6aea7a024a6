"""Schema and required-column checks, with the first offending row."""

from __future__ import annotations

import pyarrow as pa
import pytest

from control.catalog.datasets_analysis import (
    InvalidSchemaSpec,
    RaggedRow,
    ReadOptions,
    SchemaValidator,
    iter_batches,
    report_for_error,
)
from tests.control.catalog.datasets_analysis._files import Writer


def _validate(batches: list[pa.RecordBatch], schema: dict | None = None, required: tuple = ()) -> object:
    validator = SchemaValidator(schema, required)
    for batch in batches:
        validator.feed(batch)
    return validator.report("csv")


def _codes(issues: list) -> list[tuple[str, str | None, int | None]]:
    return [(i.code, i.column, i.row) for i in issues]


def test_matching_file_is_ok() -> None:
    batch = pa.RecordBatch.from_pydict({"text": ["a", "b"], "label": [1, 0]})
    report = _validate([batch], {"text": "string", "label": "int"}, ("text",))
    assert report.ok
    assert report.errors == [] and report.warnings == []
    assert report.row_count == 2
    assert [(c.name, c.type) for c in report.columns] == [("text", "string"), ("label", "integer")]
    assert report.schema_compliance == 1.0


def test_missing_required_and_expected_columns() -> None:
    batch = pa.RecordBatch.from_pydict({"text": ["a"], "extra": [1]})
    report = _validate([batch], {"text": "string", "label": "integer"}, ("prompt",))
    assert not report.ok
    assert _codes(report.errors) == [("missing_required_column", "prompt", None), ("missing_column", "label", None)]
    assert _codes(report.warnings) == [("unexpected_column", "extra", None)]
    assert report.schema_compliance == pytest.approx(1 / 3)


def test_nulls_in_required_column_name_the_first_row_across_batches() -> None:
    first = pa.RecordBatch.from_pydict({"prompt": ["a", "b", "c"]})
    second = pa.RecordBatch.from_pydict({"prompt": ["d", None, None]})
    report = _validate([first, second], required=("prompt",))
    assert _codes(report.errors) == [("null_in_required_column", "prompt", 5)]
    assert "2 empty values" in report.errors[0].message


def test_required_column_absent_from_a_later_jsonl_batch_counts_as_null(write_jsonl: Writer) -> None:
    path = write_jsonl([{"p": "x"}, {"p": "y"}, {"q": 1}])
    batches = list(iter_batches(path, "jsonl", ReadOptions(batch_rows=2)))
    report = _validate(batches, required=("p",))
    assert _codes(report.errors) == [("null_in_required_column", "p", 3)]


def test_type_mismatch_reports_first_bad_csv_row(write_csv: Writer) -> None:
    rows = "".join(f"{i}\n" for i in range(500)) + "12\nabc\n13\n"
    batches = list(iter_batches(write_csv("label\n" + rows), "csv", ReadOptions(csv_block_bytes=1024)))
    report = _validate(batches, {"label": "integer"})
    assert _codes(report.errors) == [("type_mismatch", "label", 502)]
    assert "holds string values, expected integer" in report.errors[0].message
    assert report.schema_compliance == 0.0


def test_integer_satisfies_float_and_all_null_satisfies_anything() -> None:
    batch = pa.RecordBatch.from_pydict({"x": [1, 2], "y": pa.array([None, None], pa.null())})
    report = _validate([batch], {"x": "number", "y": "string"})
    assert report.ok
    assert _codes(report.warnings) == [("empty_column", "y", None)]


def test_no_rows_is_an_error(write_csv: Writer) -> None:
    batches = list(iter_batches(write_csv("a,b\n"), "csv"))
    report = _validate(batches)
    assert _codes(report.errors) == [("no_rows", None, None)]


@pytest.mark.parametrize("spec", [{"a": "varchar"}, {"a": "null"}, {"a": 3}])
def test_invalid_schema_spec(spec: dict) -> None:
    with pytest.raises(InvalidSchemaSpec):
        SchemaValidator(spec)


def test_invalid_required_columns() -> None:
    with pytest.raises(InvalidSchemaSpec):
        SchemaValidator(None, ["ok", ""])


def test_report_for_parse_error_keeps_the_line() -> None:
    report = report_for_error("csv", RaggedRow(line=7, expected=3, actual=2))
    assert not report.ok
    assert (report.errors[0].code, report.errors[0].line) == ("ragged_row", 7)
