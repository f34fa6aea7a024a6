"""Spare GPUs for a surge pod, and the rollout strategy that follows: pure, over nodes and pods already read.

A ``RollingUpdate`` of a GPU Deployment (maxSurge 1, maxUnavailable 0) starts the new pod before the old one
stops. With no free GPU the new pod stays ``Pending`` while the old one holds its GPU: a deadlock that only a
human breaks. So the stable slot rolls only when some node has ``gpu_count`` unrequested GPUs, and is otherwise
``Recreate``d (a short outage of that slot instead of a stuck one). CPU-only slots always roll.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Literal

import msgspec
from kubernetes.utils import parse_quantity

from adapters.kubernetes.objects import Container, Pod, Quantity
from adapters.serving.kubernetes.objects import Node

__all__ = ["GpuCapacity", "Strategy", "StrategyChoice", "choose_strategy", "gpu_capacity"]

Strategy = Literal["RollingUpdate", "Recreate"]
_DONE_PHASES = frozenset({"Succeeded", "Failed"})

class GpuCapacity(msgspec.Struct, frozen=True, kw_only=True):
    """GPUs of schedulable nodes against what non-terminated pods request (pending ones included)."""

    allocatable: int
    requested: int
    largest_node_spare: int  # the most one node could still give a pod

    @property
    def spare(self) -> int:
        return max(self.allocatable - self.requested, 0)


class StrategyChoice(msgspec.Struct, frozen=True, kw_only=True):
    type: Strategy
    reason: str


def _count(quantity: Quantity | None) -> Decimal:
    if quantity is None or quantity == "":
        return Decimal(0)
    try:
        return Decimal(parse_quantity(quantity))
    except (ValueError, ArithmeticError):
        return Decimal(0)  # a node or pod we cannot read counts as none, never as a crash


def _container_gpus(container: Container, resource: str) -> Decimal:
    res = container.resources
    if res is None:
        return Decimal(0)
    # Extended resources may be given as limits only; the request then equals the limit.
    return _count((res.requests or {}).get(resource) or (res.limits or {}).get(resource))


def _pod_gpus(pod: Pod, resource: str) -> Decimal:
    """Effective request: containers' sum or the largest init container, as the scheduler counts it."""
    regular = sum((_container_gpus(c, resource) for c in pod.spec.containers), Decimal(0))
    init = max((_container_gpus(c, resource) for c in pod.spec.init_containers or []), default=Decimal(0))
    return max(regular, init)


def gpu_capacity(nodes: Iterable[Node], pods: Iterable[Pod], resource: str) -> GpuCapacity:
    per_node: dict[str, Decimal] = {}
    for node in nodes:
        if not node.metadata.name or node.spec.unschedulable:
            continue  # cordoned: no new pod lands there
        per_node[node.metadata.name] = _count((node.status.allocatable or {}).get(resource))
    allocatable = sum(per_node.values(), Decimal(0))
    requested = Decimal(0)
    unbound = Decimal(0)
    for pod in pods:
        if pod.status.phase in _DONE_PHASES:
            continue
        gpus = _pod_gpus(pod, resource)
        if not gpus:
            continue
        requested += gpus
        if pod.spec.node_name in per_node:
            per_node[pod.spec.node_name] -= gpus
        else:
            unbound += gpus  # pending pods will take GPUs somewhere first
    largest = max(per_node.values(), default=Decimal(0)) - unbound
    return GpuCapacity(allocatable=int(allocatable), requested=int(requested), largest_node_spare=max(int(largest), 0))


def choose_strategy(gpu_count: int, capacity: GpuCapacity | None) -> StrategyChoice:
    """``capacity`` None: the cluster could not be read (RBAC, outage), so assume no spare GPU."""
    if gpu_count <= 0:
        return StrategyChoice(type="RollingUpdate", reason="CPU-only: a surge pod needs no GPU")
    if capacity is None:
        return StrategyChoice(type="Recreate", reason="GPU capacity unknown (nodes or pods not readable)")
    if capacity.spare >= gpu_count and capacity.largest_node_spare >= gpu_count:
        return StrategyChoice(type="RollingUpdate", reason=(
            f"{capacity.spare} spare GPUs ({capacity.largest_node_spare} on one node) fit a surge pod of {gpu_count}"))
    return StrategyChoice(type="Recreate", reason=(
        f"no room for a surge pod of {gpu_count} GPUs: {capacity.spare} spare in the cluster, "
        f"{capacity.largest_node_spare} on the best node"))
