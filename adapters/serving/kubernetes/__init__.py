"""The serving runtime on Kubernetes (``SERVING_RUNTIME=kubernetes``): Deployments, Services and autoscalers, or
KServe InferenceServices, built as typed ``kubernetes.client`` models. See ``runtime`` for RBAC."""

from adapters.serving.kubernetes.capacity import GpuCapacity, StrategyChoice, choose_strategy, gpu_capacity
from adapters.serving.kubernetes.manifests import ClusterFacts, build_slot, resource_name
from adapters.serving.kubernetes.runtime import KubernetesRuntime

__all__ = [
    "ClusterFacts",
    "GpuCapacity",
    "KubernetesRuntime",
    "StrategyChoice",
    "build_slot",
    "choose_strategy",
    "gpu_capacity",
    "resource_name",
]
