"""What the runtime reads back from the API server, decoded by msgspec straight from JSON into the few fields it
uses. The client's generated models cost about a millisecond of GIL-holding CPU per object to build; status is
read every few seconds per slot and capacity lists every pod of the cluster, all in the gateway's process, so
reads skip them (``_preload_content=False``). Manifests are still built as the client's typed models.
Unknown fields are ignored; absent ones take the defaults Kubernetes would imply.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "Condition", "ContainerStatus", "Deployment", "DeploymentList", "Node", "NodeList", "Pod", "PodList", "Quantity",
]

Quantity = str | int | float


class _Struct(msgspec.Struct, rename="camel"):
    pass


class Meta(_Struct):
    name: str = ""
    generation: int | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class Condition(_Struct):
    type: str = ""
    status: str = ""
    reason: str | None = None
    message: str | None = None


# -- pods ---------------------------------------------------------------------------------------------------


class Resources(_Struct):
    requests: dict[str, Quantity] | None = None
    limits: dict[str, Quantity] | None = None


class Container(_Struct):
    name: str = ""
    resources: Resources | None = None


class PodSpec(_Struct):
    node_name: str | None = None
    containers: list[Container] = []
    init_containers: list[Container] | None = None


class Waiting(_Struct):
    reason: str | None = None
    message: str | None = None


class Terminated(_Struct):
    reason: str | None = None
    exit_code: int | None = None
    message: str | None = None


class ContainerState(_Struct):
    waiting: Waiting | None = None
    terminated: Terminated | None = None


class ContainerStatus(_Struct):
    name: str = ""
    ready: bool = False
    restart_count: int = 0
    state: ContainerState | None = None
    last_state: ContainerState | None = None


class PodStatus(_Struct):
    phase: str | None = None
    conditions: list[Condition] | None = None
    container_statuses: list[ContainerStatus] | None = None
    init_container_statuses: list[ContainerStatus] | None = None


class Pod(_Struct):
    metadata: Meta = msgspec.field(default_factory=Meta)
    spec: PodSpec = msgspec.field(default_factory=PodSpec)
    status: PodStatus = msgspec.field(default_factory=PodStatus)


class PodList(_Struct):
    items: list[Pod] = []


# -- nodes --------------------------------------------------------------------------------------------------


class NodeSpec(_Struct):
    unschedulable: bool | None = None


class NodeStatus(_Struct):
    allocatable: dict[str, Quantity] | None = None


class Node(_Struct):
    metadata: Meta = msgspec.field(default_factory=Meta)
    spec: NodeSpec = msgspec.field(default_factory=NodeSpec)
    status: NodeStatus = msgspec.field(default_factory=NodeStatus)


class NodeList(_Struct):
    items: list[Node] = []


# -- deployments --------------------------------------------------------------------------------------------


class Strategy(_Struct):
    type: str | None = None


class Template(_Struct):
    metadata: Meta = msgspec.field(default_factory=Meta)


class DeploymentSpec(_Struct):
    replicas: int | None = None
    strategy: Strategy | None = None
    template: Template = msgspec.field(default_factory=Template)


class DeploymentStatus(_Struct):
    replicas: int = 0
    ready_replicas: int = 0
    updated_replicas: int = 0
    available_replicas: int = 0
    observed_generation: int | None = None
    conditions: list[Condition] | None = None


class Deployment(_Struct):
    metadata: Meta = msgspec.field(default_factory=Meta)
    spec: DeploymentSpec = msgspec.field(default_factory=DeploymentSpec)
    status: DeploymentStatus = msgspec.field(default_factory=DeploymentStatus)


class DeploymentList(_Struct):
    items: list[Deployment] = []
