"""Wire types of the serving module (camelCase JSON; unknown fields rejected on input).

The contract shared by the REST handlers, ``ServingClient`` and the console. Paths, under
``/llm-ops/v1/serving/``:

=======  ===================================  =====================  ==========================================
method   path                                 body                   answer ``data``
=======  ===================================  =====================  ==========================================
POST     endpoints                            ``EndpointCreate``     ``Endpoint`` (201)
GET      endpoints?environment&modelId&status ―                      ``Page`` of ``Endpoint``
GET      endpoints/{endpointId}               ―                      ``Endpoint``
GET      endpoints/{endpointId}/revisions     ―                      ``Page`` of ``Revision`` (newest first)
POST     endpoints/{endpointId}/redeploy      ``Redeploy``           ``Endpoint`` (a new revision; a canary
                                                                     when ``canaryPercent`` is set)
POST     endpoints/{endpointId}/traffic       ``TrafficChange``      ``Endpoint`` (canary share; 100 makes the
                                                                     canary stable, 0 drops it)
POST     endpoints/{endpointId}/rollback      ``Rollback``           ``Endpoint``
POST     endpoints/{endpointId}/promote       ``Promote``            ``Endpoint``
DELETE   endpoints/{endpointId}               ―                      ``DeleteResult`` (502 with it when partial)
=======  ===================================  =====================  ==========================================

Roles: reads are ``viewer``; deploy, redeploy, traffic, rollback and delete ``operator``; promote to STG
``operator``, to PROD ``admin``; a gate override ``admin`` with a ``reason``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "AutoscalingPolicy",
    "DeleteResult",
    "Endpoint",
    "EndpointCreate",
    "EndpointStatus",
    "Environment",
    "Promote",
    "Redeploy",
    "Revision",
    "RevisionState",
    "Rollback",
    "RuntimeKind",
    "SlotHealth",
    "TrafficChange",
]

Environment = Literal["DEV", "STG", "PROD"]
RuntimeKind = Literal["kubernetes", "local", "external"]
# deploying: no slot ready yet; ready: serving; degraded: serving, but a slot is failing or not all replicas are
# ready; failed: nothing serves (reason says why); scaled_to_zero: no replica, requests wait at the gateway;
# deleting: a delete did not finish (retry DELETE).
EndpointStatus = Literal["deploying", "ready", "degraded", "failed", "scaled_to_zero", "deleting"]
# active: the stable slot runs it; canary: the canary slot runs it; superseded: an older active one;
# rolled_back: a canary or active revision traffic was taken away from; failed: never became ready.
RevisionState = Literal["active", "canary", "superseded", "rolled_back", "failed"]

EndpointName = Annotated[str, msgspec.Meta(
    min_length=1, max_length=40, pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$",
    description="DNS-1035 label (lowercase letters, digits, '-'); unique among endpoints; names its resources")]
RouteName = Annotated[str, msgspec.Meta(
    min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$",
    description="the gateway route (the `model` clients send); unique among endpoints; default: the name")]
ResourceId = Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
Image = Annotated[str, msgspec.Meta(
    min_length=1, max_length=300, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$",
    description="container image reference (registry/name:tag or @sha256:…)")]
VllmArg = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
Reason = Annotated[str, msgspec.Meta(max_length=1000)]
_Replicas = Annotated[int, msgspec.Meta(ge=0, le=100)]


class _In(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    pass


class _Out(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    pass


class AutoscalingPolicy(_In, frozen=True):
    """Scale on vLLM's queue (``vllm:num_requests_waiting`` per replica), KEDA when present, else an HPA."""

    target_queue_length: Annotated[float, msgspec.Meta(gt=0, le=1000)] = 5.0
    scale_down_delay_s: Annotated[int, msgspec.Meta(ge=0, le=86400)] = 300


class EndpointCreate(_In, frozen=True):
    name: EndpointName
    model_id: ResourceId
    environment: Environment = "DEV"
    route: RouteName | None = None
    serving_runtime_image: Image | None = None  # default: SERVING_DEFAULT_IMAGE / SERVING_CPU_ONLY_IMAGE
    use_gpu: bool | None = None  # default: SERVING_DEFAULT_USE_GPU
    gpu_count: Annotated[int, msgspec.Meta(ge=1, le=16)] | None = None  # default: SERVING_GPU_COUNT
    min_replicas: _Replicas = 1  # 0: scale to zero (requests wait at the gateway up to queueTimeoutS)
    max_replicas: Annotated[int, msgspec.Meta(ge=1, le=100)] = 1
    autoscaling: AutoscalingPolicy = msgspec.field(default_factory=AutoscalingPolicy)
    vllm_args: Annotated[list[VllmArg], msgspec.Meta(max_length=64)] = []  # not --host/--port/--model
    queue_timeout_s: Annotated[float, msgspec.Meta(ge=0, le=600)] | None = None  # default: SERVING_QUEUE_TIMEOUT_S


class Redeploy(_In, frozen=True):
    """A new revision from the model's current version; unset fields keep the current revision's values."""

    use_gpu: bool | None = None
    serving_runtime_image: Image | None = None
    gpu_count: Annotated[int, msgspec.Meta(ge=1, le=16)] | None = None
    min_replicas: _Replicas | None = None
    max_replicas: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None
    vllm_args: Annotated[list[VllmArg], msgspec.Meta(max_length=64)] | None = None
    canary_percent: Annotated[int, msgspec.Meta(ge=1, le=99)] | None = None  # unset: replace the stable revision
    reason: Reason = ""


class TrafficChange(_In, frozen=True):
    canary_percent: Annotated[int, msgspec.Meta(ge=0, le=100)]
    reason: Reason = ""


class Rollback(_In, frozen=True):
    """To ``revision``, or (unset) the previous active revision; with a canary running, drops the canary."""

    revision: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)] | None = None
    reason: Reason = ""


class Promote(_In, frozen=True):
    """DEV → STG → PROD, one step at a time. ``override`` (admin, with a ``reason``) passes a failed gate."""

    environment: Literal["STG", "PROD"]
    override: bool = False
    reason: Reason = ""


class SlotHealth(_Out, frozen=True):
    revision: int
    phase: str  # adapters.serving.Phase
    reason: str | None
    message: str
    ready_replicas: int
    desired_replicas: int
    weight_percent: int
    base_url: str | None = None  # the slot's OpenAI-compatible root, once the runtime knows it
    details: dict[str, Any] = {}  # runtime specifics (autoscaler, strategy, pid, restarts, …); never a secret


class Endpoint(_Out, frozen=True):
    id: str
    name: str
    route: str
    environment: Environment
    model_id: str
    model: dict[str, Any]  # bound model metadata: name, type, status, version, format, provider kind
    runtime: RuntimeKind
    runtime_image: str | None  # None for external models
    use_gpu: bool
    gpu_count: int
    min_replicas: int
    max_replicas: int
    autoscaling: AutoscalingPolicy
    vllm_args: list[str]
    queue_timeout_s: float
    status: EndpointStatus
    status_reason: str | None
    current_revision: int
    canary_revision: int | None
    traffic_split: dict[str, int]  # revision (as a string) -> percent
    slots: dict[str, SlotHealth]  # "stable" / "canary"
    replicas: dict[str, int]  # ready, desired (all slots)
    checked_at: datetime | None
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str


class Revision(_Out, frozen=True):
    endpoint_id: str
    revision: int
    state: RevisionState
    model_id: str
    model_version: int
    image: str | None
    use_gpu: bool
    gpu_count: int
    resources: dict[str, Any]
    min_replicas: int
    max_replicas: int
    vllm_args: list[str]
    manifests: list[dict[str, Any]]
    reason: str
    created_at: datetime
    created_by: str


class DeleteResult(_Out, frozen=True):
    endpoint_id: str
    deleted: bool  # the record is gone (every resource deleted or already gone)
    resources_deleted: list[str]
    resources_already_gone: list[str]
    resources_failed: dict[str, str]
