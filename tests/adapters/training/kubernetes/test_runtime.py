"""KubernetesTrainingRuntime through the official client against kmock's emulated API server (a TEST DOUBLE, see
tests/adapters/serving/kube_double): submit, status as the controllers move an attempt along, cancel, cleanup,
active, logs, and an API server that refuses or is gone. No controller runs: tests write what the Job controller
and the kubelet would (a Job's conditions, pods with container states)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import kmock
import kubernetes_validate
import pytest
import yaml

from adapters.training.base import AttemptRef, RuntimeFailure, TrainingRuntime
from adapters.training.kubernetes import KubernetesTrainingRuntime
from adapters.training.settings import TrainingSettings
from tests.adapters.serving.kube_double import KubeDouble
from tests.adapters.training.kubernetes.kube_training import (
    JOB_ID,
    JOBS,
    NS,
    PODS,
    PYTORCHJOBS,
    SECRETS,
    SERVICES,
    TOKEN,
    TRAINJOBS,
    attempt_labels,
    pod_body,
    settings,
    spec,
    terminated,
)

NAME = "tiny-sft-a1"


def runtime(kube: KubeDouble, cfg: TrainingSettings | None = None) -> KubernetesTrainingRuntime:
    return KubernetesTrainingRuntime(cfg or settings(), api_client=kube.api_client())


def with_uid(uid: str) -> Any:
    """The API server's answer to a create carries the new object's uid (the emulator's does not)."""
    return lambda request: {**request.data, "metadata": {**request.data["metadata"], "uid": uid}}


def test_implements_the_protocol() -> None:
    from kubernetes import client

    rt: TrainingRuntime = KubernetesTrainingRuntime(settings(), api_client=client.ApiClient())
    assert rt.name == "kubernetes"


async def test_submit_creates_the_attempt_and_answers_what_it_sent_without_secrets(kube: KubeDouble) -> None:
    kube.emulator["post", kmock.resource(JOBS)] << with_uid("uid-job-1")
    rt = runtime(kube)
    docs = await rt.submit(spec())
    assert [d["kind"] for d in docs] == ["Secret", "Job"]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30", strict=True)
    assert docs == rt.render(spec())  # render: what submit sent, the Secret's values redacted in both
    assert TOKEN not in str(docs)
    job = kube.get(JOBS, NS, NAME)
    assert job is not None and job["spec"] == docs[1]["spec"]
    secret = kube.get(SECRETS, NS, NAME)
    assert secret is not None and secret["stringData"]["LLMOPS_JOB_TOKEN"] == TOKEN  # the pods need the value
    # Owned by the Job, so deleting the Job deletes it (a real cluster's garbage collector does).
    assert secret["metadata"]["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "Job", "name": NAME,
                                                      "uid": "uid-job-1", "blockOwnerDeletion": True,
                                                      "controller": False}]
    await rt.aclose()


async def test_submit_twice_is_idempotent_and_refreshes_the_token(kube: KubeDouble) -> None:
    rt = runtime(kube)
    first = await rt.submit(spec())
    again = await runtime(kube).submit(spec(secret_env={"LLMOPS_JOB_TOKEN": "ljt_newer", "MLFLOW_TRACKING_TOKEN": "x"}))
    assert first == [{**again[0], "stringData": first[0]["stringData"]}, again[1]]
    assert kube.names(JOBS, NS) == [NAME] and kube.names(SECRETS, NS) == [NAME]
    secret = kube.get(SECRETS, NS, NAME)
    assert secret is not None and secret["stringData"]["LLMOPS_JOB_TOKEN"] == "ljt_newer"
    posts = [r for r in kube.emulator if r.method == "POST" and "jobs" in str(r.url)]
    assert len(posts) == 2  # the second was answered 409 AlreadyExists and left as is


async def test_a_name_another_job_holds_is_refused(kube: KubeDouble) -> None:
    await runtime(kube).submit(spec(job_id="trj_other"))
    with pytest.raises(RuntimeFailure, match="belongs to trj_other") as caught:
        await runtime(kube).submit(spec())
    assert not caught.value.retryable


async def test_distributed_submit_follows_the_installed_crds(kube: KubeDouble) -> None:
    two = spec(use_gpu=True, gpus=2, nodes=2)
    docs = await runtime(kube).submit(two)
    assert [d["kind"] for d in docs] == ["Secret", "Service", "Job"]
    assert kube.get(JOBS, NS, NAME)["spec"]["completionMode"] == "Indexed"  # type: ignore[index]
    assert kube.get(SERVICES, NS, NAME) is not None

    kube.install_crd("pytorchjobs.kubeflow.org")
    docs = await runtime(kube).submit(spec(use_gpu=True, gpus=2, nodes=2, attempt=2))
    assert [d["kind"] for d in docs] == ["Secret", "PyTorchJob"]
    assert kube.names(PYTORCHJOBS, NS) == ["tiny-sft-a2"]

    kube.install_crd("trainjobs.trainer.kubeflow.org")
    rt = runtime(kube)
    docs = await rt.submit(spec(use_gpu=True, gpus=2, nodes=2, attempt=3))
    assert [d["kind"] for d in docs] == ["Secret", "TrainJob"]
    assert kube.names(TRAINJOBS, NS) == ["tiny-sft-a3"]
    assert rt.render(spec(nodes=2, attempt=3))[-1]["kind"] == "TrainJob"  # render follows what submit read
    assert await rt.active() == [AttemptRef(job_id=JOB_ID, attempt=n) for n in (1, 2, 3)]


async def test_a_forced_kubeflow_kind_without_its_crd_is_refused(kube: KubeDouble) -> None:
    with pytest.raises(RuntimeFailure, match=r"trainjobs\.trainer\.kubeflow\.org is not installed") as caught:
        await runtime(kube, settings(distributed="trainjob")).submit(spec(nodes=2))
    assert not caught.value.retryable and kube.names(SECRETS) == []


async def test_single_node_status_as_the_cluster_moves_it_along(kube: KubeDouble) -> None:
    rt = runtime(kube)
    assert (await rt.status(JOB_ID, 1)).phase == "absent"
    await rt.submit(spec())
    status = await rt.status(JOB_ID, 1)
    assert (status.phase, status.reason) == ("pending", None)
    creating = pod_body(labels=attempt_labels(), phase="Pending",
                        state={"waiting": {"reason": "ContainerCreating"}})
    kube.put(PODS, NS, f"{NAME}-x1", creating)
    assert (await rt.status(JOB_ID, 1)).reason == "ContainerCreating"
    kube.patch(PODS, NS, f"{NAME}-x1", {"status": {"containerStatuses": [{"name": "trainer", "state": {
        "waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "ghcr.io/llmops/trainer"'}}}]}})
    status = await rt.status(JOB_ID, 1)
    assert (status.phase, status.reason) == ("pending", "ImagePullBackOff") and "Back-off" in status.message
    kube.put(PODS, NS, f"{NAME}-x1", pod_body(labels=attempt_labels()))
    status = await rt.status(JOB_ID, 1)
    assert status.phase == "running" and status.started_at is not None and status.details["nodes"] == ["node-1"]
    kube.patch(JOBS, NS, NAME, {"status": {"completionTime": "2025-01-01T01:00:00Z", "conditions": [
        {"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]}})
    status = await rt.status(JOB_ID, 1)
    assert (status.phase, status.finished_at) == ("succeeded", 1735693200.0)
    # After a restart (nothing cached) the attempt is found by its labels.
    assert (await runtime(kube).status(JOB_ID, 1)).phase == "succeeded"


def _job_failed(reason: str, message: str = "") -> dict[str, Any]:
    return {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": reason, "message": message,
                                       "lastTransitionTime": "2025-01-01T00:10:01Z"}]}}


FAILURES: list[tuple[str, dict[str, Any] | None, dict[str, Any], tuple[str, str | None, int | None]]] = [
    ("exit code 3", _job_failed("BackoffLimitExceeded"),
     pod_body(labels=attempt_labels(), phase="Failed", state=terminated(3, message="loss is nan")),
     ("failed", "Error", 3)),
    ("failed pod before the Job says so", None,
     pod_body(labels=attempt_labels(), phase="Failed", state=terminated(3)), ("failed", "Error", 3)),
    ("out of memory", _job_failed("PodFailurePolicy"),
     pod_body(labels=attempt_labels(), phase="Failed", state=terminated(137, "OOMKilled")),
     ("failed", "OOMKilled", 137)),
    ("deadline", _job_failed("DeadlineExceeded", "Job was active longer than specified deadline"),
     pod_body(labels=attempt_labels(), phase="Failed", state=terminated(143)), ("failed", "DeadlineExceeded", None)),
    ("evicted", _job_failed("BackoffLimitExceeded"),
     pod_body(labels=attempt_labels(), phase="Failed", reason="Evicted", state=terminated(137)),
     ("failed", "Evicted", None)),
    ("node lost", None,
     pod_body(labels=attempt_labels(), phase="Running", conditions=[
         {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
          "message": "Taint manager: deleting due to NoExecute taint"}]), ("failed", "NodeLost", None)),
    ("no pod left to say why", _job_failed("BackoffLimitExceeded", "Job has reached the specified backoff limit"),
     {}, ("failed", "BackoffLimitExceeded", None)),
    ("unschedulable", None,
     pod_body(labels=attempt_labels(), phase="Pending", state={}, conditions=[
         {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
          "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]), ("pending", "Unschedulable", None)),
]


@pytest.mark.parametrize(("job_patch", "pod", "expected"), [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES])
async def test_failure_causes(kube: KubeDouble, job_patch: dict[str, Any] | None, pod: dict[str, Any],
                              expected: tuple[str, str | None, int | None]) -> None:
    rt = runtime(kube)
    await rt.submit(spec())
    if job_patch is not None:
        kube.patch(JOBS, NS, NAME, job_patch)
    if pod:
        kube.put(PODS, NS, f"{NAME}-p", pod)
    status = await rt.status(JOB_ID, 1)
    assert (status.phase, status.reason, status.exit_code) == expected
    assert status.message


async def test_distributed_failure_reports_the_first_rank_that_failed(kube: KubeDouble) -> None:
    rt = runtime(kube)
    await rt.submit(spec(nodes=3))
    labels = attempt_labels()
    # Rank 2 ran out of memory first; ranks 0 and 1 died of the broken collective after it.
    kube.put(PODS, NS, f"{NAME}-0", pod_body(labels=labels, index=0, phase="Failed", state=terminated(
        1, finished="2025-01-01T00:10:09Z", message="NCCL error")))
    kube.put(PODS, NS, f"{NAME}-1", pod_body(labels=labels, index=1, phase="Failed", state=terminated(
        1, finished="2025-01-01T00:10:08Z")))
    kube.put(PODS, NS, f"{NAME}-2", pod_body(labels=labels, index=2, phase="Failed", state=terminated(
        137, "OOMKilled", finished="2025-01-01T00:10:00Z")))
    kube.patch(JOBS, NS, NAME, _job_failed("PodFailurePolicy"))
    status = await rt.status(JOB_ID, 1)
    assert (status.phase, status.reason, status.exit_code) == ("failed", "OOMKilled", 137)
    assert f"{NAME}-2" in status.message


async def test_distributed_is_running_only_once_every_node_runs(kube: KubeDouble) -> None:
    rt = runtime(kube)
    await rt.submit(spec(nodes=2))
    kube.put(PODS, NS, f"{NAME}-0", pod_body(labels=attempt_labels(), index=0))
    status = await rt.status(JOB_ID, 1)
    assert (status.phase, status.message) == ("pending", "1/2 pods running")
    kube.put(PODS, NS, f"{NAME}-1", pod_body(labels=attempt_labels(), index=1, node="node-2"))
    status = await rt.status(JOB_ID, 1)
    assert status.phase == "running" and status.details["nodes"] == ["node-1", "node-2"]


async def test_kubeflow_status_from_conditions_and_pods(kube: KubeDouble) -> None:
    kube.install_crd("trainjobs.trainer.kubeflow.org")
    kube.install_crd("pytorchjobs.kubeflow.org")
    rt = runtime(kube)
    await rt.submit(spec(nodes=2))
    assert (await rt.status(JOB_ID, 1)).details["kind"] == "TrainJob"
    # A TrainJob's pods carry its JobSet's labels, not ours; an initializer's pod is no rank.
    jobset = {"jobset.sigs.k8s.io/jobset-name": NAME, "jobset.sigs.k8s.io/replicatedjob-name": "node"}
    kube.put(PODS, NS, f"{NAME}-dataset-initializer-0-0-x", pod_body(labels={
        **jobset, "jobset.sigs.k8s.io/replicatedjob-name": "dataset-initializer"}, container="dataset-initializer"))
    kube.put(PODS, NS, f"{NAME}-node-0-0-x", pod_body(labels=jobset, index=0, container="node"))
    kube.put(PODS, NS, f"{NAME}-node-0-1-x", pod_body(labels=jobset, index=1, container="node", phase="Failed",
                                                      state=terminated(2)))
    # Not failed: Trainer's runtime may restart that pod (its JobSet's policy); only the conditions end it.
    status = await rt.status(JOB_ID, 1)
    assert (status.phase, status.message, status.details["pods"]) == ("pending", "1/2 pods running",
                                                                      {"Failed": 1, "Running": 1})
    kube.patch(TRAINJOBS, NS, NAME, _job_failed("Failed", "jobset failed"))
    status = await rt.status(JOB_ID, 1)
    assert (status.phase, status.reason, status.exit_code) == ("failed", "Error", 2)

    kube.remove(TRAINJOBS, NS, NAME)
    rt = runtime(kube, settings(distributed="pytorchjob"))
    await rt.submit(spec(nodes=2, attempt=2))
    kube.patch(PYTORCHJOBS, NS, "tiny-sft-a2", {"status": {"conditions": [
        {"type": "Created", "status": "True"}, {"type": "Running", "status": "True"}]}})
    assert (await rt.status(JOB_ID, 2)).phase == "running"
    kube.patch(PYTORCHJOBS, NS, "tiny-sft-a2", {"status": {"completionTime": "2025-01-01T02:00:00Z", "conditions": [
        {"type": "Running", "status": "False"}, {"type": "Succeeded", "status": "True"}]}})
    assert (await rt.status(JOB_ID, 2)).phase == "succeeded"


async def test_cancel_deletes_everything(kube: KubeDouble) -> None:
    rt = runtime(kube)
    await rt.submit(spec(nodes=2))
    for i in range(2):
        kube.put(PODS, NS, f"{NAME}-{i}", pod_body(labels=attempt_labels(), index=i))
    kube.put(PODS, NS, "someone-else", pod_body(labels={"app": "other"}))
    await rt.cancel(JOB_ID, 1, grace_s=7)
    assert kube.names(JOBS) == [] and kube.names(SECRETS) == [] and kube.names(SERVICES) == []
    assert kube.names(PODS) == ["someone-else"]
    deletes = {str(r.url.path).rsplit("/", 2)[-2]: r.params for r in kube.emulator if r.method == "DELETE"}
    assert deletes["jobs"] == {"propagationPolicy": "Foreground", "gracePeriodSeconds": "7"}
    assert deletes["pods"] == {"gracePeriodSeconds": "7"}
    assert (await rt.status(JOB_ID, 1)).phase == "absent"
    await rt.cancel(JOB_ID, 1)  # already gone is fine
    await rt.cleanup(JOB_ID, 1)


async def test_cleanup_after_a_restart_and_of_a_half_done_submit(kube: KubeDouble) -> None:
    await runtime(kube).submit(spec())
    await runtime(kube).submit(spec(attempt=2))
    kube.remove(JOBS, NS, "tiny-sft-a2")  # the Job was never created: only its Secret is left
    rt = runtime(kube)  # a new process: nothing cached
    await rt.cleanup(JOB_ID, 1)
    await rt.cleanup(JOB_ID, 2)
    assert kube.names(JOBS) == [] and kube.names(SECRETS) == []


async def test_active_lists_attempts_by_label_only(kube: KubeDouble) -> None:
    rt = runtime(kube)
    assert await rt.active() == []
    await rt.submit(spec())
    await rt.submit(spec(job_id="trj_0002", job_name="other", attempt=3))
    kube.put(JOBS, NS, "not-ours", {"metadata": {"labels": {"app": "batch"}}, "spec": {}})
    assert await runtime(kube).active() == [AttemptRef(job_id=JOB_ID, attempt=1),
                                            AttemptRef(job_id="trj_0002", attempt=3)]


async def test_logs_rank_0_first_and_a_missing_log_is_no_error(kube: KubeDouble) -> None:
    rt = runtime(kube)
    await rt.submit(spec(nodes=3))
    for i in (2, 1, 0):
        kube.put(PODS, NS, f"{NAME}-{i}", pod_body(labels=attempt_labels(), index=i))
    kube.set_pod_log(NS, f"{NAME}-0", f"step 1 loss 2.5\nstep 2 loss 2.1 token={TOKEN}\n")
    kube.set_pod_log(NS, f"{NAME}-1", "worker ready\n")
    kube.emulator["get", f"/api/v1/namespaces/{NS}/pods/{NAME}-2/log"] << kmock.KubernetesError(
        status=400, reason="BadRequest", message='container "trainer" is waiting to start: ContainerCreating')
    text = await rt.logs(JOB_ID, 1, tail_lines=50)
    assert text.splitlines() == ["[rank 0] step 1 loss 2.5", "[rank 0] step 2 loss 2.1 token=ljt_***",
                                 "[rank 1] worker ready"]
    log_calls = [r for r in kube.emulator if str(r.url.path).endswith("/log")]
    assert log_calls and all(r.params == {"container": "trainer", "tailLines": "50"} for r in log_calls)
    assert await rt.logs("trj_none", 1) == ""


async def test_an_unreachable_api_server_is_a_retryable_failure(kube: KubeDouble) -> None:
    rt = runtime(kube)
    await kube.stop()
    started = time.monotonic()
    for call in (rt.submit(spec()), rt.status(JOB_ID, 1), rt.cancel(JOB_ID, 1), rt.active(), rt.logs(JOB_ID, 1)):
        with pytest.raises(RuntimeFailure, match="unreachable") as caught:
            await call
        assert caught.value.retryable
    assert time.monotonic() - started < 30


async def test_a_refusal_is_final_and_leaves_nothing_behind(kube: KubeDouble) -> None:
    kube.emulator["post", kmock.resource(JOBS)] << kmock.KubernetesError(
        status=403, reason="Forbidden",
        message='jobs.batch is forbidden: User "system:serviceaccount:llmops:llmops" cannot create resource')
    with pytest.raises(RuntimeFailure) as caught:
        await runtime(kube).submit(spec())
    assert caught.value.reason.startswith(f"Kubernetes refused Job/{NAME}: 403")
    assert "cannot create" in caught.value.reason and not caught.value.retryable
    assert kube.names(SECRETS) == []  # the Secret made just before was removed again


async def test_no_secret_in_any_log_line(kube: KubeDouble, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    rt = runtime(kube)
    await rt.submit(spec(nodes=2))
    await rt.submit(spec(nodes=2))
    await rt.status(JOB_ID, 1)
    await rt.cancel(JOB_ID, 1)
    await rt.aclose()
    assert caplog.records and not [r for r in caplog.records if TOKEN in r.getMessage()]


async def test_from_a_kubeconfig(kube: KubeDouble, tmp_path: Path) -> None:
    kubeconfig: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Config", "current-context": "double",
        "clusters": [{"name": "double", "cluster": {"server": kube.url}}],
        "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "double", "context": {"cluster": "double", "user": "u"}}]}
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    rt = KubernetesTrainingRuntime(settings(kubeconfig=str(path)))
    try:
        await rt.submit(spec())
        assert kube.get(JOBS, NS, NAME) is not None
    finally:
        await rt.aclose()
    with pytest.raises(RuntimeFailure, match="TRAINING_KUBECONFIG"):
        KubernetesTrainingRuntime(settings(kubeconfig=str(tmp_path / "missing")))
