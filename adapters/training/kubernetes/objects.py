"""What the training runtime reads back from the API server, decoded by msgspec straight from JSON into the few
fields it uses (the client's generated models cost about a millisecond of GIL-holding CPU per object, in the
gateway's process). Unknown fields are ignored; absent ones take the defaults Kubernetes would imply.

Jobs and the Kubeflow custom resources share one shape here: metadata, and a status with conditions and
start/completion times (a ``batch/v1`` Job, a ``TrainJob`` and a ``PyTorchJob`` all report that way).
"""

from __future__ import annotations

import msgspec

__all__ = [
    "Condition", "ContainerStatus", "Listed", "ListedItem", "Pod", "PodList", "Workload", "WorkloadList",
]


class _Struct(msgspec.Struct, rename="camel"):
    pass


class Meta(_Struct):
    name: str = ""
    uid: str | None = None
    resource_version: str | None = None
    deletion_timestamp: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class Condition(_Struct):
    type: str = ""
    status: str = ""
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None


# -- pods ---------------------------------------------------------------------------------------------------


class Container(_Struct):
    name: str = ""


class PodSpec(_Struct):
    node_name: str | None = None
    containers: list[Container] = []


class Waiting(_Struct):
    reason: str | None = None
    message: str | None = None


class Running(_Struct):
    started_at: str | None = None


class Terminated(_Struct):
    reason: str | None = None
    exit_code: int | None = None
    message: str | None = None
    finished_at: str | None = None


class ContainerState(_Struct):
    waiting: Waiting | None = None
    running: Running | None = None
    terminated: Terminated | None = None


class ContainerStatus(_Struct):
    name: str = ""
    ready: bool = False
    restart_count: int = 0
    state: ContainerState | None = None


class PodStatus(_Struct):
    phase: str | None = None
    reason: str | None = None  # Evicted, NodeLost, … (the whole pod's, not a container's)
    message: str | None = None
    start_time: str | None = None
    conditions: list[Condition] | None = None
    container_statuses: list[ContainerStatus] | None = None
    init_container_statuses: list[ContainerStatus] | None = None


class Pod(_Struct):
    metadata: Meta = msgspec.field(default_factory=Meta)
    spec: PodSpec = msgspec.field(default_factory=PodSpec)
    status: PodStatus = msgspec.field(default_factory=PodStatus)


class PodList(_Struct):
    items: list[Pod] = []


# -- workloads: Job, TrainJob, PyTorchJob --------------------------------------------------------------------


class WorkloadStatus(_Struct):
    start_time: str | None = None
    completion_time: str | None = None
    active: int | None = None
    succeeded: int | None = None
    failed: int | None = None
    conditions: list[Condition] | None = None


class Workload(_Struct):
    kind: str = ""
    metadata: Meta = msgspec.field(default_factory=Meta)
    status: WorkloadStatus = msgspec.field(default_factory=WorkloadStatus)


class WorkloadList(_Struct):
    items: list[Workload] = []


# -- the relist fallback: only what tells a change ------------------------------------------------------------


class ListedItem(_Struct):
    metadata: Meta = msgspec.field(default_factory=Meta)
    status: msgspec.Raw = msgspec.Raw(b"null")


class Listed(_Struct):
    items: list[ListedItem] = []
