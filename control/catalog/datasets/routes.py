"""HTTP surface of the dataset catalog: thin handlers over ``DatasetService`` and ``DatasetUploads``.

Roles: reads need viewer; registering and uploading need developer.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import Provide
from litestar.params import Parameter

from adapters.adminapi import (
    MAX_VERSION,
    Actor,
    Conflict,
    Envelope,
    ModuleContext,
    Page,
    PageParams,
    Role,
    VersionNumber,
    ok,
    requires,
)
from control.catalog.datasets.protocol import (
    Dataset,
    DatasetCreate,
    DatasetVersion,
    DatasetVersionReport,
    PiiStatus,
    Preview,
    VersionCompare,
)
from control.catalog.datasets.service import DatasetService
from control.catalog.datasets.upload import DatasetUploads, InvalidDataset
from control.catalog.services import DATASET_UPLOADS, DATASETS
from control.catalog.uploads import MultipartUploadOperation, multipart_body

__all__ = ["DatasetsController"]

_VERSION: dict[str, Any] = {"ge": 1, "le": MAX_VERSION}
# Litestar leaves a zero bound out of the document (it tests ``if ge:``): state it again.
_QUALITY: dict[str, Any] = {"ge": 0, "le": 100, "schema_extra": {"minimum": 0}}
# Litestar types raises= as HTTPException classes; it reads only their status_code, which AdminError has.
_INVALID: list[Any] = [InvalidDataset]
_CONFLICT: list[Any] = [Conflict]


def _datasets(ctx: ModuleContext) -> DatasetService:
    return ctx.services[DATASETS]


def _uploads(ctx: ModuleContext) -> DatasetUploads:
    return ctx.services[DATASET_UPLOADS]


class DatasetsController(Controller):
    path = "/catalog/datasets"
    tags = ["catalog"]
    dependencies = {
        "datasets": Provide(_datasets, sync_to_thread=False),
        "uploads": Provide(_uploads, sync_to_thread=False),
    }

    @get("/", summary="List datasets", description="Newest first; filters combine with AND.")
    async def list_datasets(
        self,
        datasets: DatasetService,
        page: PageParams,
        name: str | None = Parameter(query="name", default=None, max_length=100,
                                     description="case-insensitive substring of the name"),
        version: int | None = Parameter(query="version", default=None, **_VERSION,
                                        description="datasets whose latest ready version is this one"),
        owner_team: str | None = Parameter(query="ownerTeam", default=None, max_length=64),
        pii_status: PiiStatus | None = Parameter(query="piiStatus", default=None),
        min_quality: float | None = Parameter(query="minQuality", default=None, **_QUALITY),
        max_quality: float | None = Parameter(query="maxQuality", default=None, **_QUALITY),
    ) -> Envelope[Page[Dataset]]:
        return ok(await datasets.list(page, name=name, version=version, owner_team=owner_team,
                                      pii_status=pii_status, min_quality=min_quality, max_quality=max_quality))

    @post("/", status_code=201, opt=requires(Role.developer), summary="Register a dataset (no versions yet)")
    async def create_dataset(self, data: DatasetCreate, datasets: DatasetService, caller: Actor) -> Envelope[Dataset]:
        return ok(await datasets.create(caller, data), "Dataset created")

    @get("/{datasetId:str}", summary="Get a dataset")
    async def get_dataset(self, datasetId: str, datasets: DatasetService) -> Envelope[Dataset]:
        return ok(await datasets.get(datasetId))

    @get("/{datasetId:str}/versions", summary="List a dataset's versions (ready and invalid), newest first")
    async def list_versions(self, datasetId: str, datasets: DatasetService,
                            page: PageParams) -> Envelope[Page[DatasetVersion]]:
        return ok(await datasets.versions(datasetId, page))

    @post("/{datasetId:str}/upload", status_code=201, opt=requires(Role.developer), request_max_body_size=None,
          operation_class=MultipartUploadOperation, raises=_INVALID,
          summary="Upload a new version (multipart/form-data, one CSV, JSONL or Parquet file, streamed)",
          description="Validated, PII-scanned and quality-scored before the response. An unparseable file or "
                      "one failing the declared schema is recorded as an invalid version (422 with its report).")
    async def upload(self, datasetId: str, request: Request[Any, Any, Any], datasets: DatasetService,
                     uploads: DatasetUploads, ctx: ModuleContext, caller: Actor) -> Envelope[DatasetVersionReport]:
        await datasets.get(datasetId)  # 404 before reading a byte of the body
        reader = multipart_body(request, ctx.settings.max_upload_bytes)
        report = await uploads.upload(caller, datasetId, reader)
        return ok(report, f"Version {report.version} is ready")

    @get("/{datasetId:str}/validation", summary="Validation, PII and quality reports of a version",
         description="Defaults to the latest upload attempt, ready or invalid.")
    async def validation(
        self, datasetId: str, datasets: DatasetService,
        version: int | None = Parameter(query="version", default=None, **_VERSION),
    ) -> Envelope[DatasetVersionReport]:
        return ok(await datasets.report(datasetId, version))

    @get("/{datasetId:str}/preview", raises=_CONFLICT,
         summary="Sample rows (PII masked), schema and per-column statistics",
         description="Defaults to the latest ready version.")
    async def preview(
        self, datasetId: str, datasets: DatasetService,
        version: int | None = Parameter(query="version", default=None, **_VERSION),
        rows: int = Parameter(query="rows", default=20, ge=1, le=200),
    ) -> Envelope[Preview]:
        return ok(await datasets.preview(datasetId, version, rows))

    @get("/{datasetId:str}/versions/{v1:int}/compare/{v2:int}", raises=_CONFLICT,
         summary="Schema, row-count and stats diff")
    async def compare(self, datasetId: str, v1: VersionNumber, v2: VersionNumber,
                      datasets: DatasetService) -> Envelope[VersionCompare]:
        return ok(await datasets.compare(datasetId, v1, v2))
