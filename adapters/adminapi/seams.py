"""Services one control module provides for the others: the protocol and its ``ServiceKey``.

Modules never import one another, so a service meant to be shared is typed by a
protocol here, and the providing module's class satisfies it. Read one per
request with ``ctx.services[KEY]``.

``MODEL_REFS`` (provided by ``catalog``): record that an endpoint, a training job
or another model depends on a model, inside the caller's transaction, so the
model cannot be deleted while the dependent exists::

    refs = ctx.services[MODEL_REFS]
    async with ctx.store.begin() as conn:
        ...insert the endpoint...
        await refs.add(conn, model_id, "endpoint", endpoint_id)

``MODEL_CATALOG`` (provided by ``catalog``): read one model as ``CatalogModel`` (the fields
serving and training need, typed here so neither imports the catalog), optionally locking its
row in the caller's transaction so its status cannot change under a deploy.

``DATASET_READER`` (provided by ``catalog``): a ready dataset version's description and its rows,
in file order, in batches (evaluation and training read datasets through it).

``MODEL_REGISTRY`` (provided by ``catalog``): register a model a training job produced, with files already in
the object store and its lineage (parent model, dataset version, the job), in the caller's transaction.

``EVALUATIONS`` (provided by ``evaluation``): start the evaluation configured for a model, e.g.
when a training job registered it; training calls it and never imports evaluation.

``ENDPOINTS`` (provided by ``serving``): which endpoints exist, by id or by bound model, with their
route, environment and status (evaluation resolves its targets and baselines through it).

``PROMOTION_GATE`` (provided by ``evaluation`` once it exists): whether an endpoint may move to
the next environment. When no module provides it, promotion needs no gate; when one does, a
failed verdict refuses the promotion unless an admin overrides it with a reason (audited).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Literal, Protocol

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi.services import ServiceKey

__all__ = [
    "DATASET_READER",
    "ENDPOINTS",
    "EVALUATIONS",
    "MODEL_CATALOG",
    "MODEL_REFS",
    "MODEL_REGISTRY",
    "PROMOTION_GATE",
    "CatalogDatasetVersion",
    "CatalogModel",
    "DatasetReader",
    "EndpointDirectory",
    "EndpointRef",
    "Environment",
    "EvaluationStarter",
    "GateVerdict",
    "ModelReader",
    "ModelRefKind",
    "ModelRefTracker",
    "ModelRegistration",
    "ModelRegistry",
    "PromotionGate",
    "PromotionRequest",
    "RegisteredFile",
]

ModelRefKind = Literal["endpoint", "training_job", "model"]


class ModelRefTracker(Protocol):
    async def add(self, conn: AsyncConnection, model_id: str, kind: ModelRefKind, ref_id: str) -> None:
        """Record the reference; idempotent. Raises ``NotFound`` for an unknown or deleted model."""
        ...

    async def remove(self, conn: AsyncConnection, model_id: str, kind: ModelRefKind, ref_id: str) -> bool:
        """Drop the reference; returns whether it existed."""
        ...


MODEL_REFS: ServiceKey[ModelRefTracker] = ServiceKey("catalog.model_refs")


class CatalogModel(msgspec.Struct, frozen=True, kw_only=True):
    """One live catalog model as other modules see it (snake_case; never carries a secret).

    ``provider`` is an external model's provider config as stored (``kind``, ``baseUrl``, ``model``,
    ``apiKeyRef``); ``files`` are the object-store keys of its current version's files (base and
    fine-tuned models), which a runtime downloads or mounts; ``file_names`` are the names those files have in
    the model (``config.json``, ``model.safetensors``), in the same order.
    """

    id: str
    name: str
    type: Literal["base", "fine-tuned", "external"]
    status: Literal["draft", "under_review", "approved", "deprecated", "retired"]
    version: int
    owner_team: str
    format: str | None = None
    provider: dict[str, Any] | None = None
    parent_model_id: str | None = None
    files: list[str] = []
    file_names: list[str] = []
    tags: list[str] = []
    labels: dict[str, str] = {}
    updated_at: datetime | None = None


class ModelReader(Protocol):
    async def get(self, conn: AsyncConnection, model_id: str, *, lock: bool = False) -> CatalogModel:
        """The live model; ``lock`` takes its row lock in ``conn``'s transaction (as ``MODEL_REFS.add`` does).
        Raises ``NotFound`` for an unknown or deleted model."""
        ...


MODEL_CATALOG: ServiceKey[ModelReader] = ServiceKey("catalog.model_reader")

Environment = Literal["DEV", "STG", "PROD"]


class PromotionRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What a gate judges: an endpoint's current revision moving from one environment to the next."""

    endpoint_id: str
    endpoint_name: str
    route: str
    model_id: str
    model_version: int
    revision: int
    from_environment: Environment
    to_environment: Environment


class GateVerdict(msgspec.Struct, frozen=True, kw_only=True):
    """``passed`` or not, why (shown to the operator and audited), and the evidence (e.g. an evaluation run)."""

    passed: bool
    reason: str
    evidence: dict[str, Any] = {}


class PromotionGate(Protocol):
    async def check(self, request: PromotionRequest) -> GateVerdict:
        """Judge the promotion; must not raise for a failed check (return ``passed=False`` with the reason)."""
        ...


PROMOTION_GATE: ServiceKey[PromotionGate] = ServiceKey("evaluation.promotion_gate")


class CatalogDatasetVersion(msgspec.Struct, frozen=True, kw_only=True):
    """One ready dataset version: enough to map columns and size a run, without reading rows."""

    dataset_id: str
    name: str
    version: int
    format: str
    row_count: int
    columns: list[str]
    pii_status: str | None = None


class DatasetReader(Protocol):
    async def version(self, conn: AsyncConnection, dataset_id: str, version: int | None = None
                      ) -> CatalogDatasetVersion:
        """The version (``None``: the latest ready one). ``NotFound`` for an unknown dataset or version,
        ``Conflict`` when the version is not ``ready`` (still uploading, or invalid)."""
        ...

    def rows(self, dataset_id: str, version: int, *, batch_rows: int = 256) -> AsyncIterator[list[dict[str, Any]]]:
        """The version's rows in file order, as JSON-like dicts, ``batch_rows`` at a time (the file is read off
        the event loop). Row ``i`` of the file is always the ``i``-th row yielded, so callers may key on it."""
        ...


DATASET_READER: ServiceKey[DatasetReader] = ServiceKey("catalog.dataset_reader")


class RegisteredFile(msgspec.Struct, frozen=True, kw_only=True):
    """A file already in the object store (``key``) that becomes one of the model's files as ``name``."""

    name: str  # e.g. model.safetensors, config.json
    key: str
    size_bytes: int
    sha256: str


class ModelRegistration(msgspec.Struct, frozen=True, kw_only=True):
    """A model a training job produced. ``type`` is ``fine-tuned`` (``parent_model_id`` set) or ``base``
    (``from_scratch``/``pretrain``). It is registered as ``draft``: an approver still decides before it serves."""

    name: str  # unique among live models; the registry appends -2, -3, … when taken
    type: Literal["base", "fine-tuned"]
    owner_team: str
    format: str  # safetensors (the reference trainer), pytorch, …
    files: list[RegisteredFile]
    parent_model_id: str | None = None
    dataset_id: str
    dataset_version: int
    training_job_id: str
    description: str = ""
    tags: list[str] = []
    labels: dict[str, str] = {}


class ModelRegistry(Protocol):
    async def register(self, conn: AsyncConnection, registration: ModelRegistration, *, actor: str
                       ) -> CatalogModel:
        """Create the model in ``conn``'s transaction (audited as ``actor``), recording the files (the catalog owns
        them from now on: deleting the model deletes them) and the lineage: parent, dataset version, training job
        (``GET catalog/models/{id}/lineage`` shows ``trainingJobId``). Idempotent per ``training_job_id``: a second
        call returns the model the first created. Raises ``NotFound`` for an unknown parent or dataset version."""
        ...


MODEL_REGISTRY: ServiceKey[ModelRegistry] = ServiceKey("catalog.model_registry")


class EvaluationStarter(Protocol):
    async def start_for_model(self, *, model_id: str, trigger: str, actor: str) -> str | None:
        """Start the evaluation configured for ``model_id`` (``trigger`` says why, e.g. ``training:job_…``);
        returns the run id, or ``None`` when no automatic evaluation is configured for it. The configuration is
        inherited along the lineage (the model's own gate, else its parent's, …). A model no route serves yet
        gets a run that waits (status ``waiting``) until one does, then runs by itself; only admin errors escape
        (``NotFound`` for an unknown model; a 422 whose message says what to do)."""
        ...


EVALUATIONS: ServiceKey[EvaluationStarter] = ServiceKey("evaluation.runs")


class EndpointRef(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    route: str
    environment: Environment
    model_id: str
    model_version: int
    revision: int
    status: str  # control.serving.protocol.EndpointStatus


class EndpointDirectory(Protocol):
    async def find(self, conn: AsyncConnection, *, endpoint_id: str | None = None, model_id: str | None = None,
                   environment: Environment | None = None) -> list[EndpointRef]:
        """Live endpoints matching every given filter, oldest first (none given: all)."""
        ...


ENDPOINTS: ServiceKey[EndpointDirectory] = ServiceKey("serving.endpoints")
