"""``ServingSettings``: every ``SERVING_*`` environment variable, read once at start-up (``adapters.envsettings``
rules: lowercase ``true``/``false``, the empty string is unset, a bad value fails start-up naming it).

``env.example`` at the repository root lists each with its default (a test checks it against ``describe``);
``docs/configuration.md`` gives per-environment examples.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec

from adapters.envsettings import KubeQuantity, describe, from_env, help_text
from adapters.serving.base import Resources

__all__ = ["PREFIX", "ServingSettings", "load_serving_settings", "serving_variables"]

PREFIX = "SERVING_"


_d = help_text
_Quantity = KubeQuantity


class ServingSettings(msgspec.Struct, frozen=True, kw_only=True):
    runtime: Annotated[Literal["local", "kubernetes"], _d(
        "where model endpoints run: local (processes on this machine, the embedded default) or kubernetes")] = "local"
    namespace: Annotated[str, _d("Kubernetes namespace for endpoints")] = "llmops-serving"
    kubeconfig: Annotated[str | None, _d("kubeconfig file; unset: in-cluster config, then ~/.kube/config")] = None
    default_image: Annotated[str, _d("runtime image for GPU endpoints (vLLM's OpenAI server)")] = \
        "vllm/vllm-openai:v0.11.0"
    cpu_only_image: Annotated[str, _d("runtime image for useGpu=false endpoints")] = \
        "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.11.0"
    default_use_gpu: Annotated[bool, _d("useGpu when a deploy call does not say")] = True
    cpu_request: Annotated[_Quantity, _d("CPU request of a GPU endpoint's pod")] = "4"
    cpu_limit: Annotated[_Quantity, _d("CPU limit of a GPU endpoint's pod")] = "8"
    memory_request: Annotated[_Quantity, _d("memory request of a GPU endpoint's pod")] = "24Gi"
    memory_limit: Annotated[_Quantity, _d("memory limit of a GPU endpoint's pod")] = "48Gi"
    gpu_resource: Annotated[str, _d("extended resource name GPUs are requested as")] = "nvidia.com/gpu"
    gpu_count: Annotated[int, msgspec.Meta(ge=1, le=16, description="GPUs per replica when a deploy does not say")] = 1
    cpu_only_cpu_request: Annotated[_Quantity, _d("CPU request of a useGpu=false pod")] = "2"
    cpu_only_cpu_limit: Annotated[_Quantity, _d("CPU limit of a useGpu=false pod")] = "8"
    cpu_only_memory_request: Annotated[_Quantity, _d("memory request of a useGpu=false pod")] = "8Gi"
    cpu_only_memory_limit: Annotated[_Quantity, _d("memory limit of a useGpu=false pod")] = "16Gi"
    startup_timeout_s: Annotated[int, msgspec.Meta(ge=60, le=7200, description=(
        "how long a pod may take to load its model before the startupProbe gives up"))] = 1800
    autoscaler: Annotated[Literal["auto", "hpa", "keda"], _d(
        "auto: a KEDA ScaledObject when KEDA's CRD is installed, else an HPA")] = "auto"
    kserve: Annotated[bool, _d("deploy KServe InferenceServices instead of Deployments")] = False
    image_pull_secret: Annotated[str | None, _d("name of an imagePullSecret for runtime images")] = None
    model_storage_uri: Annotated[str | None, _d(
        "object-store URI the pods' init container downloads model files from (s3://bucket/prefix)")] = None
    gateway_metrics_url: Annotated[str | None, _d(
        "Prometheus URL KEDA reads the gateway's queued requests from (scale from zero)")] = None
    queue_timeout_s: Annotated[float, msgspec.Meta(ge=0, le=600, description=(
        "how long the gateway holds a request to an endpoint scaling from zero"))] = 60.0
    reconcile_interval_s: Annotated[float, msgspec.Meta(gt=0, le=60, description=(
        "how often runtime status is read and routes follow"))] = 2.0
    canary_window_s: Annotated[float, msgspec.Meta(gt=0, le=86400, description=(
        "the window of gateway traffic a canary is judged on"))] = 300.0
    canary_min_requests: Annotated[int, msgspec.Meta(ge=1, description=(
        "canary requests needed in the window before it is judged"))] = 20
    canary_max_error_rate_delta: Annotated[float, msgspec.Meta(ge=0, le=1, description=(
        "roll back when the canary's error rate exceeds the stable's by more than this"))] = 0.05
    canary_max_p95_ratio: Annotated[float, msgspec.Meta(ge=1, description=(
        "roll back when the canary's p95 latency exceeds this multiple of the stable's"))] = 1.5
    local_server: Annotated[Literal["mock", "auto"], _d(
        "local runtime's server: mock (the test double) or auto (a GGUF model on llama.cpp when llama-cpp-python is "
        "installed)")] = "mock"
    local_ready_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600, description=(
        "how long a local server may take to answer /health and /v1/models"))] = 60.0

    def resources(self, use_gpu: bool, gpu_count: int | None = None) -> Resources:
        """The pod's requests and limits for ``use_gpu`` (the ``SERVING_CPU_ONLY_*`` family when false)."""
        if use_gpu:
            return Resources(cpu_request=self.cpu_request, cpu_limit=self.cpu_limit,
                             memory_request=self.memory_request, memory_limit=self.memory_limit,
                             gpu_count=gpu_count or self.gpu_count, gpu_resource=self.gpu_resource)
        return Resources(cpu_request=self.cpu_only_cpu_request, cpu_limit=self.cpu_only_cpu_limit,
                         memory_request=self.cpu_only_memory_request, memory_limit=self.cpu_only_memory_limit,
                         gpu_count=0, gpu_resource=self.gpu_resource)

    def image(self, use_gpu: bool) -> str:
        return self.default_image if use_gpu else self.cpu_only_image


def load_serving_settings(env: Mapping[str, str] | None = None, **overrides: object) -> ServingSettings:
    return from_env(ServingSettings, PREFIX, env, **overrides)


def serving_variables() -> list[tuple[str, str, str]]:
    return describe(ServingSettings, PREFIX)
