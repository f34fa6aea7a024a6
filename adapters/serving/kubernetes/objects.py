"""The kinds only the serving runtime reads back (nodes for GPU capacity, Deployments), decoded by msgspec like
the shared readers of metadata, conditions and pods in ``adapters.kubernetes.objects`` (see there for why).
"""

from __future__ import annotations

import msgspec

from adapters.kubernetes.objects import Condition, KubeList, KubeStruct, Meta, Quantity

__all__ = ["Deployment", "DeploymentList", "Node", "NodeList"]


# -- nodes --------------------------------------------------------------------------------------------------


class NodeSpec(KubeStruct):
    unschedulable: bool | None = None


class NodeStatus(KubeStruct):
    allocatable: dict[str, Quantity] | None = None


class Node(KubeStruct):
    metadata: Meta = msgspec.field(default_factory=Meta)
    spec: NodeSpec = msgspec.field(default_factory=NodeSpec)
    status: NodeStatus = msgspec.field(default_factory=NodeStatus)


NodeList = KubeList[Node]


# -- deployments --------------------------------------------------------------------------------------------


class Strategy(KubeStruct):
    type: str | None = None


class Template(KubeStruct):
    metadata: Meta = msgspec.field(default_factory=Meta)


class DeploymentSpec(KubeStruct):
    replicas: int | None = None
    strategy: Strategy | None = None
    template: Template = msgspec.field(default_factory=Template)


class DeploymentStatus(KubeStruct):
    replicas: int = 0
    ready_replicas: int = 0
    updated_replicas: int = 0
    available_replicas: int = 0
    observed_generation: int | None = None
    conditions: list[Condition] | None = None


class Deployment(KubeStruct):
    metadata: Meta = msgspec.field(default_factory=Meta)
    spec: DeploymentSpec = msgspec.field(default_factory=DeploymentSpec)
    status: DeploymentStatus = msgspec.field(default_factory=DeploymentStatus)


DeploymentList = KubeList[Deployment]
