"""The serving runtime protocol: what the serving module asks of Kubernetes, of this machine, or of nothing.

An endpoint runs in at most two **slots** at once: ``stable`` (the revision taking traffic) and, during a
canary, ``canary`` (the new revision taking a share). Each slot is one unit on the runtime (a Deployment and
Service on Kubernetes, a process here) with its own base URL; the gateway splits traffic between the slots'
URLs by weight, so a canary or a rollback is a routing change, judged on what the gateway measures.

* ``apply(spec, slot)`` creates or updates the slot to run ``spec`` (idempotent; a Kubernetes update of the
  stable slot is a rolling update, or ``Recreate`` when no spare GPU exists for a surge pod). It returns at
  once, having started the work; ``status`` follows it. Raises ``RuntimeFailure`` when the runtime refused.
* ``render(spec, slot)`` is pure: the manifests ``apply`` would send (kept on the revision, immutable).
* ``status(endpoint_id, slot)`` reads where the slot is: ``progressing`` while pods start or models load,
  ``ready`` when every wanted replica answers ``/health`` and ``/v1/models``, ``failed`` with a ``reason``
  (``ImagePullBackOff``, ``ErrImagePull``, ``CrashLoopBackOff``, ``ProcessExited``, …), ``scaled_to_zero``,
  ``absent`` when nothing exists.
* ``delete(endpoint_id, slot=None)`` removes a slot's resources, or the endpoint's every resource. Already
  gone is fine; what could not be deleted is reported, not raised, so the caller can report a partial delete.

Names: ``endpoint_name`` is DNS-1035 safe (validated by the serving module), so runtimes use it as is.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import msgspec

__all__ = [
    "Autoscaling",
    "DeleteReport",
    "DeploymentSpec",
    "Phase",
    "Resources",
    "RuntimeFailure",
    "RuntimeStatus",
    "ServingRuntime",
    "Slot",
]

Slot = Literal["stable", "canary"]
Phase = Literal["absent", "progressing", "ready", "failed", "scaled_to_zero"]


class RuntimeFailure(Exception):
    """The runtime refused or could not be reached; ``reason`` is short and safe to show (no secrets)."""

    def __init__(self, reason: str, *, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class Resources(msgspec.Struct, frozen=True, kw_only=True):
    """Kubernetes quantities (``"4"``, ``"500m"``, ``"16Gi"``); ``gpu_count`` 0 means CPU only."""

    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    gpu_count: int = 0
    gpu_resource: str = "nvidia.com/gpu"


class Autoscaling(msgspec.Struct, frozen=True, kw_only=True):
    """Replicas between ``min_replicas`` (0: may scale to zero, KEDA only) and ``max_replicas``; scale out when
    ``vllm:num_requests_waiting`` per replica exceeds ``target_queue_length``."""

    min_replicas: int = 1
    max_replicas: int = 1
    target_queue_length: float = 5.0
    scale_down_delay_s: int = 300


class DeploymentSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One revision of one endpoint, everything a runtime needs (no secret values: references only)."""

    endpoint_id: str
    endpoint_name: str  # DNS-1035 label, ≤ 40 characters
    revision: int
    environment: Literal["DEV", "STG", "PROD"]
    model_id: str
    model_name: str
    model_version: int
    model_format: str | None = None
    model_files: list[str] = []  # object-store keys of the model's files
    model_uri: str  # what the server loads: a Hugging Face id, or a path the runtime fills from model_files
    served_model_name: str  # the name the server answers to; the gateway's target model
    image: str
    use_gpu: bool
    resources: Resources
    autoscaling: Autoscaling = Autoscaling()
    vllm_args: list[str] = []
    labels: dict[str, str] = {}


class RuntimeStatus(msgspec.Struct, frozen=True, kw_only=True):
    phase: Phase
    reason: str | None = None  # machine-readable: ImagePullBackOff, CrashLoopBackOff, ProcessExited, …
    message: str = ""  # for people; never a secret
    ready_replicas: int = 0
    desired_replicas: int = 0
    base_url: str | None = None  # OpenAI-compatible root ending in /v1, once known
    revision: int | None = None  # the revision this slot runs (or is rolling out)
    details: dict[str, Any] = {}  # runtime specifics: autoscaler kind, pod phases, restart counts, pid, …


class DeleteReport(msgspec.Struct, frozen=True, kw_only=True):
    deleted: list[str] = []  # "Deployment/llm-foo", "process 1234", …
    already_gone: list[str] = []
    failed: dict[str, str] = {}  # resource -> why

    @property
    def complete(self) -> bool:
        return not self.failed


class ServingRuntime(Protocol):
    name: Literal["kubernetes", "local"]

    def render(self, spec: DeploymentSpec, slot: Slot) -> list[dict[str, Any]]: ...

    async def apply(self, spec: DeploymentSpec, slot: Slot) -> list[dict[str, Any]]: ...

    async def status(self, endpoint_id: str, endpoint_name: str, slot: Slot) -> RuntimeStatus: ...

    async def delete(self, endpoint_id: str, endpoint_name: str, slot: Slot | None = None) -> DeleteReport: ...

    async def aclose(self) -> None: ...
