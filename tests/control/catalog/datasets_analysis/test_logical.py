from __future__ import annotations

import pyarrow as pa
import pytest

from control.catalog.datasets_analysis import InvalidSchemaSpec
from control.catalog.datasets_analysis.logical import compatible, logical_type, merge_types, normalize_schema


@pytest.mark.parametrize(
    ("dtype", "name"),
    [
        (pa.int8(), "integer"), (pa.uint64(), "integer"), (pa.float32(), "float"), (pa.decimal128(5, 2), "float"),
        (pa.string(), "string"), (pa.large_string(), "string"), (pa.binary(), "binary"), (pa.bool_(), "boolean"),
        (pa.date32(), "date"), (pa.timestamp("ms"), "timestamp"), (pa.list_(pa.int64()), "list"),
        (pa.struct([("a", pa.int64())]), "object"), (pa.dictionary(pa.int32(), pa.string()), "string"),
        (pa.null(), "null"),
    ],
)
def test_logical_type(dtype: pa.DataType, name: str) -> None:
    assert logical_type(dtype) == name


@pytest.mark.parametrize(
    ("a", "b", "merged"),
    [
        ("null", "integer", "integer"), ("integer", "null", "integer"), ("integer", "float", "float"),
        ("integer", "string", "string"), ("boolean", "integer", "string"), ("date", "timestamp", "timestamp"),
        ("list", "object", "string"),
    ],
)
def test_merge_widens(a: str, b: str, merged: str) -> None:
    assert merge_types(a, b) == merged


def test_compatible() -> None:
    assert compatible("integer", "float")
    assert compatible("null", "string")
    assert not compatible("float", "integer")
    assert not compatible("string", "integer")


def test_normalize_schema_accepts_aliases() -> None:
    assert normalize_schema({"a": "INT", "b": "text", "c": "Number", "d": "struct"}) == {
        "a": "integer", "b": "string", "c": "float", "d": "object"
    }
    assert normalize_schema(None) == {}
    with pytest.raises(InvalidSchemaSpec, match="unknown type 'varchar'"):
        normalize_schema({"a": "varchar"})
