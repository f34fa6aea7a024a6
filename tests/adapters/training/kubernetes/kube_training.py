"""Launch specs, settings and pod bodies for the Kubernetes training runtime's tests (the cluster's part is played
through ``tests/adapters/serving/kube_double``)."""

from __future__ import annotations

from typing import Any

import msgspec

from adapters.training.base import LaunchSpec
from adapters.training.settings import TrainingSettings, load_training_settings

NS = "training-test"
TOKEN = "ljt_" + "Zk3rV9qT" * 5 + "abc"  # the shape of a job token; must never be written out
JOB_ID = "trj_0001"
JOBS = "batch/v1/jobs"
PODS = "v1/pods"
SECRETS = "v1/secrets"
SERVICES = "v1/services"
TRAINJOBS = "trainer.kubeflow.org/v1alpha1/trainjobs"
PYTORCHJOBS = "kubeflow.org/v1/pytorchjobs"


def settings(**overrides: Any) -> TrainingSettings:
    return load_training_settings({}, runtime="kubernetes", namespace=NS,
                                  api_base_url="http://llmops.llmops:8080/llm-ops/v1", **overrides)


def spec(*, use_gpu: bool = False, gpus: int = 1, nodes: int = 1, attempt: int = 1, job_id: str = JOB_ID,
         job_name: str = "tiny-sft", cfg: TrainingSettings | None = None, deadline_s: float | None = 3600,
         **overrides: Any) -> LaunchSpec:
    cfg = cfg or settings()
    base = LaunchSpec(
        job_id=job_id, job_name=job_name, attempt=attempt, job_type="distributed" if nodes > 1 else "finetune",
        image=cfg.image, command=["python", "-m", "adapters.training.trainer.hf"],
        env={"API_BASE_URL": cfg.api_base_url or "", "LLMOPS_JOB_ID": job_id, "LLMOPS_ATTEMPT": str(attempt),
             "MLFLOW_TRACKING_URI": f"{cfg.api_base_url}/training/mlflow", "MLFLOW_RUN_ID": job_id},
        secret_env={"LLMOPS_JOB_TOKEN": TOKEN, "MLFLOW_TRACKING_TOKEN": TOKEN},
        resources=cfg.resources(use_gpu, gpus_per_node=gpus, nodes=nodes), deadline_s=deadline_s,
        labels={"llmops.io/team": "search"})
    return msgspec.structs.replace(base, **overrides) if overrides else base


def attempt_labels(job_id: str = JOB_ID, attempt: int = 1) -> dict[str, str]:
    return {"llmops.io/training-job": job_id, "llmops.io/attempt": str(attempt)}


def pod_body(*, labels: dict[str, str], phase: str = "Running", state: dict[str, Any] | None = None,
             container: str = "trainer", node: str = "node-1", index: int | None = None,
             reason: str | None = None, conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A trainer pod as the kubelet reports it; ``state`` is the container's (running by default)."""
    annotations = {"batch.kubernetes.io/job-completion-index": str(index)} if index is not None else {}
    running = {"running": {"startedAt": "2025-01-01T00:00:05Z"}}
    status: dict[str, Any] = {
        "phase": phase, "startTime": "2025-01-01T00:00:00Z",
        "conditions": conditions if conditions is not None else [{"type": "PodScheduled", "status": "True"}],
        # ``state={}``: not scheduled yet, so no container status at all
        "containerStatuses": [{"name": container, "image": "trainer", "imageID": "", "ready": phase == "Running",
                               "restartCount": 0, "state": running if state is None else state}] if state != {} else [],
    }
    if reason:
        status["reason"] = reason
    return {"metadata": {"labels": labels, "annotations": annotations},
            "spec": {"nodeName": node, "containers": [{"name": container, "image": "trainer"}]}, "status": status}


def terminated(exit_code: int, reason: str = "Error", *, finished: str = "2025-01-01T00:10:00Z",
               message: str | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {"exitCode": exit_code, "reason": reason, "finishedAt": finished}
    if message:
        state["message"] = message
    return {"terminated": state}
