"""A slot's ``RuntimeStatus`` from what the API returned (a Deployment and its pods, or an InferenceService):
pure, so every failure shape is testable without a cluster.

Failures are read where Kubernetes reports them: a container ``waiting`` in ``ImagePullBackOff``,
``ErrImagePull`` or ``CrashLoopBackOff`` (or a few other reasons that never heal by themselves), a container
``terminated`` as ``OOMKilled`` or ``Error`` that has restarted, or a Deployment past its progress deadline.
A pod ``Pending`` as ``Unschedulable`` (e.g. ``Insufficient nvidia.com/gpu``) is *progressing* with that reason:
a cluster autoscaler may still add the node. Only pods of the revision being rolled out count, so an old
revision's crash does not hide a healthy new one. Messages are cut short and stripped of credentials.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, NamedTuple

from adapters.kubernetes.objects import ContainerStatus, Pod
from adapters.serving.base import RuntimeStatus
from adapters.serving.kubernetes.manifests import ANN_AUTOSCALER, ANN_STRATEGY_REASON, LABEL_REVISION
from adapters.serving.kubernetes.objects import Deployment
from adapters.serving.kubernetes.pod import PORT

__all__ = ["deployment_status", "inference_service_status", "pod_problem", "safe_message", "service_url"]

FAILED_WAITING = frozenset({"ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff", "InvalidImageName",
                            "ErrImageNeverPull", "CreateContainerConfigError", "CreateContainerError"})
FAILED_TERMINATED = frozenset({"OOMKilled", "Error", "ContainerCannotRun"})
_MAX_MESSAGE = 400
_SECRETS = [
    (re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+@"), "***@"),  # user:password@ in URLs
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 ***"),
    (re.compile(r"(?i)\b(token|password|passwd|secret|api[_-]?key|access[_-]?key)(\s*[=:]\s*)\S+"), r"\1\2***"),
]


class PodProblem(NamedTuple):
    failed: bool  # False: progressing with a reason (unschedulable)
    reason: str
    message: str


def safe_message(text: str | None) -> str:
    out = text or ""
    for pattern, replacement in _SECRETS:
        out = pattern.sub(replacement, out)
    return out if len(out) <= _MAX_MESSAGE else out[: _MAX_MESSAGE - 1] + "…"


def service_url(name: str, namespace: str) -> str:
    return f"http://{name}.{namespace}.svc.cluster.local:{PORT}/v1"


def _container_problem(cs: ContainerStatus) -> PodProblem | None:
    state = cs.state
    if state is None:
        return None
    last = cs.last_state.terminated if cs.last_state is not None else None
    if state.waiting is not None and state.waiting.reason in FAILED_WAITING:
        message = f"{cs.name}: {state.waiting.message or state.waiting.reason}"
        if last is not None:
            message += f" (last exit: {last.reason or 'Error'}, code {last.exit_code}, {cs.restart_count} restarts)"
        return PodProblem(True, state.waiting.reason, message)
    ended = state.terminated
    if ended is not None and ended.reason in FAILED_TERMINATED and cs.restart_count > 0:
        return PodProblem(True, ended.reason, f"{cs.name} exited with code {ended.exit_code} "
                                              f"after {cs.restart_count} restarts")
    return None


def pod_problem(pod: Pod) -> PodProblem | None:
    status = pod.status
    for cs in [*(status.init_container_statuses or []), *(status.container_statuses or [])]:
        problem = _container_problem(cs)
        if problem is not None:
            return problem
    if status.phase == "Pending":
        for cond in status.conditions or []:
            if cond.type == "PodScheduled" and cond.status == "False" and cond.reason == "Unschedulable":
                return PodProblem(False, "Unschedulable", cond.message or "no node fits the pod")
    return None


def _ready(pod: Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def _revision(labels: dict[str, str] | None) -> int | None:
    value = (labels or {}).get(LABEL_REVISION, "")
    return int(value) if value.isdigit() else None


def _first_problem(pods: list[Pod], revision: int | None) -> PodProblem | None:
    current = [p for p in pods if revision is None or _revision(p.metadata.labels) == revision]
    problems = [p for p in (pod_problem(pod) for pod in sorted(current, key=lambda p: p.metadata.name))
                if p is not None]
    return next((p for p in problems if p.failed), problems[0] if problems else None)


def _pod_details(pods: list[Pod]) -> dict[str, Any]:
    phases = Counter(p.status.phase or "Unknown" for p in pods)
    restarts = sum(cs.restart_count for p in pods for cs in p.status.container_statuses or [])
    return {"pods": dict(sorted(phases.items())), "restarts": restarts}


def deployment_status(deployment: Deployment, pods: list[Pod], namespace: str) -> RuntimeStatus:
    meta, spec, st = deployment.metadata, deployment.spec, deployment.status
    annotations = meta.annotations or {}
    revision = _revision(spec.template.metadata.labels) or _revision(meta.labels)
    desired = spec.replicas if spec.replicas is not None else 1
    ready, updated = st.ready_replicas, st.updated_replicas
    details: dict[str, Any] = {
        "kind": "Deployment", "autoscaler": annotations.get(ANN_AUTOSCALER, "none"),
        "strategy": spec.strategy.type if spec.strategy is not None else None,
        "strategyReason": annotations.get(ANN_STRATEGY_REASON), "updatedReplicas": updated,
        **_pod_details(pods)}
    common: dict[str, Any] = {"ready_replicas": ready, "desired_replicas": desired, "revision": revision,
                              "base_url": service_url(meta.name, namespace), "details": details}
    problem = _first_problem(pods, revision)
    if problem is None:
        for cond in st.conditions or []:
            if (cond.type == "Progressing" and cond.status == "False" and cond.reason == "ProgressDeadlineExceeded") \
                    or (cond.type == "ReplicaFailure" and cond.status == "True"):
                problem = PodProblem(True, cond.reason or cond.type, cond.message or "")
    if problem is not None and problem.failed:
        return RuntimeStatus(phase="failed", reason=problem.reason, message=safe_message(problem.message), **common)
    if desired == 0:
        return RuntimeStatus(phase="scaled_to_zero", message="no replica: requests wait while one starts", **common)
    observed = meta.generation is None or (st.observed_generation or 0) >= meta.generation
    if observed and ready >= desired and updated >= desired:
        return RuntimeStatus(phase="ready", message=f"{ready}/{desired} replicas ready", **common)
    return RuntimeStatus(phase="progressing", reason=problem.reason if problem else None,
                         message=safe_message(problem.message if problem else f"{ready}/{desired} replicas ready"),
                         **common)


def inference_service_status(isvc: dict[str, Any], pods: list[Pod], namespace: str) -> RuntimeStatus:
    """KServe reports through conditions (``Ready``, ``PredictorReady``) and ``modelStatus``; pods add the why."""
    meta = isvc.get("metadata") or {}
    name = meta.get("name", "")
    status = isvc.get("status") or {}
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    url = status.get("url")
    min_replicas = int(predictor.get("minReplicas", 1) or 0)
    ready = sum(1 for p in pods if _ready(p))
    desired = max(len(pods), min_replicas, ready)
    revision = _revision(meta.get("labels"))
    common: dict[str, Any] = {
        "ready_replicas": ready, "desired_replicas": desired, "revision": revision,
        "base_url": f"{url.rstrip('/')}/v1" if url else f"http://{name}-predictor.{namespace}.svc.cluster.local/v1",
        "details": {"kind": "InferenceService", "autoscaler": "kserve", **_pod_details(pods)}}
    problem = _first_problem(pods, None)
    model = status.get("modelStatus") or {}
    failure = model.get("lastFailureInfo") or {}
    if (problem is None or not problem.failed) and (
            failure or model.get("transitionStatus") in ("BlockedByFailedLoad", "InvalidSpec")):
        problem = PodProblem(True, failure.get("reason") or model.get("transitionStatus") or "Failed",
                             failure.get("message", ""))
    if problem is not None and problem.failed:
        return RuntimeStatus(phase="failed", reason=problem.reason, message=safe_message(problem.message), **common)
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if isinstance(c, dict)}
    if conditions.get("Ready", {}).get("status") == "True":
        if not pods and min_replicas == 0:
            return RuntimeStatus(phase="scaled_to_zero", message="no replica: requests wait while one starts",
                                 **common)
        return RuntimeStatus(phase="ready", message=f"{ready}/{desired} replicas ready", **common)
    waiting = next((c for c in conditions.values() if c.get("status") != "True"), None)
    if problem is not None:
        reason, message = problem.reason, problem.message
    elif waiting is not None:
        reason, message = waiting.get("reason") or f"{waiting.get('type')}NotReady", waiting.get("message", "")
    else:
        reason, message = None, "waiting for KServe"
    return RuntimeStatus(phase="progressing", reason=reason, message=safe_message(message), **common)
