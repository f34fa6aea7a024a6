"""Spare GPUs for a surge pod, and RollingUpdate vs Recreate (pure, over nodes and pods as the API lists them)."""

from __future__ import annotations

from typing import Any

import msgspec

from adapters.kubernetes.objects import PodList
from adapters.serving.kubernetes.capacity import GpuCapacity, choose_strategy, gpu_capacity
from adapters.serving.kubernetes.objects import NodeList

GPU = "nvidia.com/gpu"


def node(name: str, gpus: int, *, cordoned: bool = False) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"zone": "a"}},
            "spec": {"unschedulable": cordoned, "taints": []},
            "status": {"allocatable": {"cpu": "32", "memory": "256Gi", **({GPU: str(gpus)} if gpus else {})},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def pod(gpus: int, *, on: str | None, phase: str = "Running", limits_only: bool = False,
        init_gpus: int = 0) -> dict[str, Any]:
    res = {GPU: str(gpus), "cpu": "500m"}
    resources = {"limits": res} if limits_only else {"requests": res, "limits": res}
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "i", "resources": resources}]}
    if on is not None:
        spec["nodeName"] = on
    if init_gpus:
        spec["initContainers"] = [{"name": "init", "image": "i", "resources": {"limits": {GPU: str(init_gpus)}}}]
    return {"metadata": {"name": "p", "namespace": "x"}, "spec": spec, "status": {"phase": phase}}


def capacity(nodes: list[dict[str, Any]], pods: list[dict[str, Any]]) -> GpuCapacity:
    """Through the same JSON decoding the runtime uses on the API's answers."""
    node_list = msgspec.json.decode(msgspec.json.encode({"kind": "NodeList", "items": nodes}), type=NodeList)
    pod_list = msgspec.json.decode(msgspec.json.encode({"kind": "PodList", "items": pods}), type=PodList)
    return gpu_capacity(node_list.items, pod_list.items, GPU)


def test_per_node_spare_decides_not_the_cluster_sum() -> None:
    cap = capacity([node("a", 4), node("b", 4)], [pod(3, on="a"), pod(3, on="b")])
    assert (cap.allocatable, cap.requested, cap.spare, cap.largest_node_spare) == (8, 6, 2, 1)
    assert choose_strategy(1, cap).type == "RollingUpdate"
    # Two spare GPUs, one per node: a 2-GPU surge pod fits nowhere.
    choice = choose_strategy(2, cap)
    assert choice.type == "Recreate" and "2 spare in the cluster" in choice.reason


def test_cordoned_nodes_and_finished_pods() -> None:
    nodes = [node("a", 2), node("cordoned", 8, cordoned=True), node("cpu", 0)]
    pods = [pod(2, on="a", phase="Succeeded"), pod(1, on="a", phase="Failed"), pod(1, on="a", limits_only=True)]
    cap = capacity(nodes, pods)
    assert (cap.allocatable, cap.requested, cap.largest_node_spare) == (2, 1, 1)


def test_pending_pods_take_their_gpus_first() -> None:
    cap = capacity([node("a", 4)], [pod(1, on="a"), pod(2, on=None, phase="Pending")])
    assert (cap.spare, cap.largest_node_spare) == (1, 1)
    assert choose_strategy(2, cap).type == "Recreate"


def test_init_containers_count_as_the_scheduler_counts_them() -> None:
    cap = capacity([node("a", 4)], [pod(1, on="a", init_gpus=3)])
    assert cap.requested == 3 and cap.largest_node_spare == 1


def test_unreadable_quantities_count_as_none() -> None:
    nodes = [node("a", 2)]
    nodes[0]["status"]["allocatable"][GPU] = "lots"
    assert capacity(nodes, []).allocatable == 0


def test_unknown_capacity_and_cpu_only() -> None:
    assert choose_strategy(1, None).type == "Recreate"
    assert choose_strategy(0, None).type == "RollingUpdate"
    assert choose_strategy(0, GpuCapacity(allocatable=0, requested=0, largest_node_spare=0)).type == "RollingUpdate"
    assert choose_strategy(1, GpuCapacity(allocatable=0, requested=0, largest_node_spare=0)).type == "Recreate"
