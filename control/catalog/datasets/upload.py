"""Dataset uploads: one file per request, streamed to ``datasets/{id}/{version}/{filename}``, then analysed.

Each upload is a new version. The sequence keeps earlier versions safe whatever fails:

1. The file part's name and extension are checked before anything is written
   (hostile name: 400; unsupported or mismatching extension: 415).
2. The next version number is reserved in its own short transaction (row status
   ``uploading``, dataset row locked so concurrent uploads get distinct numbers).
3. The part streams into the object store under the version's own key, with the
   size limit enforced as it flows (413). Keys are never reused, so no earlier
   version's object can be touched.
4. ``analyze`` (validation, PII scan, quality, profile) reads it back in a worker
   thread, synchronously within the request: the response already carries the reports.
5. One transaction records the outcome with its audit entry:
   * valid: the version becomes ``ready`` and the dataset's headline columns move to it;
   * unparseable (ragged CSV, truncated Parquet, binary JSONL: 422 with line/row) or
     failing its declared schema/required columns (422): the version is recorded
     ``invalid`` with its report, and its file is deleted: only ready versions hold data.

A transport-level failure (413, malformed multipart, client gone) removes the
reservation and the partial object: no version is created at all.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import PurePosixPath
from typing import Any, ClassVar

import msgspec
from sqlalchemy import delete, func, insert, select, update

from adapters.adminapi import Actor, AdminError, BadRequest, ModuleContext, UnsupportedMediaType
from adapters.objectstore import ObjectStore, ObjectStoreError, StoredObject
from adapters.store import utcnow
from control.catalog.datasets.protocol import Dataset, DatasetVersionReport
from control.catalog.datasets.redaction import flagged_columns, redact_rows
from control.catalog.datasets.service import DatasetService, to_report
from control.catalog.datasets_analysis import DatasetAnalysis, DatasetError, analyze, report_for_error
from control.catalog.datasets_analysis.formats import EXTENSIONS
from control.catalog.multipart import FilePart, MultipartReader
from control.catalog.settings import CatalogSettings, PiiConfig
from control.catalog.tables import DATASETS_TOPIC, dataset_versions, datasets
from control.catalog.uploads import checked_filename, object_store_of, translated

__all__ = ["DatasetUploads", "InvalidDataset"]

log = logging.getLogger("llmops.catalog")


class InvalidDataset(AdminError):
    """The file was stored as an ``invalid`` version; ``data`` is that version's report."""

    status: ClassVar[int] = 422

    def __init__(self, message: str, report: DatasetVersionReport, status: int = 422) -> None:
        super().__init__(message, msgspec.to_builtins(report))
        self.status = status  # type: ignore[misc]


class DatasetUploads:
    def __init__(self, ctx: ModuleContext, service: DatasetService, settings: CatalogSettings, pii: PiiConfig) -> None:
        self._ctx = ctx
        self._service = service
        self._settings = settings
        self._pii = pii

    async def upload(self, actor: Actor, dataset_id: str, reader: MultipartReader) -> DatasetVersionReport:
        store = object_store_of(self._ctx)
        limit = self._ctx.settings.max_upload_bytes
        dataset = await self._service.get(dataset_id)
        with translated(None, limit):
            parts = reader.parts()
            part = await anext(parts, None)
            if part is None:
                raise BadRequest("The upload holds no file; send one file part")
            filename = checked_filename(part.filename, part.field_name)
            fmt = self._format_of(dataset, filename)
        version = await self._reserve(actor, dataset_id, filename)
        key = f"datasets/{dataset_id}/{version}/{filename}"
        try:
            with translated(filename, limit):
                stored = await store.put_stream(key, part.chunks(), max_bytes=limit)
                await self._reject_more_parts(parts)
                analysis, error = await self._analyze(store, key, dataset, filename, fmt)
            report = await self._record(actor, dataset, version, filename, fmt, stored, analysis, error)
        except BaseException:
            await asyncio.shield(self._abandon(store, dataset_id, version, key))
            raise
        if report.status == "invalid":
            await _delete_quietly(store, key)
            first = (report.validation.errors[0].message if report.validation and report.validation.errors
                     else "invalid file")
            raise InvalidDataset(f"Version {version} of dataset {dataset_id!r} is invalid: {first}", report,
                                 error.status if error is not None else 422)
        return report

    @staticmethod
    def _format_of(dataset: Dataset, filename: str) -> str:
        suffix = PurePosixPath(filename).suffix.lower()
        fmt = EXTENSIONS.get(suffix)
        if fmt is None:
            raise UnsupportedMediaType(f"File {filename!r}: extension {suffix or '(none)'!r} is not a dataset format; "
                                       "use " + ", ".join(sorted(EXTENSIONS)), {"filename": filename})
        if dataset.format is not None and fmt != dataset.format:
            raise UnsupportedMediaType(f"Dataset {dataset.id!r} holds {dataset.format} files; {filename!r} is {fmt}",
                                       {"filename": filename, "format": dataset.format})
        return fmt

    @staticmethod
    async def _reject_more_parts(parts: Any) -> None:
        extra: FilePart | None = await anext(parts, None)
        if extra is not None:
            raise BadRequest("Send exactly one file per dataset upload (each upload is one version)",
                             {"field": extra.field_name})

    async def _reserve(self, actor: Actor, dataset_id: str, filename: str) -> int:
        async with self._ctx.store.begin() as conn:
            await self._service.live(conn, dataset_id, lock=True)
            latest = (await conn.execute(select(func.max(dataset_versions.c.version))
                                         .where(dataset_versions.c.dataset_id == dataset_id))).scalar_one()
            version = (latest or 0) + 1
            await conn.execute(insert(dataset_versions).values(
                dataset_id=dataset_id, version=version, status="uploading", filename=filename,
                created_at=utcnow(), created_by=actor.principal.name))
        return version

    async def _analyze(self, store: ObjectStore, key: str, dataset: Dataset, filename: str,
                       fmt: str) -> tuple[DatasetAnalysis | None, DatasetError | None]:
        rules = self._pii.select(dataset.pii_rules)
        try:
            async with store.local_path(key) as path:
                analysis = await asyncio.to_thread(
                    analyze, path, fmt, filename=filename, expected_schema=dataset.schema,  # type: ignore[arg-type]
                    required_columns=dataset.required_columns, pii_rules=rules, detectors=self._pii.detectors,
                    sample_rows=self._settings.preview_rows)
        except DatasetError as err:
            return None, err
        flagged = flagged_columns(analysis.pii)
        preview = redact_rows(analysis.profile.preview, flagged, rules, self._pii.detectors)
        profile = msgspec.structs.replace(analysis.profile, preview=preview)
        return msgspec.structs.replace(analysis, profile=profile), None

    async def _record(self, actor: Actor, dataset: Dataset, version: int, filename: str, fmt: str,
                      stored: StoredObject, analysis: DatasetAnalysis | None,
                      error: DatasetError | None) -> DatasetVersionReport:
        ok = analysis is not None and analysis.validation.ok
        values: dict[str, Any] = {
            "status": "ready" if ok else "invalid", "format": fmt, "size_bytes": stored.size_bytes,
            "sha256": stored.sha256, "created_at": utcnow(), "created_by": actor.principal.name,
        }
        if analysis is not None:
            profile = msgspec.to_builtins(analysis.profile)
            profile["redactedColumns"] = flagged_columns(analysis.pii)
            values.update(row_count=analysis.row_count, pii_status=analysis.pii.pii_status,
                          quality_score=analysis.quality.score, validation=msgspec.to_builtins(analysis.validation),
                          pii=msgspec.to_builtins(analysis.pii), quality=msgspec.to_builtins(analysis.quality))
            if ok:
                values.update(object_key=stored.key, storage_uri=stored.storage_uri, profile=profile)
        else:
            assert error is not None
            values["validation"] = msgspec.to_builtins(report_for_error(fmt, error))
        where = (dataset_versions.c.dataset_id == dataset.id) & (dataset_versions.c.version == version)
        async with self._ctx.store.begin() as conn:
            await conn.execute(update(dataset_versions).where(where).values(values))
            if ok:
                assert analysis is not None
                await conn.execute(update(datasets).where(datasets.c.id == dataset.id).values(
                    latest_version=version, row_count=analysis.row_count, pii_status=analysis.pii.pii_status,
                    quality_score=analysis.quality.score, updated_at=values["created_at"],
                    updated_by=actor.principal.name))
            report = to_report((await conn.execute(select(dataset_versions).where(where))).one())
            summary = msgspec.structs.replace(report, validation=None, pii=None, quality=None)
            await self._ctx.audit.record(conn, actor, action="catalog.dataset.upload", resource_type="dataset",
                                         resource_id=dataset.id, after=summary,
                                         detail=f"version {version} {report.status}")
            await self._ctx.changes.mark(conn, DATASETS_TOPIC)
        return report

    async def _abandon(self, store: ObjectStore, dataset_id: str, version: int, key: str) -> None:
        """Undo a reservation whose upload failed in transit: no version, no object."""
        await _delete_quietly(store, key)
        try:
            async with self._ctx.store.begin() as conn:
                await conn.execute(delete(dataset_versions).where(
                    dataset_versions.c.dataset_id == dataset_id, dataset_versions.c.version == version,
                    dataset_versions.c.status == "uploading"))
        except Exception as err:  # logged and swallowed: the original failure is what the client must see
            log.warning("could not remove the reservation of dataset %s version %d: %s", dataset_id, version, err)


async def _delete_quietly(store: ObjectStore, key: str) -> None:
    try:
        await store.delete(key)
    except ObjectStoreError as err:
        log.warning("could not delete dataset object %s: %s", key, err)
