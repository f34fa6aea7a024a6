"""The pure part of status: ranks across the workload kinds, what a suspended or Kubeflow-run attempt reports, and
that a trainer's own output never carries its job token onto the timeline."""

from __future__ import annotations

from typing import Any

import msgspec

from adapters.kubernetes.objects import Pod
from adapters.training.kubernetes.objects import Workload as WorkloadObject
from adapters.training.kubernetes.status import attempt_status, pod_rank, safe_message
from tests.adapters.training.kubernetes.kube_training import TOKEN, attempt_labels, pod_body, terminated


def _pod(name: str, **kwargs: Any) -> Pod:
    body = pod_body(**kwargs)
    body["metadata"]["name"] = name
    return msgspec.convert(body, Pod)


def _workload(nodes: int = 1, conditions: list[dict[str, Any]] | None = None) -> WorkloadObject:
    return msgspec.convert({"metadata": {"name": "w-a1", "annotations": {"llmops.io/nodes": str(nodes)}},
                            "status": {"conditions": conditions or []}}, WorkloadObject)


def test_ranks_of_each_kind() -> None:
    assert pod_rank(_pod("a", labels={}, index=3)) == 3
    master = _pod("m", labels={"training.kubeflow.org/replica-type": "master",
                               "training.kubeflow.org/replica-index": "0"})
    worker = _pod("w", labels={"training.kubeflow.org/replica-type": "worker",
                               "training.kubeflow.org/replica-index": "1"})
    assert (pod_rank(master), pod_rank(worker)) == (0, 2)
    assert pod_rank(_pod("single", labels={})) == 0


def test_suspended_is_pending_and_a_running_condition_is_running() -> None:
    suspended = attempt_status("j", 1, "TrainJob", _workload(2, [{"type": "Suspended", "status": "True",
                                                                  "message": "queued by Kueue"}]), [])
    assert (suspended.phase, suspended.reason, suspended.message) == ("pending", "Suspended", "queued by Kueue")
    running = attempt_status("j", 1, "PyTorchJob", _workload(2, [{"type": "Running", "status": "True"}]), [])
    assert running.phase == "running"


def test_a_stuck_pod_outranks_one_still_creating() -> None:
    pods = [_pod("w-0", labels=attempt_labels(), index=0, phase="Pending",
                 state={"waiting": {"reason": "ContainerCreating"}}),
            _pod("w-1", labels=attempt_labels(), index=1, phase="Pending",
                 state={"waiting": {"reason": "ErrImagePull", "message": "manifest unknown"}})]
    status = attempt_status("j", 1, "IndexedJob", _workload(2), pods)
    assert (status.phase, status.reason) == ("pending", "ErrImagePull")


def test_no_job_token_reaches_a_message() -> None:
    pod = _pod("w-0", labels=attempt_labels(), phase="Failed",
               state=terminated(1, message=f"Traceback ...\nHTTPError 401 for Bearer {TOKEN} at {TOKEN}"))
    status = attempt_status("j", 1, "Job", _workload(), [pod])
    assert status.phase == "failed" and "401" in status.message and TOKEN not in status.message
    assert TOKEN not in safe_message(f"LLMOPS_JOB_TOKEN={TOKEN}") and "ljt_***" in safe_message(f"x {TOKEN}")
