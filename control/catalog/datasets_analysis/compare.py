"""Version compare: what changed between two dataset profiles (schema, row count, column stats)."""

from __future__ import annotations

from typing import Any

import msgspec

from control.catalog.datasets_analysis.logical import ColumnInfo
from control.catalog.datasets_analysis.profile import ColumnProfile, DatasetProfile

__all__ = ["ColumnStatsDiff", "ProfileDiff", "RowCountDiff", "SchemaDiff", "StatChange", "TypeChange",
           "compare_profiles"]

Scalar = bool | int | float | str | None
# Stats compared per common column; ratios and means are compared with a tolerance.
_STATS = ("null_ratio", "distinct_estimate", "min", "max", "mean", "std", "true_count")
_LENGTH_STATS = ("min", "p50", "p95", "max", "mean")
_TOLERANCE = 1e-9


class TypeChange(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    name: str
    old_type: str
    new_type: str


class SchemaDiff(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    added: list[ColumnInfo]
    removed: list[ColumnInfo]
    type_changed: list[TypeChange]


class RowCountDiff(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    old: int
    new: int
    delta: int
    delta_ratio: float | None  # relative to old; None when old is 0


class StatChange(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    stat: str  # e.g. "nullRatio", "mean", "length.p95"
    old: Scalar
    new: Scalar
    delta: float | None = None  # new - old, for numbers


class ColumnStatsDiff(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    column: str
    changes: list[StatChange]


class ProfileDiff(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    schema: SchemaDiff
    row_count: RowCountDiff
    stats: list[ColumnStatsDiff]  # only columns present in both versions with at least one change
    identical: bool


def compare_profiles(old: DatasetProfile, new: DatasetProfile) -> ProfileDiff:
    old_cols = {c.name: c for c in old.columns}
    new_cols = {c.name: c for c in new.columns}
    schema = SchemaDiff(
        added=[ColumnInfo(name=c.name, type=c.type) for c in new.columns if c.name not in old_cols],
        removed=[ColumnInfo(name=c.name, type=c.type) for c in old.columns if c.name not in new_cols],
        type_changed=[
            TypeChange(name=c.name, old_type=old_cols[c.name].type, new_type=c.type)
            for c in new.columns if c.name in old_cols and old_cols[c.name].type != c.type
        ],
    )
    delta = new.row_count - old.row_count
    rows = RowCountDiff(
        old=old.row_count, new=new.row_count, delta=delta,
        delta_ratio=delta / old.row_count if old.row_count else None,
    )
    stats = []
    for column in new.columns:
        if column.name in old_cols:
            changes = _column_changes(old_cols[column.name], column)
            if changes:
                stats.append(ColumnStatsDiff(column=column.name, changes=changes))
    identical = not (schema.added or schema.removed or schema.type_changed or delta or stats)
    return ProfileDiff(schema=schema, row_count=rows, stats=stats, identical=identical)


def _column_changes(old: ColumnProfile, new: ColumnProfile) -> list[StatChange]:
    pairs: list[tuple[str, Any, Any]] = [(_camel(s), getattr(old, s), getattr(new, s)) for s in _STATS]
    if old.length is not None or new.length is not None:
        pairs += [
            (f"length.{s}", getattr(old.length, s, None), getattr(new.length, s, None)) for s in _LENGTH_STATS
        ]
    return [_change(stat, a, b) for stat, a, b in pairs if _differs(a, b)]


def _differs(a: Any, b: Any) -> bool:
    if _is_number(a) and _is_number(b):
        return abs(float(a) - float(b)) > _TOLERANCE * max(1.0, abs(float(a)), abs(float(b)))
    return bool(a != b)


def _change(stat: str, old: Any, new: Any) -> StatChange:
    delta = float(new) - float(old) if _is_number(old) and _is_number(new) else None
    return StatChange(stat=stat, old=old, new=new, delta=delta)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
