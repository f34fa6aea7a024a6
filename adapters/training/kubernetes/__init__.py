"""The training runtime on Kubernetes (``TRAINING_RUNTIME=kubernetes``): each attempt a ``batch/v1`` Job, or for
several nodes an indexed Job, a Kubeflow ``TrainJob`` or ``PyTorchJob``, with its Secret (the job token, by
reference), built as typed ``kubernetes.client`` models. See ``runtime`` for RBAC, ``manifests`` for the objects,
``status`` for how a failure's cause is read, ``watch`` for the streams."""

from adapters.training.kubernetes.manifests import (
    AttemptPlan,
    ClusterFacts,
    Workload,
    attempt_name,
    build_attempt,
    choose_workload,
)
from adapters.training.kubernetes.runtime import KubernetesTrainingRuntime, load_api_client
from adapters.training.kubernetes.status import attempt_status

__all__ = [
    "AttemptPlan",
    "ClusterFacts",
    "KubernetesTrainingRuntime",
    "Workload",
    "attempt_name",
    "attempt_status",
    "build_attempt",
    "choose_workload",
    "load_api_client",
]
