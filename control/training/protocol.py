"""Wire types of the training jobs API (camelCase JSON; unknown fields rejected on input).

Paths under ``/llm-ops/v1/training/``, every answer in the envelope:

======  =====================================  ===============  ============================================
method  path                                   body             answer ``data``
======  =====================================  ===============  ============================================
POST    jobs                                   ``JobCreate``    ``Job`` (201; queued, then the supervisor)
GET     jobs?status&jobType&modelId            ―                ``Page`` of ``Job`` (no timeline)
GET     jobs/{jobId}                           ―                ``Job`` with its timeline
POST    jobs/{jobId}/cancel                    ―                ``Job``
GET     jobs/{jobId}/logs?attempt&tailLines    ―                ``JobLogs`` (from the runtime)
======  =====================================  ===============  ============================================

Roles: reads ``viewer``; creating, cancelling and reading logs ``developer``.

The schema states types and bounds (breaking them is a 400). What needs several fields or the catalog is
checked after (``validation``, a 422 naming each field): which ``jobType`` needs or forbids ``baseModelId``
and ``architecture``, ``trainer`` or ``command``, ``nodes`` per type, the names in ``env``, the base model
(approved, not external) and the dataset version (ready).

``JobSpec`` is what a job runs as, every default resolved at creation (stored as ``training_jobs.spec``, so a
later change of ``TRAINING_*`` settings never changes a job already queued). The job token is never part of
any of these: it goes to the runtime only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

import msgspec

__all__ = [
    "AttemptSummary",
    "DatasetRef",
    "DatasetSel",
    "Job",
    "JobCreate",
    "JobEvent",
    "JobLinks",
    "JobLogs",
    "JobSpec",
    "JobStatus",
    "JobType",
    "Registration",
    "Resources",
    "ResourcesIn",
    "RetryPolicy",
    "RetryPolicyIn",
    "Trainer",
]

JobType = Literal["finetune", "from_scratch", "pretrain", "distributed"]
JobStatus = Literal["queued", "scheduled", "running", "retrying", "succeeded", "failed", "cancelled"]
Trainer = Literal["reference", "huggingface"]

JobName = Annotated[str, msgspec.Meta(
    min_length=1, max_length=40, pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$",
    description="DNS-1035 label (lowercase letters, digits, '-'), at most 40 characters; names the job's runtime "
                "resources; unique among jobs")]
ResourceId = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")]
TeamName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=50, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")]
Image = Annotated[str, msgspec.Meta(min_length=1, max_length=300, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$",
                                    description="container image reference (registry/name:tag or @sha256:…)")]
Arg = Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
_SafeInt = Annotated[int, msgspec.Meta(ge=-(2**53), le=2**53)]  # JSON numbers every client reads exactly
HyperValue = Annotated[str, msgspec.Meta(max_length=1000)] | _SafeInt | float | bool
EnvValue = Annotated[str, msgspec.Meta(max_length=4096)]
_Version = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
_ExitCode = Annotated[int, msgspec.Meta(ge=1, le=255)]
_UNIQUE: dict[str, Any] = {"extra": {"unique_items": True}}


class _In(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    pass


class _Out(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    pass


class DatasetSel(_In, frozen=True, kw_only=True):
    dataset_id: ResourceId
    version: _Version | None = None  # None: the latest ready version


class ResourcesIn(_In, frozen=True, kw_only=True):
    """Per node. ``useGpu`` unset: GPUs on Kubernetes, none on this machine; ``useGpu=false`` takes the
    ``TRAINING_CPU_ONLY_*`` limits. ``nodes`` above 1 only for ``distributed`` jobs (which need 2 or more)."""

    use_gpu: bool | None = None
    gpus_per_node: Annotated[int, msgspec.Meta(ge=1, le=16)] | None = None  # default 1 with useGpu
    nodes: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1


class RetryPolicyIn(_In, frozen=True, kw_only=True):
    """Unset fields take the ``TRAINING_DEFAULT_*`` settings. The n-th retry waits
    ``min(backoffS * 2**(n-1), backoffMaxS)``; an attempt that exits with a code in ``nonRetryableExitCodes``
    fails the job at once (2 is the trainer contract's "these inputs cannot be trained on")."""

    max_retries: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None
    backoff_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] | None = None
    backoff_max_s: Annotated[float, msgspec.Meta(ge=0, le=86400)] | None = None
    non_retryable_exit_codes: Annotated[list[_ExitCode], msgspec.Meta(max_length=32, extra_json_schema=_UNIQUE)] \
        | None = None


class Registration(_In, frozen=True, kw_only=True):
    """How the result is registered in the catalog (as a draft): ``name`` default the job's name (the catalog
    appends -2, -3, … when it is taken)."""

    name: ModelName | None = None
    tags: Annotated[list[Tag], msgspec.Meta(max_length=50, extra_json_schema=_UNIQUE)] = []
    description: Annotated[str, msgspec.Meta(max_length=4000)] = ""


class JobCreate(_In, frozen=True, kw_only=True):
    __semantic_rules__: ClassVar[str] = (
        "finetune needs baseModelId, an approved base or fine-tuned catalog model (optional for distributed, "
        "forbidden for from_scratch and pretrain); architecture is required for from_scratch, pretrain and "
        "distributed without a base model, and refused with one; the dataset version must be ready (the latest "
        "ready one when version is unset); trainer and command exclude each other; distributed needs nodes >= 2, "
        "the other types 1; gpusPerNode needs useGpu; env names must be variable names, not the trainer "
        "contract's own (API_BASE_URL, LLMOPS_*, MLFLOW_TRACKING_*, MLFLOW_RUN_ID, RANK, …) nor names of "
        "secrets, and values not keys or tokens; retryPolicy.backoffMaxS must not be below backoffS")

    name: JobName
    job_type: JobType
    base_model_id: ResourceId | None = None
    architecture: Annotated[dict[str, Any], msgspec.Meta(max_length=100)] | None = None
    dataset: DatasetSel
    hyperparameters: Annotated[dict[str, HyperValue], msgspec.Meta(max_length=100)] = {}
    trainer: Trainer | None = None  # default: reference here, huggingface on Kubernetes
    command: Annotated[list[Arg], msgspec.Meta(min_length=1, max_length=64)] | None = None
    image: Image | None = None  # Kubernetes; default TRAINING_IMAGE
    resources: ResourcesIn = msgspec.field(default_factory=ResourcesIn)
    retry_policy: RetryPolicyIn = msgspec.field(default_factory=RetryPolicyIn)
    deadline_s: Annotated[int, msgspec.Meta(ge=10, le=30 * 86400)] | None = None  # default TRAINING_DEFAULT_DEADLINE_S
    experiment: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None  # default: the name
    owner_team: TeamName | None = None  # default: the caller's team, else the base model's, else "default"
    env: Annotated[dict[str, EnvValue], msgspec.Meta(max_length=50)] = {}
    evaluate_on_success: bool | None = None  # default TRAINING_EVALUATE_ON_SUCCESS
    register: Registration = msgspec.field(default_factory=Registration)


class DatasetRef(_Out, frozen=True, kw_only=True):
    dataset_id: str
    version: int


class Resources(_Out, frozen=True, kw_only=True):
    use_gpu: bool
    gpus_per_node: int  # 0 without GPUs
    nodes: int


class RetryPolicy(_Out, frozen=True, kw_only=True):
    max_retries: int
    backoff_s: float
    backoff_max_s: float
    non_retryable_exit_codes: list[int]


class JobSpec(_Out, frozen=True, kw_only=True):
    """A job as it runs: the accepted ``JobCreate`` with every default resolved (``training_jobs.spec``)."""

    name: str
    job_type: JobType
    base_model_id: str | None
    architecture: dict[str, Any]
    dataset: DatasetRef
    hyperparameters: dict[str, Any]
    trainer: Trainer | None  # None when ``command`` is set
    command: list[str] | None
    image: str
    resources: Resources
    retry_policy: RetryPolicy
    deadline_s: int
    experiment: str
    owner_team: str
    env: dict[str, str]
    evaluate_on_success: bool
    register: dict[str, Any]  # {name, tags, description}, name resolved


class AttemptSummary(_Out, frozen=True, kw_only=True):
    attempt: int
    status: str  # scheduled | running | succeeded | failed | cancelled
    scheduled_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    reason: str | None = None


class JobEvent(_Out, frozen=True, kw_only=True):
    at: datetime
    status: JobStatus | None  # the state entered; None for an event that changes none (registered, …)
    event: str
    attempt: int
    reason: str
    actor: str
    detail: dict[str, Any]


class JobLinks(_Out, frozen=True, kw_only=True):
    experiment: str  # metrics over steps, params, timeline
    logs: str


class Job(_Out, frozen=True, kw_only=True):
    id: str
    name: str
    job_type: JobType
    status: JobStatus
    runtime: str
    base_model_id: str | None
    dataset: DatasetRef
    architecture: dict[str, Any]
    hyperparameters: dict[str, Any]
    trainer: Trainer | None
    command: list[str] | None
    image: str
    resources: Resources
    retry_policy: RetryPolicy
    deadline_s: int
    experiment: str
    owner_team: str
    env: dict[str, str]
    evaluate_on_success: bool
    register: dict[str, Any]
    attempt: int  # the current (or last) attempt; 0 before the first start
    attempts: list[AttemptSummary]
    exit_code: int | None
    reason: str | None
    cancel_requested: bool
    result_model_id: str | None
    evaluation_run_id: str | None
    next_attempt_at: datetime | None
    deadline_at: datetime | None
    created_at: datetime
    created_by: str
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    links: JobLinks
    timeline: list[JobEvent] | None = None  # GET jobs/{jobId} only, oldest first


class JobLogs(_Out, frozen=True, kw_only=True):
    job_id: str
    attempt: int
    logs: str  # the runtime's tail of the attempt's output (rank 0 first)
