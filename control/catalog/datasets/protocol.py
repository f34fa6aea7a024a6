"""Wire types of the dataset catalog (camelCase JSON; unknown fields rejected)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from control.catalog.datasets_analysis import (
    ColumnInfo,
    ColumnProfile,
    PiiReport,
    QualityReport,
    ValidationReport,
    logical,
)
from control.catalog.datasets_analysis.compare import ColumnStatsDiff, RowCountDiff, SchemaDiff
from control.catalog.datasets_analysis.logical import LOGICAL_TYPES

__all__ = [
    "Dataset",
    "DatasetCreate",
    "DatasetVersion",
    "DatasetVersionReport",
    "PiiStatus",
    "Preview",
    "VersionCompare",
]

DatasetFormat = Literal["csv", "jsonl", "parquet"]
PiiStatus = Literal["unknown", "clean", "detected"]
ColumnName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
# The type names normalize_schema accepts, stated for the OpenAPI document (it also ignores case and spaces).
_COLUMN_TYPE = {"type": "string", "enum": sorted(
    {t for t in LOGICAL_TYPES if t not in ("null", "other")} | set(logical._ALIASES))}
TeamName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


class DatasetCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    __semantic_rules__: ClassVar[str] = "piiRules must name rules this deployment configured"

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$",
                                      description="unique among live datasets")]
    owner_team: TeamName
    description: Annotated[str, msgspec.Meta(max_length=4000)] = ""
    format: DatasetFormat | None = None  # when set, uploads must be in this format
    schema: Annotated[dict[ColumnName, Annotated[str, msgspec.Meta(max_length=20)]],
                      msgspec.Meta(max_length=1000, description="column -> type (integer, float, string, ...)",
                                   extra_json_schema={"extra": {"additional_properties": _COLUMN_TYPE}})
                      ] | None = None
    required_columns: Annotated[list[ColumnName], msgspec.Meta(
        max_length=1000, extra_json_schema={"extra": {"unique_items": True}})] = []  # Litestar's uniqueItems
    pii_rules: Annotated[list[Annotated[str, msgspec.Meta(max_length=40)]], msgspec.Meta(max_length=100,
                         description="PII rules to run on uploads; omit for every available rule")] | None = None


class _Out(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    pass


class Dataset(_Out, frozen=True):
    id: str
    name: str
    description: str
    owner_team: str
    format: str | None
    schema: dict[str, str] | None
    required_columns: list[str]
    pii_rules: list[str] | None
    latest_version: int | None  # the newest *ready* version
    row_count: int | None
    pii_status: PiiStatus
    quality_score: float | None
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str


class DatasetVersion(_Out, frozen=True):
    """One upload attempt. ``invalid`` versions keep their reports but no data."""

    dataset_id: str
    version: int
    status: Literal["uploading", "ready", "invalid"]
    filename: str
    format: str | None
    size_bytes: int | None
    sha256: str | None
    storage_uri: str | None
    row_count: int | None
    pii_status: str | None
    quality_score: float | None
    created_at: datetime
    created_by: str


class DatasetVersionReport(DatasetVersion, frozen=True):
    validation: ValidationReport | None
    pii: PiiReport | None
    quality: QualityReport | None


class Preview(_Out, frozen=True):
    dataset_id: str
    version: int
    row_count: int
    schema: list[ColumnInfo]
    columns: list[ColumnProfile]
    rows: list[dict[str, Any]]
    redacted_columns: list[str]  # columns where PII was found; their values are masked in rows


class VersionCompare(_Out, frozen=True):
    dataset_id: str
    from_version: int
    to_version: int
    identical: bool
    schema: SchemaDiff
    row_count: RowCountDiff
    stats: list[ColumnStatsDiff]
