"""Logical column types: the small vocabulary reports and expected schemas use.

Arrow has dozens of physical types; users think in about ten. Mixed columns
widen: integer + float is float, anything else mixed is string (which is also
how the CSV and JSONL readers represent such a column).
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
import pyarrow as pa
import pyarrow.types as pat

from control.catalog.datasets_analysis.errors import InvalidSchemaSpec

__all__ = ["LOGICAL_TYPES", "ColumnInfo", "compatible", "logical_type", "merge_types", "normalize_schema"]

LOGICAL_TYPES = (
    "null", "boolean", "integer", "float", "string", "binary", "date", "timestamp", "time",
    "duration", "list", "object", "other",
)
_ALIASES = {
    "int": "integer", "int64": "integer", "long": "integer",
    "double": "float", "number": "float", "decimal": "float", "float64": "float",
    "str": "string", "text": "string", "utf8": "string",
    "bool": "boolean",
    "datetime": "timestamp",
    "bytes": "binary",
    "array": "list",
    "struct": "object", "dict": "object", "map": "object",
}
_NUMERIC = frozenset({"integer", "float"})


class ColumnInfo(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A column's name and logical type, as reports and schema diffs show it."""

    name: str
    type: str


def logical_type(dtype: pa.DataType) -> str:
    if pat.is_dictionary(dtype):
        return logical_type(dtype.value_type)
    checks = (
        (pat.is_null, "null"), (pat.is_boolean, "boolean"), (pat.is_integer, "integer"),
        (pat.is_floating, "float"), (pat.is_decimal, "float"),
        (lambda t: pat.is_string(t) or pat.is_large_string(t) or pat.is_string_view(t), "string"),
        (lambda t: pat.is_binary(t) or pat.is_large_binary(t) or pat.is_fixed_size_binary(t)
         or pat.is_binary_view(t), "binary"),
        (pat.is_date, "date"), (pat.is_timestamp, "timestamp"), (pat.is_time, "time"),
        (pat.is_duration, "duration"),
        (lambda t: pat.is_list(t) or pat.is_large_list(t) or pat.is_fixed_size_list(t)
         or pat.is_list_view(t), "list"),
        (lambda t: pat.is_struct(t) or pat.is_map(t), "object"),
    )
    for check, name in checks:
        if check(dtype):
            return name
    return "other"


def merge_types(a: str, b: str) -> str:
    if a == b or b == "null":
        return a
    if a == "null":
        return b
    if a in _NUMERIC and b in _NUMERIC:
        return "float"
    if {a, b} == {"date", "timestamp"}:
        return "timestamp"
    return "string"


def compatible(actual: str, expected: str) -> bool:
    """Can a column of ``actual`` type be used where ``expected`` was declared?"""
    return actual in (expected, "null") or (actual == "integer" and expected == "float")


def normalize_schema(spec: Mapping[str, str] | None) -> dict[str, str]:
    """Map user-facing type names (and common aliases) to logical types, or raise ``InvalidSchemaSpec``."""
    if spec is None:
        return {}
    out: dict[str, str] = {}
    for name, type_name in spec.items():
        if not isinstance(name, str) or not isinstance(type_name, str):
            raise InvalidSchemaSpec("expected schema maps column names to type names")
        key = type_name.strip().lower()
        key = _ALIASES.get(key, key)
        if key not in LOGICAL_TYPES or key in ("null", "other"):
            raise InvalidSchemaSpec(
                f"column {name!r}: unknown type {type_name!r}; use one of "
                + ", ".join(t for t in LOGICAL_TYPES if t not in ("null", "other"))
            )
        out[name] = key
    return out
