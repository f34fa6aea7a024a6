"""Catalog control-plane module: models and datasets under ``/llm-ops/v1/catalog``.

Models are registered (base, fine-tuned, external), versioned on every
definition change, moved through ``draft → under_review → approved → deprecated →
retired`` with recorded approvals, traced (parent, training datasets) and given
files by streamed multipart upload. Datasets get one version per upload, each
validated, PII-scanned and quality-scored (``datasets_analysis``), with preview
and version compare. See docs/admin-api.md (Catalog) for the endpoints.
"""

from control.catalog.datasets.protocol import Dataset, DatasetCreate, DatasetVersion, DatasetVersionReport
from control.catalog.models.protocol import Model, ModelCreate, ModelUpdate
from control.catalog.models.refs import ModelRefs, RefKind
from control.catalog.module import CatalogModule
from control.catalog.settings import CatalogSettings
from control.catalog.tables import DATASETS_TOPIC, MODELS_TOPIC

module = CatalogModule()

__all__ = [
    "DATASETS_TOPIC",
    "MODELS_TOPIC",
    "CatalogModule",
    "CatalogSettings",
    "Dataset",
    "DatasetCreate",
    "DatasetVersion",
    "DatasetVersionReport",
    "Model",
    "ModelCreate",
    "ModelRefs",
    "ModelUpdate",
    "RefKind",
    "module",
]
