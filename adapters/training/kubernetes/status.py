"""An attempt's ``AttemptStatus`` from what the API returned (its workload and its pods): pure, so every failure
shape is testable without a cluster.

The workload's conditions decide whether it ended (a Job's ``Complete``/``Failed``, Trainer's ``Complete``/
``Failed``, the Training Operator's ``Succeeded``/``Failed``); the pods say why. The cause of a failure is looked
for in this order: the deadline (the Job's ``DeadlineExceeded``: its pods were killed for it, their exits say
nothing); a pod lost with its node (``NodeLost``) or evicted (``Evicted``), which the rest of the ranks' failures
follow; then the container that terminated first with a non-zero exit (``OOMKilled``, else ``Error`` with its
exit code); else the workload's own reason (``BackoffLimitExceeded``). While it runs, a pod that cannot start
says why (``ImagePullBackOff``, ``Unschedulable``, …) and the attempt is ``pending`` until every node runs.
Our own batch Jobs never retry (``backoffLimit: 0``), so one failed pod is a failed attempt even before the Job
controller says so; the Kubeflow kinds may restart pods by their runtime's policy, so only their conditions count.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from datetime import datetime
from typing import Any, NamedTuple

from adapters.kubernetes.objects import Condition, Pod
from adapters.serving.kubernetes.status import safe_message as _safe_serving
from adapters.training.base import AttemptStatus
from adapters.training.kubernetes.manifests import ANN_NODES, CONTAINERS, Workload
from adapters.training.kubernetes.objects import Workload as WorkloadObject
from adapters.training.kubernetes.pod import COMPLETION_INDEX

__all__ = ["Failure", "attempt_status", "epoch", "pod_failure", "pod_rank", "redact_tokens", "safe_message"]

_SUCCEEDED = frozenset({"Complete", "Succeeded", "SuccessCriteriaMet"})
_FAILED = frozenset({"Failed", "FailureTarget"})
# Waiting reasons that need someone to act; the benign ones (ContainerCreating, PodInitializing) rank after them.
_STUCK = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull",
                    "CreateContainerConfigError", "CreateContainerError", "Unschedulable"})
# A DisruptionTarget's reasons that mean the node went away (the taint manager or pod GC removed the pod).
_NODE_GONE = frozenset({"DeletionByTaintManager", "DeletionByPodGC"})
_POD_NODE_GONE = frozenset({"NodeLost", "NodeShutdown", "Shutdown", "Terminated", "UnexpectedAdmissionError"})
_TOKEN = re.compile(r"ljt_[A-Za-z0-9_-]{8,}")
_PYTORCH_TYPE = "training.kubeflow.org/replica-type"
_PYTORCH_INDEX = "training.kubeflow.org/replica-index"


class Failure(NamedTuple):
    reason: str
    exit_code: int | None
    message: str


def redact_tokens(text: str) -> str:
    """Job tokens a trainer printed (``ljt_…``) never leave the runtime, in logs or messages."""
    return _TOKEN.sub("ljt_***", text)


def safe_message(text: str | None) -> str:
    """Cut short, credentials and job tokens stripped: what may go on the timeline."""
    return _safe_serving(redact_tokens(text or ""))


def epoch(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


def pod_rank(pod: Pod) -> int:
    """An indexed Job's (and a JobSet's) completion index; the Training Operator's Master 0, Worker i → i + 1."""
    meta = pod.metadata
    labels, annotations = meta.labels or {}, meta.annotations or {}
    index = annotations.get(COMPLETION_INDEX) or labels.get(COMPLETION_INDEX)
    if index is not None and index.isdigit():
        return int(index)
    kind = labels.get(_PYTORCH_TYPE, "").lower()
    if kind == "worker" and labels.get(_PYTORCH_INDEX, "").isdigit():
        return int(labels[_PYTORCH_INDEX]) + 1
    return 0


def _true(conditions: list[Condition] | None, types: frozenset[str]) -> Condition | None:
    return next((c for c in conditions or [] if c.type in types and c.status == "True"), None)


def _disruption(pod: Pod) -> Failure | None:
    st = pod.status
    if st.reason == "Evicted":
        return Failure("Evicted", None, f"pod {pod.metadata.name} evicted: {st.message or ''}".rstrip(": "))
    if st.reason in _POD_NODE_GONE:
        return Failure("NodeLost", None, f"pod {pod.metadata.name} lost with its node: {st.message or st.reason}")
    # Set by eviction, preemption, the taint manager or pod GC (never by a plain delete, such as a cancel):
    # the pod is going, and with backoffLimit 0 the attempt with it.
    target = _true(st.conditions, frozenset({"DisruptionTarget"}))
    if target is None:
        return None
    reason = "NodeLost" if target.reason in _NODE_GONE else "Evicted"
    return Failure(reason, None, f"pod {pod.metadata.name} on {pod.spec.node_name or 'its node'}: "
                                 f"{target.reason or 'disrupted'} {target.message or ''}".rstrip())


def pod_failure(pod: Pod) -> tuple[float, Failure] | None:
    """The pod's failed container (its finish time, or +inf when unknown), or None when none failed."""
    for cs in [*(pod.status.init_container_statuses or []), *(pod.status.container_statuses or [])]:
        ended = cs.state.terminated if cs.state is not None else None
        if ended is None or not ended.exit_code:
            continue
        reason = "OOMKilled" if ended.reason == "OOMKilled" else "Error"
        what = f"container {cs.name} of pod {pod.metadata.name} exited with code {ended.exit_code}"
        if reason == "OOMKilled":
            what += " (out of memory)"
        message = f"{what}: {ended.message.strip()}" if ended.message and ended.message.strip() else what
        finished = epoch(ended.finished_at)
        return (finished if finished is not None else math.inf), Failure(reason, ended.exit_code, message)
    return None


def _cause(pods: list[Pod], deadline: Condition | None, fallback: Condition | None) -> Failure:
    if deadline is not None:
        return Failure("DeadlineExceeded", None, deadline.message or "the attempt ran past its deadline")
    ranked = sorted(pods, key=lambda p: (pod_rank(p), p.metadata.name))
    disrupted = next((d for d in map(_disruption, ranked) if d is not None), None)
    if disrupted is not None:
        return disrupted
    failures = [(f[0], pod_rank(p), f[1]) for p in ranked if (f := pod_failure(p)) is not None]
    if failures:
        return min(failures, key=lambda f: (f[0], f[1]))[2]
    if fallback is not None:
        return Failure(fallback.reason or "Failed", None, fallback.message or "")
    return Failure("Error", None, "a pod failed")


def _waiting(pod: Pod) -> tuple[str, str] | None:
    """Why a pod that has not started is not running yet (reason, message), if it says."""
    for cs in [*(pod.status.init_container_statuses or []), *(pod.status.container_statuses or [])]:
        waiting = cs.state.waiting if cs.state is not None else None
        if waiting is not None and waiting.reason:
            return waiting.reason, f"{cs.name}: {waiting.message or waiting.reason}"
    for cond in pod.status.conditions or []:
        if cond.type == "PodScheduled" and cond.status == "False":
            return cond.reason or "Unschedulable", cond.message or "no node fits the pod"
    return None


def _details(kind: Workload, name: str, pods: list[Pod], expected: int) -> dict[str, Any]:
    phases = Counter(p.status.phase or "Unknown" for p in pods)
    return {"kind": kind, "name": name, "container": CONTAINERS[kind], "expectedPods": expected,
            "pods": dict(sorted(phases.items())),
            "nodes": sorted({p.spec.node_name for p in pods if p.spec.node_name})}


def attempt_status(job_id: str, attempt: int, kind: Workload, workload: WorkloadObject | None,
                   pods: list[Pod]) -> AttemptStatus:
    if workload is None:
        return AttemptStatus(job_id=job_id, attempt=attempt, phase="absent")
    meta, st = workload.metadata, workload.status
    nodes = (meta.annotations or {}).get(ANN_NODES, "1")
    expected = int(nodes) if nodes.isdigit() else 1
    details = _details(kind, meta.name, pods, expected)
    if meta.deletion_timestamp:
        details["deleting"] = True
    pod_starts = [t for p in pods if (t := epoch(p.status.start_time)) is not None]
    started = epoch(st.start_time) or (min(pod_starts) if pod_starts else None)
    common: dict[str, Any] = {"job_id": job_id, "attempt": attempt, "started_at": started, "details": details}

    if _true(st.conditions, _SUCCEEDED) is not None:
        done = _true(st.conditions, _SUCCEEDED)
        finished = epoch(st.completion_time) or epoch(done.last_transition_time if done else None)
        return AttemptStatus(phase="succeeded", finished_at=finished, message="completed", **common)
    failed = _true(st.conditions, _FAILED)
    batch = kind in ("Job", "IndexedJob")
    failed_pods = [p for p in pods if p.status.phase == "Failed" or (batch and _disruption(p) is not None)]
    if failed is not None or (batch and failed_pods):
        deadline = failed if failed is not None and failed.reason == "DeadlineExceeded" else None
        cause = _cause(failed_pods or pods, deadline, failed)
        finished = epoch(failed.last_transition_time) if failed is not None else None
        return AttemptStatus(phase="failed", exit_code=cause.exit_code, reason=cause.reason,
                             message=safe_message(cause.message), finished_at=finished, **common)

    live = [p for p in pods if p.status.phase not in ("Succeeded", "Failed")]
    started_pods = sum(1 for p in pods if p.status.phase in ("Running", "Succeeded"))
    reasons = [w for p in sorted(live, key=pod_rank) if p.status.phase != "Running" and (w := _waiting(p))]
    stuck = next((w for w in reasons if w[0] in _STUCK), reasons[0] if reasons else None)
    suspended = _true(st.conditions, frozenset({"Suspended"}))
    running_cond = _true(st.conditions, frozenset({"Running"}))
    if stuck is None and suspended is None and (
            (pods and started_pods >= expected) or (not pods and running_cond is not None)):
        return AttemptStatus(phase="running", message=f"{started_pods}/{expected} pods running", **common)
    if suspended is not None:
        reason, message = "Suspended", suspended.message or "suspended (queued by the cluster)"
    elif stuck is not None:
        reason, message = stuck
    else:
        reason, message = None, f"{started_pods}/{expected} pods running" if pods else "waiting for pods"
    return AttemptStatus(phase="pending", reason=reason, message=safe_message(message), **common)
