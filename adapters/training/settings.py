"""``TrainingSettings``: every ``TRAINING_*`` environment variable, read once at start-up (``adapters.envsettings``
rules: lowercase ``true``/``false``, the empty string is unset, a bad value fails start-up naming it).

``env.example`` at the repository root lists each with its default (a test checks it against ``describe``);
``docs/configuration.md`` gives per-environment examples.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec

from adapters.envsettings import KubeQuantity, describe, from_env, help_text
from adapters.training.base import TrainingResources

__all__ = ["PREFIX", "TrainingSettings", "load_training_settings", "training_variables"]

PREFIX = "TRAINING_"


_d = help_text
_Quantity = KubeQuantity


class TrainingSettings(msgspec.Struct, frozen=True, kw_only=True):
    runtime: Annotated[Literal["local", "kubernetes"], _d(
        "where training jobs run: local (supervised processes on this machine, the embedded default) or kubernetes"
    )] = "local"
    namespace: Annotated[str, _d("Kubernetes namespace for training jobs")] = "llmops-training"
    kubeconfig: Annotated[str | None, _d("kubeconfig file; unset: in-cluster config, then ~/.kube/config")] = None
    image: Annotated[str, _d("trainer image (its command is the Hugging Face trainer of the train extra)")] = \
        "ghcr.io/llmops/trainer:0.1.0"
    image_pull_secret: Annotated[str | None, _d("name of an imagePullSecret for trainer images")] = None
    api_base_url: Annotated[str | None, _d(
        "the control plane's /llm-ops/v1 URL as pods reach it (required on kubernetes; local: this server)")] = None
    distributed: Annotated[Literal["auto", "indexed-job", "trainjob", "pytorchjob"], _d(
        "multi-node jobs: auto (a Kubeflow TrainJob, else a PyTorchJob, when its CRD exists; else an indexed Job)"
    )] = "auto"
    trainjob_runtime: Annotated[str, _d("the ClusterTrainingRuntime a Kubeflow TrainJob refers to")] = \
        "torch-distributed"
    gpu_resource: Annotated[str, _d("extended resource name GPUs are requested as")] = "nvidia.com/gpu"
    cpu_request: Annotated[_Quantity, _d("CPU request of a GPU job's pod")] = "8"
    cpu_limit: Annotated[_Quantity, _d("CPU limit of a GPU job's pod")] = "16"
    memory_request: Annotated[_Quantity, _d("memory request of a GPU job's pod")] = "32Gi"
    memory_limit: Annotated[_Quantity, _d("memory limit of a GPU job's pod")] = "64Gi"
    cpu_only_cpu_request: Annotated[_Quantity, _d("CPU request of a useGpu=false pod")] = "1"
    cpu_only_cpu_limit: Annotated[_Quantity, _d("CPU limit of a useGpu=false pod")] = "4"
    cpu_only_memory_request: Annotated[_Quantity, _d("memory request of a useGpu=false pod")] = "2Gi"
    cpu_only_memory_limit: Annotated[_Quantity, _d("memory limit of a useGpu=false pod")] = "8Gi"
    max_concurrent_jobs: Annotated[int, msgspec.Meta(ge=1, le=1000, description=(
        "jobs running at once (per control plane); the rest wait queued"))] = 2
    default_deadline_s: Annotated[int, msgspec.Meta(ge=10, le=30 * 86400, description=(
        "a job's deadline when it does not set one (from its first start, retries included)"))] = 86400
    default_max_retries: Annotated[int, msgspec.Meta(ge=0, le=20, description=(
        "retries of a failed attempt when a job does not say"))] = 2
    default_backoff_s: Annotated[float, msgspec.Meta(ge=0, le=3600, description=(
        "the first retry's delay; it doubles with each retry, up to backoff_max_s"))] = 30.0
    backoff_max_s: Annotated[float, msgspec.Meta(ge=0, le=86400, description="the longest retry delay")] = 600.0
    cancel_grace_s: Annotated[float, msgspec.Meta(ge=0, le=600, description=(
        "how long a cancelled attempt gets between SIGTERM and SIGKILL"))] = 10.0
    sync_interval_s: Annotated[float, msgspec.Meta(gt=0, le=60, description=(
        "how often the supervisor reconciles jobs with the runtime (the watch makes most changes immediate)"))] = 2.0
    lease_s: Annotated[float, msgspec.Meta(ge=1, le=3600, description=(
        "a replica that stops renewing its jobs' leases for this long has them taken over"))] = 30.0
    evaluate_on_success: Annotated[bool, _d(
        "start the evaluation configured for a newly registered model (evaluation module)")] = True
    local_dir: Annotated[str | None, _d("the local runtime's state and logs (unset: <data_dir>/training)")] = None
    local_python: Annotated[str | None, _d("the Python the local runtime runs trainers with (unset: this one)")] = None
    max_artifact_bytes: Annotated[int, msgspec.Meta(ge=1, description=(
        "the largest file a job may store as a checkpoint or output"))] = 20 * 1024 ** 3

    def resources(self, use_gpu: bool, *, gpus_per_node: int = 1, nodes: int = 1) -> TrainingResources:
        """Per-node requests and limits for ``use_gpu`` (the ``TRAINING_CPU_ONLY_*`` family when false)."""
        if use_gpu:
            return TrainingResources(nodes=nodes, gpus_per_node=gpus_per_node, gpu_resource=self.gpu_resource,
                                     cpu_request=self.cpu_request, cpu_limit=self.cpu_limit,
                                     memory_request=self.memory_request, memory_limit=self.memory_limit)
        return TrainingResources(nodes=nodes, gpus_per_node=0, gpu_resource=self.gpu_resource,
                                 cpu_request=self.cpu_only_cpu_request, cpu_limit=self.cpu_only_cpu_limit,
                                 memory_request=self.cpu_only_memory_request,
                                 memory_limit=self.cpu_only_memory_limit)


def load_training_settings(env: Mapping[str, str] | None = None, **overrides: object) -> TrainingSettings:
    return from_env(TrainingSettings, PREFIX, env, **overrides)


def training_variables() -> list[tuple[str, str, str]]:
    return describe(TrainingSettings, PREFIX)
