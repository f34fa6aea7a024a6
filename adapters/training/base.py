"""The training runtime protocol: what the training module asks of Kubernetes or of this machine.

A job runs as numbered **attempts** (1, 2, … one per retry). Each attempt is one unit on the runtime: a
``batch/v1`` Job (an indexed Job, a Kubeflow ``TrainJob`` or ``PyTorchJob`` for ``nodes > 1``) on Kubernetes,
a supervised process group here. The runtime never retries by itself (``backoffLimit: 0``): retries, backoff
and the deadline's bookkeeping are the training module's, so every attempt is visible on the timeline.

* ``render(spec)`` is pure: the manifests ``submit`` would send (kept on the attempt; secrets by reference).
* ``submit(spec)`` starts the attempt and returns at once (idempotent: an attempt that already exists is left
  as is). Raises ``RuntimeFailure`` when the runtime refused (``retryable`` when it was unreachable).
* ``status(job_id, attempt)`` reads where the attempt is (``AttemptStatus``); ``absent`` when nothing exists.
* ``watch()`` yields an ``AttemptStatus`` whenever an attempt changes (Kubernetes: a watch on Jobs and pods
  with the ``llmops.io/training-job`` label; here: the supervisor's state files). It ends when the runtime is
  closed; the caller re-reads ``status`` of what it tracks after a gap, so a missed event costs one poll.
* ``active()`` lists attempts the runtime still has (running or finished but not cleaned up), so a control
  plane that restarted finds its jobs again instead of orphaning them.
* ``cancel(job_id, attempt)`` stops the attempt (SIGTERM, then SIGKILL after ``grace_s``; Kubernetes: delete with
  foreground propagation). Already gone is fine.
* ``logs(job_id, attempt, tail_lines)`` returns the attempt's recent output (rank 0 first for several nodes).
* ``cleanup(job_id, attempt)`` removes what a finished attempt left (its Job and pods, its state directory).

Names: ``job_name`` is a DNS-1035 label of at most 40 characters (validated by the training module), so
runtimes derive resource names from it (``{job_name}-a{attempt}``) without further checks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol

import msgspec

__all__ = [
    "AttemptPhase",
    "AttemptRef",
    "AttemptStatus",
    "LaunchSpec",
    "RuntimeFailure",
    "TrainingResources",
    "TrainingRuntime",
]

AttemptPhase = Literal["absent", "pending", "running", "succeeded", "failed"]


class RuntimeFailure(Exception):
    """The runtime refused or could not be reached; ``reason`` is short and safe to show (no secrets)."""

    def __init__(self, reason: str, *, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class TrainingResources(msgspec.Struct, frozen=True, kw_only=True):
    """Per node (pod or process group): Kubernetes quantities; ``gpus_per_node`` 0 means CPU only."""

    nodes: int = 1
    gpus_per_node: int = 0
    gpu_resource: str = "nvidia.com/gpu"
    cpu_request: str = "1"
    cpu_limit: str = "2"
    memory_request: str = "2Gi"
    memory_limit: str = "4Gi"


class LaunchSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt of one job: everything a runtime needs. ``env`` holds no secret: the job token travels in
    ``secret_env`` (a Kubernetes Secret the pods read by reference; the process environment here), which
    ``render`` never writes out."""

    job_id: str
    job_name: str  # DNS-1035 label, ≤ 40 characters
    attempt: int  # 1, 2, …
    job_type: Literal["finetune", "from_scratch", "pretrain", "distributed"]
    image: str  # Kubernetes only; the local runtime runs ``command`` with this machine's Python
    command: list[str]  # argv; the reference trainer: [python, -m, adapters.training.trainer]
    env: dict[str, str] = {}  # contract.ENV_* and the job's own variables
    secret_env: dict[str, str] = {}  # contract.ENV_TOKEN, MLFLOW_TRACKING_TOKEN
    resources: TrainingResources = TrainingResources()
    deadline_s: float | None = None  # wall-clock limit of this attempt (activeDeadlineSeconds; killed here)
    labels: dict[str, str] = {}


class AttemptRef(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    attempt: int


class AttemptStatus(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    attempt: int
    phase: AttemptPhase
    exit_code: int | None = None  # the failing container's or process's (rank 0 first); None when unknown
    reason: str | None = None  # machine-readable: ImagePullBackOff, OOMKilled, DeadlineExceeded, Unschedulable,
    #                           ProcessExited, Evicted, NodeLost, Cancelled, …
    message: str = ""  # for people; never a secret
    started_at: float | None = None  # epoch seconds
    finished_at: float | None = None
    details: dict[str, Any] = {}  # runtime specifics: pod phases, node names, pids, …


class TrainingRuntime(Protocol):
    name: Literal["kubernetes", "local"]

    def render(self, spec: LaunchSpec) -> list[dict[str, Any]]: ...

    async def submit(self, spec: LaunchSpec) -> list[dict[str, Any]]: ...

    async def status(self, job_id: str, attempt: int) -> AttemptStatus: ...

    def watch(self) -> AsyncIterator[AttemptStatus]: ...

    async def active(self) -> list[AttemptRef]: ...

    async def cancel(self, job_id: str, attempt: int, *, grace_s: float = 10.0) -> None: ...

    async def logs(self, job_id: str, attempt: int, *, tail_lines: int = 200) -> str: ...

    async def cleanup(self, job_id: str, attempt: int) -> None: ...

    async def aclose(self) -> None: ...
