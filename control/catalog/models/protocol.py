"""Wire types of the model catalog (camelCase JSON; unknown fields rejected)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from control.catalog.models.formats import ModelFormat
from control.catalog.models.providers import ProviderConfig

__all__ = [
    "Approval",
    "ApprovalCreate",
    "DatasetRef",
    "Dependent",
    "FieldChange",
    "Lineage",
    "LineageDataset",
    "LineageModel",
    "Model",
    "ModelCreate",
    "ModelFile",
    "ModelFiles",
    "ModelStatus",
    "ModelType",
    "ModelUpdate",
    "ModelVersion",
    "StatusChange",
    "VersionDiff",
]

ModelType = Literal["base", "fine-tuned", "external"]
ModelStatus = Literal["draft", "under_review", "approved", "deprecated", "retired"]
ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$",
                                        description="unique among live models")]
TeamName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
ResourceId = Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=50, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")]
LabelValue = Annotated[str, msgspec.Meta(max_length=200)]
Note = Annotated[str, msgspec.Meta(max_length=2000)]
_Version = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
_UNIQUE: dict[str, Any] = {"extra": {"unique_items": True}}  # Litestar's spelling of uniqueItems


class _In(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    pass


class _Out(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    pass


class DatasetRef(_In, frozen=True):
    """A training dataset at one version (lineage)."""

    dataset_id: ResourceId
    version: _Version


_NULL = {"type": "null"}


def _when_type(value: str, then: dict[str, Any]) -> dict[str, Any]:
    return {"if": {"properties": {"type": {"const": value}}, "required": ["type"]}, "then": then}


class ModelCreate(_In, frozen=True):
    # What validation refuses beyond the schema: a 422, declared by the OpenAPI finisher with this text.
    __semantic_rules__: ClassVar[str] = (
        "parentModelId must name a live base or fine-tuned model that is neither this model nor one of its "
        "descendants; trainingDatasets must name ready versions of live datasets; provider.apiKey is never "
        "accepted (send apiKeyRef), nor an apiKeyRef that looks like a key itself; on replace, type cannot change")
    # What each type needs or forbids (validation.check_shape), stated for the OpenAPI document.
    __schema_extra__: ClassVar[dict[str, Any]] = {"allOf": [
        _when_type("external", {"required": ["provider"], "properties": {
            "provider": {"not": _NULL}, "format": _NULL, "parentModelId": _NULL, "trainingDatasets": {"maxItems": 0}}}),
        _when_type("base", {"required": ["format"], "properties": {
            "format": {"not": _NULL}, "provider": _NULL, "parentModelId": _NULL}}),
        _when_type("fine-tuned", {"required": ["format", "parentModelId"], "properties": {
            "format": {"not": _NULL}, "provider": _NULL, "parentModelId": {"not": _NULL}}}),
    ]}

    name: ModelName
    type: ModelType
    owner_team: TeamName
    description: Annotated[str, msgspec.Meta(max_length=4000)] = ""
    format: ModelFormat | None = None  # base/fine-tuned: required; external: must be absent
    provider: ProviderConfig | None = None  # external only
    parent_model_id: ResourceId | None = None  # fine-tuned: required
    training_datasets: Annotated[list[DatasetRef], msgspec.Meta(max_length=100, extra_json_schema=_UNIQUE)] = []
    tags: Annotated[list[Tag], msgspec.Meta(max_length=50, extra_json_schema=_UNIQUE)] = []
    labels: Annotated[dict[Annotated[str, msgspec.Meta(min_length=1, max_length=63)], LabelValue],
                      msgspec.Meta(max_length=50)] = {}


class ModelUpdate(ModelCreate, frozen=True):
    """Full replacement of the definition; creates the next version. ``type`` cannot change."""

    expected_version: _Version | None = None


class Model(_Out, frozen=True):
    id: str
    name: str
    type: ModelType
    status: ModelStatus
    version: int
    owner_team: str
    description: str
    format: str | None
    provider: ProviderConfig | None
    parent_model_id: str | None
    training_datasets: list[DatasetRef]
    training_job_id: str | None  # the training job that produced it (MODEL_REGISTRY); None when created by hand
    tags: list[str]
    labels: dict[str, str]
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str


class ModelVersion(_Out, frozen=True):
    """The model's definition as one PUT left it (status is not versioned: see approvals and the audit log)."""

    model_id: str
    version: int
    definition: dict[str, Any]
    created_at: datetime
    created_by: str


class FieldChange(_Out, frozen=True):
    field: str  # dotted camelCase path, e.g. provider.baseUrl
    old: Any
    new: Any


class VersionDiff(_Out, frozen=True):
    model_id: str
    from_version: int
    to_version: int
    identical: bool
    changes: list[FieldChange]


class StatusChange(_In, frozen=True):
    status: ModelStatus
    note: Note = ""


class ApprovalCreate(_In, frozen=True):
    decision: Literal["approve", "reject"]
    note: Note = ""


class Approval(_Out, frozen=True):
    id: int
    model_id: str
    model_version: int
    review_round: int
    decision: str
    note: str
    approver: str
    approver_key_id: str | None
    created_at: datetime


class Dependent(_Out, frozen=True):
    kind: Literal["endpoint", "training_job", "model"]
    id: str


class LineageModel(_Out, frozen=True):
    id: str
    name: str
    type: str
    status: str
    version: int
    training_job_id: str | None  # the training job that produced it, if one did


class LineageDataset(_Out, frozen=True):
    dataset_id: str
    version: int
    name: str | None  # None when the dataset has since been deleted
    status: str | None  # the dataset version's status


class Lineage(_Out, frozen=True):
    model: LineageModel
    ancestors: list[LineageModel]  # parent first, then its parent...
    training_datasets: list[LineageDataset]
    children: list[LineageModel]  # live models whose parent is this one


class ModelFile(_Out, frozen=True):
    filename: str
    size_bytes: int
    sha256: str
    storage_uri: str
    content_type: str
    uploaded_at: datetime
    uploaded_by: str


class ModelFiles(_Out, frozen=True):
    model_id: str
    format: str | None
    files: list[ModelFile]
    complete: bool
    missing_files: list[str]  # required entries no file satisfies, e.g. "config.json", "*.safetensors"
    uploaded: list[str] = []  # names stored by this request (upload responses only)
