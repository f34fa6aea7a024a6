"""Keys of the services the catalog publishes in the control plane's registry.

``MODEL_REFS`` is the one other modules use; it is declared in
``adapters.adminapi.seams`` (modules cannot import the catalog) and re-exported here.
The rest are for the catalog's own handlers.
"""

from __future__ import annotations

from adapters.adminapi.seams import MODEL_REFS
from adapters.adminapi.services import ServiceKey
from control.catalog.datasets.service import DatasetService
from control.catalog.datasets.upload import DatasetUploads
from control.catalog.models.files import ModelFileService
from control.catalog.models.history import ModelHistory
from control.catalog.models.service import ModelService

__all__ = ["DATASETS", "DATASET_UPLOADS", "MODELS", "MODEL_FILES", "MODEL_HISTORY", "MODEL_REFS"]

MODELS: ServiceKey[ModelService] = ServiceKey("catalog.models")
MODEL_HISTORY: ServiceKey[ModelHistory] = ServiceKey("catalog.model_history")
MODEL_FILES: ServiceKey[ModelFileService] = ServiceKey("catalog.model_files")
DATASETS: ServiceKey[DatasetService] = ServiceKey("catalog.datasets")
DATASET_UPLOADS: ServiceKey[DatasetUploads] = ServiceKey("catalog.dataset_uploads")
