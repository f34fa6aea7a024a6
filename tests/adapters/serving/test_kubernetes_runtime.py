"""KubernetesRuntime through the official client against kmock's emulated API server (a TEST DOUBLE, see
kube_double): apply, the cluster facts it reads, KServe mode, and delete, including with the API server down."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kmock
import kubernetes_validate
import pytest
import yaml

from adapters.serving.base import ServingRuntime
from adapters.serving.kubernetes import KubernetesRuntime
from adapters.serving.settings import ServingSettings
from tests.adapters.serving.kube_double import KubeDouble, open_kube_double
from tests.adapters.serving.kube_specs import NS, settings, spec

DEPLOYMENTS = "apps/v1/deployments"
SERVICES = "v1/services"
HPAS = "autoscaling/v2/horizontalpodautoscalers"
SCALED = "keda.sh/v1alpha1/scaledobjects"
ISVCS = "serving.kserve.io/v1beta1/inferenceservices"


@pytest.fixture
async def kube() -> AsyncIterator[KubeDouble]:
    async with open_kube_double() as double:
        yield double


def runtime(kube: KubeDouble, cfg: ServingSettings | None = None) -> KubernetesRuntime:
    return KubernetesRuntime(cfg or settings(), kube.api_client())


def test_implements_the_protocol() -> None:
    rt: ServingRuntime = KubernetesRuntime(settings())
    assert rt.name == "kubernetes"


async def test_apply_creates_the_slot_and_returns_valid_manifests(kube: KubeDouble) -> None:
    kube.add_node("gpu-1", gpus=2)
    rt = runtime(kube)
    docs = await rt.apply(spec(), "stable")
    assert [d["kind"] for d in docs] == ["Service", "Deployment"]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30", strict=True)
    stored = kube.get(DEPLOYMENTS, NS, "llama")
    assert stored is not None and stored["spec"] == docs[1]["spec"]
    assert kube.get(SERVICES, NS, "llama") is not None
    assert rt.render(spec(), "stable") == docs  # render: what apply sent, from the facts apply read
    await rt.apply(spec(), "canary")
    assert kube.names(DEPLOYMENTS, NS) == ["llama", "llama-canary"]
    await rt.aclose()


async def test_reapply_patches_in_place(kube: KubeDouble) -> None:
    rt = runtime(kube)
    kube.add_node("gpu-1", gpus=2)
    await rt.apply(spec(revision=1, vllm_args=["--enforce-eager"]), "stable")
    kube.remove("v1/nodes", None, "gpu-1")  # no GPU left for a surge pod now
    await rt.apply(spec(revision=2), "stable")
    stored = kube.get(DEPLOYMENTS, NS, "llama")
    assert stored is not None
    assert stored["metadata"]["labels"]["llmops.io/revision"] == "2"
    assert stored["spec"]["template"]["metadata"]["labels"]["llmops.io/revision"] == "2"
    assert "--enforce-eager" not in stored["spec"]["template"]["spec"]["containers"][0]["args"]
    # Switched to Recreate, with the rolling parameters removed (the API rejects them beside Recreate).
    assert stored["spec"]["strategy"] == {"type": "Recreate"}


async def test_rolling_update_only_with_a_spare_gpu(kube: KubeDouble) -> None:
    rt = runtime(kube)
    kube.add_node("gpu-1", gpus=2)
    kube.add_node("gpu-2", gpus=2)
    kube.add_node("cordoned", gpus=8, unschedulable=True)
    kube.add_pod("other", "train-0", node="gpu-1", gpus=2)
    kube.add_pod(NS, "llama-abc-1", node="gpu-2", gpus=1)
    kube.add_pod("other", "done", node="gpu-2", gpus=1, phase="Succeeded")
    # One GPU spare on gpu-2: a 1-GPU surge pod fits, a 2-GPU one does not.
    await rt.apply(spec(gpu_count=1), "stable")
    stable = kube.get(DEPLOYMENTS, NS, "llama")
    assert stable is not None and stable["spec"]["strategy"]["type"] == "RollingUpdate"
    await rt.apply(spec(gpu_count=2), "stable")
    stable = kube.get(DEPLOYMENTS, NS, "llama")
    assert stable is not None and stable["spec"]["strategy"] == {"type": "Recreate"}
    reason = stable["metadata"]["annotations"]["llmops.io/strategy-reason"]
    assert "1 spare" in reason
    status = await rt.status("ep_llama", "llama", "stable")
    assert status.details["strategy"] == "Recreate" and status.details["strategyReason"] == reason
    # CPU-only always rolls, spare GPUs or not.
    await rt.apply(spec(use_gpu=False), "stable")
    stable = kube.get(DEPLOYMENTS, NS, "llama")
    assert stable is not None and stable["spec"]["strategy"]["type"] == "RollingUpdate"


async def test_unreadable_capacity_means_recreate(kube: KubeDouble) -> None:
    """Without RBAC to list nodes, no surge pod is risked: a GPU slot is Recreated, and apply goes on."""
    kube.add_node("gpu-1", gpus=8)
    kube.emulator["get", kmock.resource("v1/nodes")] << kmock.KubernetesError(
        status=403, reason="Forbidden", message="nodes is forbidden")
    await runtime(kube).apply(spec(), "stable")
    stable = kube.get(DEPLOYMENTS, NS, "llama")
    assert stable is not None and stable["spec"]["strategy"] == {"type": "Recreate"}
    assert "unknown" in stable["metadata"]["annotations"]["llmops.io/strategy-reason"]


async def test_autoscaler_keda_when_installed_else_hpa(kube: KubeDouble) -> None:
    cfg = settings(gateway_metrics_url="http://prometheus:9090")
    rt = runtime(kube, cfg)
    scaled = spec(use_gpu=False, min_replicas=1, max_replicas=4)
    docs = await rt.apply(scaled, "stable")
    assert [d["kind"] for d in docs] == ["Service", "Deployment", "HorizontalPodAutoscaler"]
    assert kube.get(HPAS, NS, "llama") is not None
    kube.install_crd("scaledobjects.keda.sh")
    docs = await rt.apply(scaled, "stable")
    assert [d["kind"] for d in docs] == ["Service", "Deployment", "ScaledObject"]
    assert kube.get(SCALED, NS, "llama") is not None
    assert kube.get(HPAS, NS, "llama") is None  # the old HPA no longer fights KEDA
    # min == max: no autoscaler at all, and the ScaledObject goes.
    await rt.apply(spec(use_gpu=False, min_replicas=2, max_replicas=2), "stable")
    assert kube.get(SCALED, NS, "llama") is None and kube.get(HPAS, NS, "llama") is None
    stored = kube.get(DEPLOYMENTS, NS, "llama")
    assert stored is not None and stored["spec"]["replicas"] == 2


async def test_a_new_process_still_removes_a_stale_scaled_object(kube: KubeDouble) -> None:
    cfg = settings(gateway_metrics_url="http://prometheus:9090")
    kube.install_crd("scaledobjects.keda.sh")
    await runtime(kube, cfg).apply(spec(use_gpu=False, min_replicas=0, max_replicas=2), "stable")
    assert kube.get(SCALED, NS, "llama") is not None
    await runtime(kube, cfg).apply(spec(use_gpu=False, revision=2), "stable")  # after a restart: min == max
    assert kube.get(SCALED, NS, "llama") is None


def test_render_before_any_apply_previews_without_failing() -> None:
    """The serving module renders inside its write transaction, before the runtime has read the cluster."""
    rt = KubernetesRuntime(settings(gateway_metrics_url="http://prometheus:9090"))
    docs = rt.render(spec(min_replicas=0, max_replicas=2), "stable")
    assert [d["kind"] for d in docs] == ["Service", "Deployment", "ScaledObject"]
    assert docs[1]["spec"]["strategy"] == {"type": "Recreate"}  # spare GPUs unknown yet


async def test_scale_to_zero_refused_without_keda(kube: KubeDouble) -> None:
    from adapters.serving.base import RuntimeFailure

    rt = runtime(kube, settings(gateway_metrics_url="http://prometheus:9090"))
    with pytest.raises(RuntimeFailure, match="KEDA") as caught:
        await rt.apply(spec(use_gpu=False, min_replicas=0, max_replicas=2), "stable")
    assert not caught.value.retryable
    assert kube.names(DEPLOYMENTS) == []  # nothing half-created
    kube.install_crd("scaledobjects.keda.sh")
    await rt.apply(spec(use_gpu=False, min_replicas=0, max_replicas=2), "stable")
    scaled = kube.get(SCALED, NS, "llama")
    assert scaled is not None and scaled["spec"]["minReplicaCount"] == 0


async def test_kserve_mode(kube: KubeDouble) -> None:
    rt = runtime(kube, settings(kserve=True))
    docs = await rt.apply(spec(min_replicas=1, max_replicas=2), "canary")
    assert [d["kind"] for d in docs] == ["InferenceService"]
    assert kube.names(ISVCS, NS) == ["llama-canary"] and kube.names(DEPLOYMENTS) == []
    status = await rt.status("ep_llama", "llama", "canary")
    assert status.phase == "progressing" and status.revision == 1
    assert status.base_url == f"http://llama-canary-predictor.{NS}.svc.cluster.local/v1"
    kube.patch(ISVCS, NS, "llama-canary", {"status": {
        "url": "http://llama-canary.serving-test.example.com",
        "conditions": [{"type": "PredictorReady", "status": "True"}, {"type": "Ready", "status": "True"}]}})
    kube.add_pod(NS, "llama-canary-predictor-1", labels={"serving.kserve.io/inferenceservice": "llama-canary"})
    status = await rt.status("ep_llama", "llama", "canary")
    assert (status.phase, status.ready_replicas) == ("ready", 1)
    assert status.base_url == "http://llama-canary.serving-test.example.com/v1"
    kube.patch(ISVCS, NS, "llama-canary", {"status": {
        "conditions": [{"type": "Ready", "status": "False", "reason": "RevisionFailed"}],
        "modelStatus": {"transitionStatus": "BlockedByFailedLoad",
                        "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "no such repo"}}}})
    status = await rt.status("ep_llama", "llama", "canary")
    assert (status.phase, status.reason) == ("failed", "ModelLoadFailed")
    assert (await rt.status("ep_other", "llama", "canary")).reason == "NameTaken"
    report = await rt.delete("ep_llama", "llama", "canary")
    assert report.deleted == ["InferenceService/llama-canary"] and report.complete
    assert (await rt.status("ep_llama", "llama", "canary")).phase == "absent"


async def test_delete_both_slots_with_some_already_gone(kube: KubeDouble) -> None:
    rt = runtime(kube, settings(autoscaler="hpa"))
    await rt.apply(spec(use_gpu=False, max_replicas=3), "stable")
    await rt.apply(spec(use_gpu=False), "canary")
    kube.remove(SERVICES, NS, "llama")  # someone deleted it by hand
    report = await rt.delete("ep_llama", "llama")
    assert sorted(report.deleted) == ["Deployment/llama", "Deployment/llama-canary", "HorizontalPodAutoscaler/llama",
                                      "Service/llama-canary"]
    assert report.already_gone == ["Service/llama"]
    assert report.failed == {} and report.complete
    assert kube.names(DEPLOYMENTS) == [] and kube.names(SERVICES) == [] and kube.names(HPAS) == []
    deletes = [r for r in kube.emulator if r.method == "DELETE"]
    assert deletes and all(r.params.get("propagationPolicy") == "Background" for r in deletes)  # pods go too
    again = await rt.delete("ep_llama", "llama")
    assert again.deleted == [] and again.complete
    assert "Deployment/llama" in again.already_gone and "Service/llama-canary" in again.already_gone


async def test_delete_leaves_another_endpoints_objects_alone(kube: KubeDouble) -> None:
    rt = runtime(kube)
    await rt.apply(spec(use_gpu=False), "stable")
    report = await rt.delete("ep_someone_else", "llama", "stable")
    assert report.deleted == [] and report.complete
    assert kube.get(DEPLOYMENTS, NS, "llama") is not None and kube.get(SERVICES, NS, "llama") is not None


async def test_delete_with_the_api_server_down_reports_every_resource(kube: KubeDouble) -> None:
    rt = runtime(kube)
    await rt.apply(spec(use_gpu=False), "stable")
    await kube.stop()
    started = time.monotonic()
    report = await rt.delete("ep_llama", "llama")
    assert time.monotonic() - started < 20
    assert not report.complete and report.deleted == [] and report.already_gone == []
    assert {"Deployment/llama", "Service/llama", "Deployment/llama-canary", "Service/llama-canary"} <= set(
        report.failed)
    assert all("unreachable" in why for why in report.failed.values())


async def test_apply_and_status_with_the_api_server_down_raise_runtime_failure(kube: KubeDouble) -> None:
    from adapters.serving.base import RuntimeFailure

    rt = runtime(kube)
    await kube.stop()
    with pytest.raises(RuntimeFailure, match="unreachable") as caught:
        await rt.apply(spec(use_gpu=False), "stable")
    assert caught.value.retryable
    with pytest.raises(RuntimeFailure, match="unreachable"):
        await rt.status("ep_llama", "llama", "stable")


async def test_api_refusal_is_a_runtime_failure_with_the_reason(kube: KubeDouble) -> None:
    from adapters.serving.base import RuntimeFailure

    # The API server answers 403 for Deployments (RBAC): the reason says which object and why.
    kube.emulator["post", kmock.resource("apps/v1/deployments")] << kmock.KubernetesError(
        status=403, reason="Forbidden",
        message='deployments.apps is forbidden: User "system:serviceaccount:llmops:llmops" cannot create')
    rt = runtime(kube)
    with pytest.raises(RuntimeFailure) as caught:
        await rt.apply(spec(use_gpu=False), "stable")
    assert caught.value.reason.startswith("Kubernetes refused Deployment/llama: 403")
    assert "cannot create" in caught.value.reason and not caught.value.retryable


async def test_from_settings_reads_the_kubeconfig(kube: KubeDouble, tmp_path: Path) -> None:
    kubeconfig: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Config", "current-context": "double",
        "clusters": [{"name": "double", "cluster": {"server": kube.url}}],
        "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "double", "context": {"cluster": "double", "user": "u"}}]}
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    rt = KubernetesRuntime.from_settings(settings(kubeconfig=str(path)))
    try:
        await rt.apply(spec(use_gpu=False), "stable")
        assert kube.get(DEPLOYMENTS, NS, "llama") is not None
    finally:
        await rt.aclose()


def test_from_settings_without_any_config_fails_clearly(tmp_path: Path) -> None:
    from adapters.serving.base import RuntimeFailure

    with pytest.raises(RuntimeFailure, match="SERVING_KUBECONFIG"):
        KubernetesRuntime.from_settings(settings(kubeconfig=str(tmp_path / "missing")))
