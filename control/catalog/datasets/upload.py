"""Dataset uploads: one file per request, streamed to ``datasets/{id}/{version}/{filename}``, then analysed.

Each upload is a new version. The sequence keeps earlier versions safe whatever fails:

1. The file part's name and extension are checked before anything is written
   (hostile name: 400; unsupported or mismatching extension: 415).
2. The next version number is reserved in its own short transaction (row status
   ``uploading``, dataset row locked so concurrent uploads get distinct numbers).
3. The part streams into the object store under the version's own key, with the
   size limit enforced as it flows (413). Keys are never reused, so no earlier
   version's object can be touched.
4. ``analyze`` (validation, PII scan, quality, profile) reads it back in one of the
   catalog's own worker processes (``analysis_pool``: memory-limited, never the event
   loop's default executor), within the request: the response already carries the reports.
5. One transaction records the outcome with its audit entry:
   * valid: the version becomes ``ready`` and the dataset's headline columns move to it;
   * unparseable (ragged CSV, truncated Parquet, binary JSONL: 422 with line/row) or
     failing its declared schema/required columns (422): the version is recorded
     ``invalid`` with its report, and its file is deleted: only ready versions hold data.

A transport-level failure (413, malformed multipart, client gone) or a database
outage before step 5 commits removes the reservation and the partial object: no
version is created at all. If the database is down when the reservation should go,
a background task keeps retrying (``_abandon``); reservations still ``uploading``
after ``stale_upload_s`` (a crash, a restart mid-outage) are reaped at start-up and
by the next upload to the dataset, so their numbers are reused: versions stay 1, 2, 3…
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import PurePosixPath
from typing import Any, ClassVar

import msgspec
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import Actor, AdminError, BadRequest, ModuleContext, UnsupportedMediaType
from adapters.objectstore import ObjectStore, ObjectStoreError, StoredObject
from adapters.store import StoreUnavailable, utcnow
from control.catalog.datasets.analysis_pool import AnalysisJob, AnalysisPool
from control.catalog.datasets.protocol import Dataset, DatasetVersionReport
from control.catalog.datasets.redaction import flagged_columns
from control.catalog.datasets.service import DatasetService, to_report
from control.catalog.datasets_analysis import DatasetAnalysis, DatasetError, report_for_error
from control.catalog.datasets_analysis.formats import EXTENSIONS
from control.catalog.multipart import FilePart, MultipartReader
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
    def __init__(self, ctx: ModuleContext, service: DatasetService, pool: AnalysisPool, *,
                 stale_upload_s: float = 3600.0) -> None:
        self._ctx = ctx
        self._service = service
        self._pool = pool
        self._stale = timedelta(seconds=stale_upload_s)
        self._retries: set[asyncio.Task[None]] = set()  # reservations to remove once the database is back

    async def reap_stale(self) -> None:
        """Remove every dataset's reservations older than ``stale_upload_s`` (called at start-up)."""
        async with self._ctx.store.begin() as conn:
            stale = await self._reap(conn, None)
        await self._delete_objects(stale)

    async def aclose(self) -> None:
        for task in self._retries:
            task.cancel()
        await asyncio.gather(*self._retries, return_exceptions=True)

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
            stale = await self._reap(conn, dataset_id)  # frees the numbers of abandoned reservations
            latest = (await conn.execute(select(func.max(dataset_versions.c.version))
                                         .where(dataset_versions.c.dataset_id == dataset_id))).scalar_one()
            version = (latest or 0) + 1
            await conn.execute(insert(dataset_versions).values(
                dataset_id=dataset_id, version=version, status="uploading", filename=filename,
                created_at=utcnow(), created_by=actor.principal.name))
        await self._delete_objects(stale)
        return version

    async def _reap(self, conn: AsyncConnection, dataset_id: str | None) -> list[str]:
        """Delete ``uploading`` rows older than the bound; returns the object keys they may have left."""
        c = dataset_versions.c
        where = (c.status == "uploading") & (c.created_at < utcnow() - self._stale)
        if dataset_id is not None:
            where &= c.dataset_id == dataset_id
        rows = (await conn.execute(select(c.dataset_id, c.version, c.filename).where(where))).all()
        if rows:
            await conn.execute(delete(dataset_versions).where(where))
            log.info("removed %d stale dataset upload reservation(s): %s", len(rows),
                     ", ".join(f"{r.dataset_id} v{r.version}" for r in rows))
        return [f"datasets/{r.dataset_id}/{r.version}/{r.filename}" for r in rows]

    async def _delete_objects(self, keys: list[str]) -> None:
        store = self._ctx.object_store
        if store is None:
            return
        for key in keys:
            await _delete_quietly(store, key)

    async def _analyze(self, store: ObjectStore, key: str, dataset: Dataset, filename: str,
                       fmt: str) -> tuple[DatasetAnalysis | None, DatasetError | None]:
        try:
            async with store.local_path(key) as path:
                return await self._pool.analyze(AnalysisJob(
                    path=str(path), fmt=fmt, filename=filename, expected_schema=dataset.schema,
                    required_columns=list(dataset.required_columns), pii_rules=dataset.pii_rules)), None
        except DatasetError as err:
            return None, err

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
        """Undo a reservation whose upload failed: no version, no object."""
        await _delete_quietly(store, key)
        try:
            await self._unreserve(dataset_id, version)
        except StoreUnavailable as err:  # the outage that failed the upload, most likely: retry until it ends
            log.warning("could not remove the reservation of dataset %s version %d (%s); retrying in the background",
                        dataset_id, version, err)
            task = asyncio.create_task(self._unreserve_later(dataset_id, version))
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)
        except Exception as err:  # logged and swallowed: the original failure is what the client must see
            log.warning("could not remove the reservation of dataset %s version %d: %s", dataset_id, version, err)

    async def _unreserve(self, dataset_id: str, version: int) -> None:
        async with self._ctx.store.begin() as conn:
            await conn.execute(delete(dataset_versions).where(
                dataset_versions.c.dataset_id == dataset_id, dataset_versions.c.version == version,
                dataset_versions.c.status == "uploading"))

    async def _unreserve_later(self, dataset_id: str, version: int) -> None:
        """Retry with backoff for as long as the reaper would wait; it takes over after that."""
        delay_s, waited_s = 0.25, 0.0
        while waited_s < self._stale.total_seconds():
            await asyncio.sleep(delay_s)
            waited_s += delay_s
            try:
                await self._unreserve(dataset_id, version)
            except StoreUnavailable:
                delay_s = min(delay_s * 2, 30.0)
                continue
            log.info("removed the reservation of dataset %s version %d", dataset_id, version)
            return


async def _delete_quietly(store: ObjectStore, key: str) -> None:
    try:
        await store.delete(key)
    except ObjectStoreError as err:
        log.warning("could not delete dataset object %s: %s", key, err)
