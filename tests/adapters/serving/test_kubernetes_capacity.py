"""Spare GPUs for a surge pod, and RollingUpdate vs Recreate (pure)."""

from __future__ import annotations

from kubernetes import client

from adapters.serving.kubernetes.capacity import GpuCapacity, choose_strategy, gpu_capacity

GPU = "nvidia.com/gpu"


def node(name: str, gpus: int, *, cordoned: bool = False) -> client.V1Node:
    return client.V1Node(metadata=client.V1ObjectMeta(name=name), spec=client.V1NodeSpec(unschedulable=cordoned),
                         status=client.V1NodeStatus(allocatable={"cpu": "32", GPU: str(gpus)} if gpus else {}))


def pod(gpus: int, *, on: str | None, phase: str = "Running", limits_only: bool = False,
        init_gpus: int = 0) -> client.V1Pod:
    res = {GPU: str(gpus)}
    resources = client.V1ResourceRequirements(limits=res) if limits_only else \
        client.V1ResourceRequirements(requests=res, limits=res)
    init = [client.V1Container(name="init", resources=client.V1ResourceRequirements(
        limits={GPU: str(init_gpus)}))] if init_gpus else None
    containers = [client.V1Container(name="c", resources=resources)]
    return client.V1Pod(metadata=client.V1ObjectMeta(name="p"),
                        spec=client.V1PodSpec(node_name=on, containers=containers, init_containers=init),
                        status=client.V1PodStatus(phase=phase))


def test_per_node_spare_decides_not_the_cluster_sum() -> None:
    cap = gpu_capacity([node("a", 4), node("b", 4)], [pod(3, on="a"), pod(3, on="b")], GPU)
    assert (cap.allocatable, cap.requested, cap.spare, cap.largest_node_spare) == (8, 6, 2, 1)
    assert choose_strategy(1, cap).type == "RollingUpdate"
    # Two spare GPUs, one per node: a 2-GPU surge pod fits nowhere.
    choice = choose_strategy(2, cap)
    assert choice.type == "Recreate" and "2 spare in the cluster" in choice.reason


def test_cordoned_nodes_and_finished_pods() -> None:
    nodes = [node("a", 2), node("cordoned", 8, cordoned=True), node("cpu", 0)]
    pods = [pod(2, on="a", phase="Succeeded"), pod(1, on="a", phase="Failed"), pod(1, on="a", limits_only=True)]
    cap = gpu_capacity(nodes, pods, GPU)
    assert (cap.allocatable, cap.requested, cap.largest_node_spare) == (2, 1, 1)


def test_pending_pods_take_their_gpus_first() -> None:
    cap = gpu_capacity([node("a", 4)], [pod(1, on="a"), pod(2, on=None, phase="Pending")], GPU)
    assert (cap.spare, cap.largest_node_spare) == (1, 1)
    assert choose_strategy(2, cap).type == "Recreate"


def test_init_containers_count_as_the_scheduler_counts_them() -> None:
    cap = gpu_capacity([node("a", 4)], [pod(1, on="a", init_gpus=3)], GPU)
    assert cap.requested == 3 and cap.largest_node_spare == 1


def test_unknown_capacity_and_cpu_only() -> None:
    assert choose_strategy(1, None).type == "Recreate"
    assert choose_strategy(0, None).type == "RollingUpdate"
    assert choose_strategy(0, GpuCapacity(allocatable=0, requested=0, largest_node_spare=0)).type == "RollingUpdate"
    assert choose_strategy(1, GpuCapacity(allocatable=0, requested=0, largest_node_spare=0)).type == "Recreate"
