"""Dataset registration, listing and the read side of versions: reports, preview, compare.

A dataset's list-filter columns (latest ready version, row count, PII status,
quality score) are written by the upload that produced that version, so
filtering never opens a report.
"""

from __future__ import annotations

import builtins
from typing import Any

import msgspec
from sqlalchemy import Select, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import Actor, Conflict, FieldError, ModuleContext, NotFound, Page, PageParams, refuse
from adapters.store import DuplicateKey, new_id, utcnow
from control.catalog.datasets.protocol import (
    Dataset,
    DatasetCreate,
    DatasetVersion,
    DatasetVersionReport,
    Preview,
    VersionCompare,
)
from control.catalog.datasets_analysis import DatasetProfile, InvalidSchemaSpec, compare_profiles
from control.catalog.datasets_analysis.logical import normalize_schema
from control.catalog.settings import PiiConfig
from control.catalog.tables import DATASETS_TOPIC, dataset_versions, datasets

__all__ = ["DatasetService", "to_dataset", "to_report", "to_version"]

_SUMMARY = [c for c in dataset_versions.c if c.name not in ("validation", "pii", "quality", "profile", "object_key")]


def to_dataset(row: Any) -> Dataset:
    fields = {f: getattr(row, f) for f in Dataset.__struct_fields__ if f != "schema"}
    return Dataset(**fields, schema=row.expected_schema)


def to_version(row: Any) -> DatasetVersion:
    return msgspec.convert(row, DatasetVersion, from_attributes=True)


def to_report(row: Any) -> DatasetVersionReport:
    return msgspec.convert(row, DatasetVersionReport, from_attributes=True)


def _escape_like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class DatasetService:
    def __init__(self, ctx: ModuleContext, pii: PiiConfig) -> None:
        self._store = ctx.store
        self._audit = ctx.audit
        self._changes = ctx.changes
        self._pii = pii

    async def create(self, actor: Actor, data: DatasetCreate) -> Dataset:
        schema = self._check(data)
        now, who, dataset_id = utcnow(), actor.principal.name, new_id("ds")
        row = {"id": dataset_id, "name": data.name, "description": data.description, "owner_team": data.owner_team,
               "format": data.format, "expected_schema": schema, "required_columns": list(data.required_columns),
               "pii_rules": data.pii_rules, "latest_version": None, "row_count": None, "pii_status": "unknown",
               "quality_score": None, "created_at": now, "created_by": who, "updated_at": now, "updated_by": who}
        try:
            async with self._store.begin() as conn:
                await conn.execute(insert(datasets).values(row))
                dataset = await self.live(conn, dataset_id)
                await self._audit.record(conn, actor, action="catalog.dataset.create", resource_type="dataset",
                                         resource_id=dataset_id, after=dataset)
                await self._changes.mark(conn, DATASETS_TOPIC)
        except DuplicateKey as err:
            raise Conflict(f"A dataset named {data.name!r} already exists") from err
        return dataset

    def _check(self, data: DatasetCreate) -> dict[str, str] | None:
        errors: list[FieldError] = []  # rules the OpenAPI document states: a 400
        unknown_names: list[FieldError] = []  # names this deployment did not configure: a 422
        schema: dict[str, str] | None = None
        try:
            schema = normalize_schema(data.schema) if data.schema is not None else None
        except InvalidSchemaSpec as err:
            errors.append(FieldError(field="schema", message=str(err)))
        if len(data.required_columns) != len(set(data.required_columns)):
            errors.append(FieldError(field="requiredColumns", message="duplicate column names"))
        if data.pii_rules is not None:
            unknown = sorted(set(data.pii_rules) - set(self._pii.rules))
            if unknown:
                unknown_names.append(FieldError(field="piiRules", message=f"unknown rules {unknown}; available: "
                                                                          f"{sorted(self._pii.rules)}"))
        refuse(errors, unknown_names)
        return schema

    async def get(self, dataset_id: str) -> Dataset:
        async with self._store.read() as conn:
            return await self.live(conn, dataset_id)

    async def live(self, conn: AsyncConnection, dataset_id: str, *, lock: bool = False) -> Dataset:
        query = select(datasets).where(datasets.c.id == dataset_id)
        row = (await conn.execute(query.with_for_update() if lock else query)).one_or_none()
        if row is None or row.deleted_at is not None:
            raise NotFound(f"No dataset {dataset_id!r}")
        return to_dataset(row)

    async def list(self, page: PageParams, *, name: str | None = None, version: int | None = None,
                   owner_team: str | None = None, pii_status: str | None = None,
                   min_quality: float | None = None, max_quality: float | None = None) -> Page[Dataset]:
        """Quality bounds are inclusive and match only datasets with a ready version (a score)."""
        # minQuality above maxQuality is not an error: nothing matches, as with any empty filter.
        c = datasets.c
        query: Select[Any] = select(datasets).where(c.deleted_at.is_(None))
        if name:
            query = query.where(c.name.ilike(_escape_like(name), escape="\\"))
        for column, value in ((c.latest_version, version), (c.owner_team, owner_team), (c.pii_status, pii_status)):
            if value is not None:
                query = query.where(column == value)
        if min_quality is not None:
            query = query.where(c.quality_score >= min_quality)
        if max_quality is not None:
            query = query.where(c.quality_score <= max_quality)
        async with self._store.read() as conn:
            total = (await conn.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
            rows = (await conn.execute(query.order_by(c.created_at.desc(), c.id.desc())
                                       .limit(page.page_size).offset(page.offset))).all()
        return page.wrap([to_dataset(r) for r in rows], total)

    async def versions(self, dataset_id: str, page: PageParams) -> Page[DatasetVersion]:
        where = (dataset_versions.c.dataset_id == dataset_id) & (dataset_versions.c.status != "uploading")
        async with self._store.read() as conn:
            await self.live(conn, dataset_id)
            total = (await conn.execute(select(func.count()).select_from(dataset_versions).where(where))).scalar_one()
            rows = (await conn.execute(select(*_SUMMARY).where(where).order_by(dataset_versions.c.version.desc())
                                       .limit(page.page_size).offset(page.offset))).all()
        return page.wrap([to_version(r) for r in rows], total)

    async def report(self, dataset_id: str, version: int | None) -> DatasetVersionReport:
        """One version's reports; by default the latest upload attempt, ready or invalid."""
        async with self._store.read() as conn:
            await self.live(conn, dataset_id)
            query = select(dataset_versions).where(dataset_versions.c.dataset_id == dataset_id,
                                                   dataset_versions.c.status != "uploading")
            query = (query.where(dataset_versions.c.version == version) if version is not None
                     else query.order_by(dataset_versions.c.version.desc()).limit(1))
            row = (await conn.execute(query)).one_or_none()
        if row is None:
            raise NotFound(f"Dataset {dataset_id!r} has no version {version}" if version is not None
                           else f"Dataset {dataset_id!r} has no uploads yet")
        return to_report(row)

    async def preview(self, dataset_id: str, version: int | None, rows: int) -> Preview:
        async with self._store.read() as conn:
            dataset = await self.live(conn, dataset_id)
            number = version if version is not None else dataset.latest_version
            if number is None:
                raise Conflict(f"Dataset {dataset_id!r} has no ready version to preview; upload a file first")
            profile, redacted = await self._profile(conn, dataset_id, number)
        return Preview(dataset_id=dataset_id, version=number, row_count=profile.row_count, schema=profile.schema,
                       columns=profile.columns, rows=profile.preview[:rows], redacted_columns=redacted)

    async def compare(self, dataset_id: str, old: int, new: int) -> VersionCompare:
        async with self._store.read() as conn:
            await self.live(conn, dataset_id)
            (a, _), (b, _) = await self._profile(conn, dataset_id, old), await self._profile(conn, dataset_id, new)
        diff = compare_profiles(a, b)
        return VersionCompare(dataset_id=dataset_id, from_version=old, to_version=new, identical=diff.identical,
                              schema=diff.schema, row_count=diff.row_count, stats=diff.stats)

    async def _profile(self, conn: AsyncConnection, dataset_id: str,
                       version: int) -> tuple[DatasetProfile, builtins.list[str]]:
        row = (await conn.execute(select(dataset_versions.c.status, dataset_versions.c.profile).where(
            dataset_versions.c.dataset_id == dataset_id, dataset_versions.c.version == version))).one_or_none()
        if row is None or row.status == "uploading":
            raise NotFound(f"Dataset {dataset_id!r} has no version {version}")
        if row.status != "ready" or row.profile is None:
            raise Conflict(f"Version {version} of dataset {dataset_id!r} is {row.status}: it holds no data "
                           "(see its validation report)", {"version": version, "status": row.status})
        return msgspec.convert(row.profile, DatasetProfile), list(row.profile.get("redactedColumns", []))
