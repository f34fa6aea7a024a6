"""What the runtimes read back from the API server, decoded by msgspec straight from JSON into the few fields they
use. The client's generated models cost about a millisecond of GIL-holding CPU per object to build, in the
gateway's process (status is read every few seconds, capacity lists every pod of the cluster), so reads skip them
(``_preload_content=False``, see ``client.read``). Manifests are still built as the client's typed models.
Unknown fields are ignored; absent ones take the defaults Kubernetes would imply.

Here: what every runtime reads (metadata, conditions, pods, lists). Each runtime keeps the kinds only it reads next
to it (serving: nodes, Deployments; training: Jobs and the Kubeflow kinds), built on ``KubeStruct`` and ``Meta``,
their lists as ``KubeList[kind]``.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import msgspec

__all__ = [
    "Condition",
    "Container",
    "ContainerState",
    "ContainerStatus",
    "KubeList",
    "KubeStruct",
    "Meta",
    "Pod",
    "PodList",
    "PodSpec",
    "PodStatus",
    "Quantity",
    "Resources",
    "Running",
    "Terminated",
    "Waiting",
]

T = TypeVar("T")
Quantity = str | int | float


class KubeStruct(msgspec.Struct, rename="camel"):
    """The base of every reader: Kubernetes' JSON is camelCase."""


class KubeList(KubeStruct, Generic[T]):
    """A list's answer (``PodList``, ``NodeList``, …): only its items are read."""

    items: list[T] = []


class Meta(KubeStruct):
    name: str = ""
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    deletion_timestamp: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class Condition(KubeStruct):
    type: str = ""
    status: str = ""
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None


# -- pods ---------------------------------------------------------------------------------------------------


class Resources(KubeStruct):
    requests: dict[str, Quantity] | None = None
    limits: dict[str, Quantity] | None = None


class Container(KubeStruct):
    name: str = ""
    resources: Resources | None = None


class PodSpec(KubeStruct):
    node_name: str | None = None
    containers: list[Container] = []
    init_containers: list[Container] | None = None


class Waiting(KubeStruct):
    reason: str | None = None
    message: str | None = None


class Running(KubeStruct):
    started_at: str | None = None


class Terminated(KubeStruct):
    reason: str | None = None
    exit_code: int | None = None
    message: str | None = None
    finished_at: str | None = None


class ContainerState(KubeStruct):
    waiting: Waiting | None = None
    running: Running | None = None
    terminated: Terminated | None = None


class ContainerStatus(KubeStruct):
    name: str = ""
    ready: bool = False
    restart_count: int = 0
    state: ContainerState | None = None
    last_state: ContainerState | None = None


class PodStatus(KubeStruct):
    phase: str | None = None
    reason: str | None = None  # Evicted, NodeLost, … (the whole pod's, not a container's)
    message: str | None = None
    start_time: str | None = None
    conditions: list[Condition] | None = None
    container_statuses: list[ContainerStatus] | None = None
    init_container_statuses: list[ContainerStatus] | None = None


class Pod(KubeStruct):
    metadata: Meta = msgspec.field(default_factory=Meta)
    spec: PodSpec = msgspec.field(default_factory=PodSpec)
    status: PodStatus = msgspec.field(default_factory=PodStatus)


PodList = KubeList[Pod]
