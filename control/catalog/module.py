"""The catalog control module: models (lifecycle, approvals, lineage, files) and datasets (versions, reports).

Services it provides in the control plane's registry (keys in ``control.catalog.services``;
handlers read them; ``catalog.model_refs``, key ``adapters.adminapi.seams.MODEL_REFS``,
is the seam other modules use to declare dependencies on a model):

    catalog.models          ModelService       catalog.model_history   ModelHistory
    catalog.model_files     ModelFileService   catalog.model_refs      ModelRefs
    catalog.datasets        DatasetService     catalog.dataset_uploads DatasetUploads
    catalog.model_reader    ModelReader        (``adapters.adminapi.seams.MODEL_CATALOG``)
    catalog.model_registry  ModelRegistry      (``adapters.adminapi.seams.MODEL_REGISTRY``: trained models)
    catalog.dataset_reader  DatasetReader      (``adapters.adminapi.seams.DATASET_READER``)
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager

from litestar.types import ControllerRouterHandler

from adapters.adminapi import Migration, ModuleContext
from adapters.adminapi.seams import DATASET_READER, MODEL_CATALOG, MODEL_REGISTRY
from control.catalog.datasets.analysis_pool import AnalysisPool
from control.catalog.datasets.reader import DatasetReader
from control.catalog.datasets.routes import DatasetsController
from control.catalog.datasets.service import DatasetService
from control.catalog.datasets.upload import DatasetUploads
from control.catalog.models.files import ModelFileService
from control.catalog.models.history import ModelHistory
from control.catalog.models.publish import publish_routes_if_missing
from control.catalog.models.reader import ModelReader
from control.catalog.models.refs import ModelRefs
from control.catalog.models.registry import ModelRegistry
from control.catalog.models.routes import ModelsController
from control.catalog.models.service import ModelService
from control.catalog.services import DATASET_UPLOADS, DATASETS, MODEL_FILES, MODEL_HISTORY, MODEL_REFS, MODELS
from control.catalog.settings import CatalogSettings, PiiConfig, load_detectors
from control.catalog.tables import CATALOG_MIGRATIONS

__all__ = ["CatalogModule"]


class CatalogModule:
    name = "catalog"

    def routes(self) -> Sequence[ControllerRouterHandler]:
        return [ModelsController, DatasetsController]

    def migrations(self) -> Sequence[Migration]:
        return CATALOG_MIGRATIONS

    def lifespan(self, ctx: ModuleContext) -> AbstractAsyncContextManager[None]:
        return self._run(ctx)

    @contextlib.asynccontextmanager
    async def _run(self, ctx: ModuleContext) -> AsyncIterator[None]:
        settings = ctx.module_settings(CatalogSettings)  # a typo in the config fails start-up here
        pii = PiiConfig(settings, load_detectors(settings.pii_detectors))
        refs = ModelRefs()
        models = ModelService(ctx, refs)
        datasets = DatasetService(ctx, pii)
        pool = AnalysisPool(settings)  # dataset analysis only: worker processes nothing else uses
        uploads = DatasetUploads(ctx, datasets, pool, stale_upload_s=settings.stale_upload_s)
        await uploads.reap_stale()
        await publish_routes_if_missing(ctx)  # approved external models are the gateway's routes
        ctx.provide(MODELS, models)
        ctx.provide(MODEL_HISTORY, ModelHistory(ctx, models))
        ctx.provide(MODEL_FILES, ModelFileService(ctx, models, max_files=settings.max_files_per_upload))
        ctx.provide(MODEL_REFS, refs)
        reader = ModelReader()
        ctx.provide(MODEL_CATALOG, reader)
        ctx.provide(MODEL_REGISTRY, ModelRegistry(ctx, models, reader))
        ctx.provide(DATASETS, datasets)
        ctx.provide(DATASET_UPLOADS, uploads)
        ctx.provide(DATASET_READER, DatasetReader(ctx, settings.analysis))
        try:
            yield
        finally:
            await uploads.aclose()
            await pool.aclose()
