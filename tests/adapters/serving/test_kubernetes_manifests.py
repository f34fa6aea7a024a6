"""The slot's manifests: typed models that pass the Kubernetes 1.30 schema (strict), and what they ask for."""

from __future__ import annotations

import math
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from adapters.serving.base import Autoscaling, RuntimeFailure, Slot
from adapters.serving.kubernetes.capacity import GpuCapacity
from adapters.serving.kubernetes.manifests import ClusterFacts, build_slot, merge_patch, to_dicts
from adapters.serving.kubernetes.pod import _FETCH_SCRIPT
from tests.adapters.serving.crd_schemas import validate_inference_service, validate_scaled_object
from tests.adapters.serving.kube_specs import NS, settings, spec

ROOMY = ClusterFacts(capacity=GpuCapacity(allocatable=8, requested=2, largest_node_spare=6))


def _by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs}


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]["containers"][0]


def _validate(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, "1.30", strict=True)


def test_gpu_slot_validates_and_asks_for_its_gpus() -> None:
    cfg = settings(image_pull_secret="regcred")
    docs = _by_kind(to_dicts(build_slot(spec(gpu_count=2, cfg=cfg), "stable", cfg, ROOMY).manifests))
    assert sorted(docs) == ["Deployment", "Service"]  # min == max: no autoscaler
    for doc in docs.values():
        _validate(doc)
    deployment = docs["Deployment"]
    container = _container(deployment)
    assert container["resources"] == {
        "requests": {"cpu": cfg.cpu_request, "memory": cfg.memory_request, "nvidia.com/gpu": "2"},
        "limits": {"cpu": cfg.cpu_limit, "memory": cfg.memory_limit, "nvidia.com/gpu": "2"}}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in pod["volumes"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert container["args"] == ["--model", "meta-llama/Llama-3.1-8B-Instruct", "--served-model-name",
                                 "llama-3.1-8b", "--host", "0.0.0.0", "--port", "8000"]
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert container["image"] == cfg.default_image


def test_cpu_only_slot_has_no_gpu_and_always_rolls() -> None:
    cfg = settings()
    docs = _by_kind(to_dicts(build_slot(spec(use_gpu=False, cfg=cfg), "stable", cfg, ClusterFacts()).manifests))
    _validate(docs["Deployment"])
    container = _container(docs["Deployment"])
    assert container["resources"] == {
        "requests": {"cpu": cfg.cpu_only_cpu_request, "memory": cfg.cpu_only_memory_request},
        "limits": {"cpu": cfg.cpu_only_cpu_limit, "memory": cfg.cpu_only_memory_limit}}
    assert "tolerations" not in docs["Deployment"]["spec"]["template"]["spec"]
    assert docs["Deployment"]["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert container["image"] == cfg.cpu_only_image


def test_probes_never_kill_a_loading_model() -> None:
    cfg = settings(startup_timeout_s=905)
    container = _container(to_dicts(build_slot(spec(cfg=cfg), "stable", cfg, ROOMY).manifests)[1])
    startup = container["startupProbe"]
    assert startup["httpGet"] == {"path": "/health", "port": "http"}
    assert startup["periodSeconds"] == 10
    assert startup["failureThreshold"] == math.ceil(905 / 10) == 91
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/models"
    liveness = container["livenessProbe"]
    assert liveness["httpGet"]["path"] == "/health"
    assert liveness["failureThreshold"] * liveness["periodSeconds"] >= 60  # lenient once started


def test_labels_names_and_service_per_slot() -> None:
    cfg = settings()
    slots: tuple[tuple[Slot, str], ...] = (("stable", "llama"), ("canary", "llama-canary"))
    for slot, name in slots:
        docs = _by_kind(to_dicts(build_slot(spec(revision=7, cfg=cfg), slot, cfg, ROOMY).manifests))
        selector = {"app.kubernetes.io/name": "llmops-endpoint", "llmops.io/endpoint-id": "ep_llama",
                    "llmops.io/slot": slot}
        for doc in docs.values():
            assert doc["metadata"]["name"] == name and doc["metadata"]["namespace"] == NS
            assert doc["metadata"]["labels"] == {**selector, "app.kubernetes.io/managed-by": "llmops",
                                                 "llmops.io/revision": "7", "llmops.io/environment": "DEV"}
        template_labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
        assert template_labels["llmops.io/revision"] == "7"
        # Selectors leave the revision out: a new revision rolls the same Deployment, the Service keeps routing.
        assert docs["Deployment"]["spec"]["selector"] == {"matchLabels": selector}
        assert docs["Service"]["spec"]["selector"] == selector
        assert docs["Service"]["spec"]["ports"] == [
            {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]


def test_vllm_args_follow_the_runtime_ones() -> None:
    cfg = settings()
    s = spec(cfg=cfg, vllm_args=["--max-model-len", "8192", "--gpu-memory-utilization=0.9"])
    args = _container(to_dicts(build_slot(s, "stable", cfg, ROOMY).manifests)[1])["args"]
    assert args[-3:] == ["--max-model-len", "8192", "--gpu-memory-utilization=0.9"]


def test_model_files_come_from_object_storage_in_an_init_container() -> None:
    cfg = settings(model_storage_uri="s3://models-bucket/llmops/")
    s = spec(cfg=cfg, model_files=["models/mdl_1/up_1/model.gguf"], model_uri="/models/mdl_1/model.gguf")
    deployment = to_dicts(build_slot(s, "stable", cfg, ROOMY).manifests)[1]
    _validate(deployment)
    pod = deployment["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["args"] == ["s3://models-bucket/llmops", "/models/mdl_1", "models/mdl_1/up_1/model.gguf"]
    assert init["envFrom"] == [{"secretRef": {"name": "llmops-model-storage", "optional": True}}]
    assert {"name": "models", "mountPath": "/models"} in init["volumeMounts"]
    assert {"name": "models", "mountPath": "/models"} in pod["containers"][0]["volumeMounts"]
    assert pod["containers"][0]["args"][:2] == ["--model", "/models/mdl_1/model.gguf"]
    # No storage configured, or no files: nothing to fetch.
    for cfg2, s2 in ((settings(), s), (cfg, spec(cfg=cfg))):
        assert "initContainers" not in to_dicts(build_slot(s2, "stable", cfg2, ROOMY).manifests)[1]["spec"][
            "template"]["spec"]
    with pytest.raises(RuntimeFailure, match="s3://"):
        build_slot(s, "stable", settings(model_storage_uri="gs://bucket"), ROOMY)


def test_fetch_script_copies_each_key_and_interprets_none(tmp_path: Path) -> None:
    """Runs the init container's script with a stand-in ``aws`` that copies from a local 'bucket'."""
    bucket = tmp_path / "bucket"
    (bucket / "models/mdl_1/up_1").mkdir(parents=True)
    (bucket / "models/mdl_1/up_1/config.json").write_text("{}")
    (bucket / "models/mdl_1/up_1/w $(touch pwned).bin").write_text("w")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    aws = bin_dir / "aws"
    # Called as: aws s3 cp --only-show-errors SRC DEST
    aws.write_text(f'#!/bin/sh\nsrc="$4"; cp "{bucket}/${{src#s3://b/}}" "$5"\n')
    aws.chmod(aws.stat().st_mode | stat.S_IEXEC)
    dest = tmp_path / "models" / "mdl_1"
    keys = ["models/mdl_1/up_1/config.json", "models/mdl_1/up_1/w $(touch pwned).bin"]
    subprocess.run(["/bin/sh", "-c", _FETCH_SCRIPT, "fetch-model", "s3://b", str(dest), *keys],
                   check=True, cwd=tmp_path, env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
                   timeout=10)
    assert sorted(p.name for p in dest.iterdir()) == ["config.json", "w $(touch pwned).bin"]
    assert not (tmp_path / "pwned").exists()


def test_hpa_on_vllm_queue_when_replicas_range() -> None:
    cfg = settings(autoscaler="hpa")
    s = spec(cfg=cfg, autoscaling=Autoscaling(min_replicas=1, max_replicas=4, target_queue_length=2.5,
                                              scale_down_delay_s=7200))
    plan = build_slot(s, "stable", cfg, ROOMY)
    docs = _by_kind(to_dicts(plan.manifests))
    assert plan.autoscaler == "hpa" and sorted(docs) == ["Deployment", "HorizontalPodAutoscaler", "Service"]
    hpa = docs["HorizontalPodAutoscaler"]
    _validate(hpa)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    assert hpa["spec"]["metrics"] == [{"type": "Pods", "pods": {
        "metric": {"name": "vllm_num_requests_waiting"}, "target": {"type": "AverageValue", "averageValue": "2500m"}}}]
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 3600  # the API's maximum
    assert docs["Deployment"]["spec"]["replicas"] == 1


def test_scale_to_zero_needs_keda() -> None:
    s = spec(min_replicas=0, max_replicas=2)
    for cfg in (settings(autoscaler="hpa"), settings(autoscaler="auto", gateway_metrics_url="http://prom:9090")):
        with pytest.raises(RuntimeFailure, match="KEDA"):
            build_slot(s, "stable", cfg, ClusterFacts(keda_installed=False))
    with pytest.raises(RuntimeFailure, match="SERVING_GATEWAY_METRICS_URL"):
        build_slot(s, "stable", settings(autoscaler="keda"), ClusterFacts())
    with pytest.raises(RuntimeFailure, match="exceeds"):
        build_slot(spec(min_replicas=3, max_replicas=2), "stable", settings(), ClusterFacts())


def test_keda_scaled_object_wakes_on_gateway_queue() -> None:
    cfg = settings(autoscaler="auto", gateway_metrics_url="http://prometheus.monitoring:9090")
    s = spec(cfg=cfg, min_replicas=0, max_replicas=3, labels={"llmops.io/route": 'team/llama:"8b"'})
    plan = build_slot(s, "canary", cfg, ClusterFacts(keda_installed=True, capacity=ROOMY.capacity))
    docs = _by_kind(to_dicts(plan.manifests))
    assert plan.autoscaler == "keda" and sorted(docs) == ["Deployment", "ScaledObject", "Service"]
    so = docs["ScaledObject"]
    validate_scaled_object(so)
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    assert so["metadata"]["name"] == "llama-canary"
    assert "llmops.io/route" not in so["metadata"]["labels"]  # not a valid label value; an annotation instead
    assert so["metadata"]["annotations"]["llmops.io/route"] == 'team/llama:"8b"'
    spec_ = so["spec"]
    assert spec_["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama-canary"}
    assert (spec_["minReplicaCount"], spec_["maxReplicaCount"]) == (0, 3)
    vllm, gateway = spec_["triggers"]
    assert vllm["type"] == gateway["type"] == "prometheus"
    assert vllm["metadata"]["serverAddress"] == gateway["metadata"]["serverAddress"] == cfg.gateway_metrics_url
    assert vllm["metadata"]["query"] == ('sum(vllm:num_requests_waiting{namespace="serving-test",'
                                         'pod=~"llama-canary-[a-z0-9]+-[a-z0-9]+"}) or vector(0)')
    assert gateway["metadata"]["query"] == 'sum(llmops_route_queued_requests{route="team/llama:\\"8b\\""}) or vector(0)'
    assert float(vllm["metadata"]["threshold"]) == 5.0 and gateway["metadata"]["activationThreshold"] == "0"
    # The deployment's first rollout runs one replica; the deployment itself validates.
    _validate(docs["Deployment"])
    assert docs["Deployment"]["spec"]["replicas"] == 1


def test_keda_auto_without_metrics_url_falls_back_to_hpa() -> None:
    plan = build_slot(spec(max_replicas=3), "stable", settings(), ClusterFacts(keda_installed=True))
    assert plan.autoscaler == "hpa"


def test_kserve_inference_service() -> None:
    cfg = settings(kserve=True, image_pull_secret="regcred")
    plan = build_slot(spec(gpu_count=1, cfg=cfg, min_replicas=0, max_replicas=2), "stable", cfg, ClusterFacts())
    (isvc,) = to_dicts(plan.manifests)
    assert plan.autoscaler == "kserve" and plan.strategy is None
    validate_inference_service(isvc)  # the rest of the predictor is checked as a pod spec
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    predictor = dict(isvc["spec"]["predictor"])
    assert (predictor.pop("minReplicas"), predictor.pop("maxReplicas")) == (0, 2)
    assert predictor.pop("labels")["llmops.io/slot"] == "stable"
    container = predictor["containers"][0]
    assert container["name"] == "kserve-container"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["startupProbe"]["httpGet"]["path"] == "/health"


def test_the_custom_resources_checks_catch_what_the_api_server_would_refuse() -> None:
    """The closed schemas of crd_schemas are not vacuous: each fault below is one the CRD (or the Kubernetes type
    it embeds) refuses."""
    cfg = settings(autoscaler="keda", gateway_metrics_url="http://prometheus:9090")
    so = to_dicts(build_slot(spec(min_replicas=0, max_replicas=2), "stable", cfg, ROOMY).manifests)[2]
    validate_scaled_object(so)
    trigger = so["spec"]["triggers"][0]
    behavior = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    for broken in ({**so, "spec": {**so["spec"], "minReplicas": 0}},  # KEDA's field is minReplicaCount
                   {**so, "spec": {**so["spec"], "triggers": [{**trigger, "metadata": {"threshold": 5}}]}},
                   {**so, "spec": {k: v for k, v in so["spec"].items() if k != "triggers"}},
                   {**so, "spec": {**so["spec"], "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
                       **behavior, "scaleDown": {"stabilizationWindowSeconds": "300"}}}}}}):
        with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
            validate_scaled_object(broken)
    isvc = to_dicts(build_slot(spec(), "stable", settings(kserve=True), ClusterFacts()).manifests)[0]
    predictor = isvc["spec"]["predictor"]
    for broken_predictor in ({**predictor, "minReplicas": "1"}, {**predictor, "minReplica": 1},
                             {**predictor, "containers": [{**predictor["containers"][0], "args": "--model x"}]}):
        with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
            validate_inference_service({**isvc, "spec": {"predictor": broken_predictor}})


def test_merge_patch_clears_what_a_revision_dropped() -> None:
    cfg = settings(autoscaler="hpa")
    # A Recreate Deployment without init container, tolerations or pull secrets, autoscaled.
    deployment = to_dicts(build_slot(spec(use_gpu=False, max_replicas=3, cfg=cfg), "stable", cfg,
                                     ClusterFacts()).manifests)[1]
    patch = merge_patch(deployment)
    assert "replicas" not in patch["spec"]  # the HPA owns it
    assert "replicas" in deployment["spec"]  # the manifest kept on the revision is whole
    pod = patch["spec"]["template"]["spec"]
    assert pod["initContainers"] is None and pod["tolerations"] is None and pod["imagePullSecrets"] is None
    recreate = to_dicts(build_slot(spec(cfg=settings()), "stable", settings(), ClusterFacts()).manifests)[1]
    assert recreate["spec"]["strategy"] == {"type": "Recreate"}
    assert merge_patch(recreate)["spec"]["strategy"] == {"type": "Recreate", "rollingUpdate": None}
    assert merge_patch(recreate)["spec"]["replicas"] == 1  # not autoscaled: the count is ours
