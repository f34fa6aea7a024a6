"""``status`` reads a slot where Kubernetes reports it: the Deployment and its pods in kmock's emulated API server
(a TEST DOUBLE; the tests write the pods and statuses a cluster's controllers would)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.serving.kubernetes import KubernetesRuntime
from tests.adapters.serving.kube_double import KubeDouble, open_kube_double
from tests.adapters.serving.kube_specs import NS, settings, spec

DEPLOYMENTS = "apps/v1/deployments"
BASE_URL = f"http://llama.{NS}.svc.cluster.local:8000/v1"


@pytest.fixture
async def kube() -> AsyncIterator[KubeDouble]:
    async with open_kube_double() as double:
        yield double


@pytest.fixture
async def rt(kube: KubeDouble) -> AsyncIterator[KubernetesRuntime]:
    runtime = KubernetesRuntime(settings(), kube.api_client())
    await runtime.apply(spec(use_gpu=False, revision=3), "stable")
    yield runtime
    await runtime.aclose()


def _labels(revision: int = 3, endpoint_id: str = "ep_llama", slot: str = "stable") -> dict[str, str]:
    return {"app.kubernetes.io/name": "llmops-endpoint", "llmops.io/endpoint-id": endpoint_id,
            "llmops.io/slot": slot, "llmops.io/revision": str(revision)}


def _cs(state: dict[str, Any], *, restarts: int = 0, last: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    status = {"name": "vllm", "image": "vllm/vllm-openai:v0.11.0", "imageID": "", "ready": False,
              "restartCount": restarts, "state": state}
    if last is not None:
        status["lastState"] = last
    return [status]


async def test_absent_before_anything_exists(kube: KubeDouble) -> None:
    rt = KubernetesRuntime(settings(), kube.api_client())
    status = await rt.status("ep_llama", "llama", "canary")
    assert status.phase == "absent" and status.base_url is None


async def test_progressing_while_pods_start(kube: KubeDouble, rt: KubernetesRuntime) -> None:
    kube.add_pod(NS, "llama-7d9-a", labels=_labels(), phase="Pending", ready=False)
    status = await rt.status("ep_llama", "llama", "stable")
    assert (status.phase, status.reason, status.revision) == ("progressing", None, 3)
    assert (status.ready_replicas, status.desired_replicas) == (0, 1)
    assert status.base_url == BASE_URL
    assert status.details["pods"] == {"Pending": 1}


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "ErrImagePull"])
async def test_image_that_cannot_be_pulled_fails_with_its_reason(kube: KubeDouble, rt: KubernetesRuntime,
                                                                 reason: str) -> None:
    message = ('Back-off pulling image "registry.example.com/vllm:nope": failed to resolve '
               'https://robot:hunter2@registry.example.com/v2/ token=s3cr3tvalue')
    kube.add_pod(NS, "llama-7d9-a", labels=_labels(), phase="Pending", ready=False,
                 container_statuses=_cs({"waiting": {"reason": reason, "message": message}}))
    status = await rt.status("ep_llama", "llama", "stable")
    assert (status.phase, status.reason) == ("failed", reason)
    assert "registry.example.com/vllm:nope" in status.message
    assert "hunter2" not in status.message and "s3cr3tvalue" not in status.message
    assert len(status.message) <= 400


async def test_crash_loop_reports_the_last_exit(kube: KubeDouble, rt: KubernetesRuntime) -> None:
    kube.add_pod(NS, "llama-7d9-a", labels=_labels(), ready=False, container_statuses=_cs(
        {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting failed container"}},
        restarts=6, last={"terminated": {"reason": "OOMKilled", "exitCode": 137}}))
    status = await rt.status("ep_llama", "llama", "stable")
    assert (status.phase, status.reason) == ("failed", "CrashLoopBackOff")
    assert "OOMKilled" in status.message and "6 restarts" in status.message
    assert status.details["restarts"] == 6


async def test_terminated_with_restarts_fails(kube: KubeDouble, rt: KubernetesRuntime) -> None:
    kube.add_pod(NS, "llama-7d9-a", labels=_labels(), ready=False, container_statuses=_cs(
        {"terminated": {"reason": "OOMKilled", "exitCode": 137}}, restarts=2))
    status = await rt.status("ep_llama", "llama", "stable")
    assert (status.phase, status.reason) == ("failed", "OOMKilled")
    # The first exit, before any restart, is not yet a failure of the slot.
    kube.patch("v1/pods", NS, "llama-7d9-a", {"status": {"containerStatuses": _cs(
        {"terminated": {"reason": "Error", "exitCode": 1}}, restarts=0)}})
    assert (await rt.status("ep_llama", "llama", "stable")).phase == "progressing"


async def test_unschedulable_is_progressing_with_the_reason(kube: KubeDouble, rt: KubernetesRuntime) -> None:
    kube.add_pod(NS, "llama-7d9-a", labels=_labels(), phase="Pending", ready=False, container_statuses=[],
                 conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                              "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}])
    status = await rt.status("ep_llama", "llama", "stable")
    assert (status.phase, status.reason) == ("progressing", "Unschedulable")
    assert "Insufficient nvidia.com/gpu" in status.message


async def test_ready_when_every_wanted_replica_is(kube: KubeDouble, rt: KubernetesRuntime) -> None:
    kube.add_pod(NS, "llama-7d9-a", labels=_labels())
    kube.patch(DEPLOYMENTS, NS, "llama", {"spec": {"replicas": 2}, "status": {
        "replicas": 2, "readyReplicas": 1, "updatedReplicas": 2, "availableReplicas": 1}})
    status = await rt.status("ep_llama", "llama", "stable")
    assert (status.phase, status.ready_replicas, status.desired_replicas) == ("progressing", 1, 2)
    kube.add_pod(NS, "llama-7d9-b", labels=_labels())
    kube.patch(DEPLOYMENTS, NS, "llama", {"status": {"readyReplicas": 2, "availableReplicas": 2}})
    status = await rt.status("ep_llama", "llama", "stable")
    assert (status.phase, status.ready_replicas, status.desired_replicas) == ("ready", 2, 2)
    assert (status.revision, status.base_url) == (3, BASE_URL)
    assert status.details["autoscaler"] == "none" and status.details["strategy"] == "RollingUpdate"


async def test_rolling_out_waits_for_the_new_pods(kube: KubeDouble, rt: KubernetesRuntime) -> None:
    """Old pods ready, the new revision's not yet: not ready; the old revision's crash is not the new one's."""
    kube.add_pod(NS, "llama-old-a", labels=_labels(revision=2), ready=False, container_statuses=_cs(
        {"waiting": {"reason": "CrashLoopBackOff"}}, restarts=3))
    kube.add_pod(NS, "llama-new-a", labels=_labels(revision=3), phase="Pending", ready=False)
    kube.patch(DEPLOYMENTS, NS, "llama", {"status": {"replicas": 2, "readyReplicas": 1, "updatedReplicas": 0}})
    status = await rt.status("ep_llama", "llama", "stable")
    assert (status.phase, status.reason, status.revision) == ("progressing", None, 3)


async def test_other_endpoints_pods_are_not_read_as_ours(kube: KubeDouble, rt: KubernetesRuntime) -> None:
    kube.add_pod(NS, "other-1", labels=_labels(endpoint_id="ep_other"), container_statuses=_cs(
        {"waiting": {"reason": "ImagePullBackOff"}}))
    kube.add_pod(NS, "canary-1", labels=_labels(slot="canary"), container_statuses=_cs(
        {"waiting": {"reason": "ErrImagePull"}}))
    status = await rt.status("ep_llama", "llama", "stable")
    assert status.phase == "progressing" and status.details["pods"] == {}


async def test_progress_deadline_exceeded_fails(kube: KubeDouble, rt: KubernetesRuntime) -> None:
    kube.patch(DEPLOYMENTS, NS, "llama", {"status": {"conditions": [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": 'ReplicaSet "llama-7d9" has timed out progressing.'}]}})
    status = await rt.status("ep_llama", "llama", "stable")
    assert (status.phase, status.reason) == ("failed", "ProgressDeadlineExceeded")


async def test_scaled_to_zero(kube: KubeDouble, rt: KubernetesRuntime) -> None:
    kube.patch(DEPLOYMENTS, NS, "llama", {"spec": {"replicas": 0}})
    status = await rt.status("ep_llama", "llama", "stable")
    assert (status.phase, status.desired_replicas, status.base_url) == ("scaled_to_zero", 0, BASE_URL)


async def test_a_name_held_by_another_endpoint_is_not_ours(kube: KubeDouble, rt: KubernetesRuntime) -> None:
    status = await rt.status("ep_newer", "llama", "stable")
    assert (status.phase, status.reason) == ("failed", "NameTaken")
    assert "ep_llama" in status.message
