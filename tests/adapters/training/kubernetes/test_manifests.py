"""An attempt's manifests: the built-in kinds pass the Kubernetes 1.30 schema (strict); the Kubeflow kinds cannot be
validated against a schema here, so their structure is asserted and their embedded pod and container specs are
validated as the core kinds they are. No manifest ever holds a secret's value."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest
from kubernetes import client

from adapters.training.base import RuntimeFailure
from adapters.training.kubernetes.manifests import REDACTED, ClusterFacts, build_attempt, choose_workload
from tests.adapters.training.kubernetes.kube_training import JOB_ID, NS, TOKEN, settings, spec

NO_CRDS = ClusterFacts(trainjob=False, pytorchjob=False)
TRAINER = ClusterFacts(trainjob=True, pytorchjob=True)
OPERATOR = ClusterFacts(trainjob=False, pytorchjob=True)


def _validate(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, "1.30", strict=True)


def _by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs}


def _deserialize(data: Any, model: str) -> Any:
    """Into the client's typed model: a misspelt or misplaced field of an embedded spec fails here."""
    return client.ApiClient().deserialize(json.dumps(data), model, "application/json")


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_single_node_cpu_job_uses_the_cpu_only_limits() -> None:
    cfg = settings(cpu_only_cpu_request="500m", cpu_only_memory_limit="3Gi")
    plan = build_attempt(spec(use_gpu=False, cfg=cfg, deadline_s=600.2), cfg, NO_CRDS)
    assert (plan.name, plan.workload) == ("tiny-sft-a1", "Job")
    docs = _by_kind(plan.manifests)
    assert list(docs) == ["Secret", "Job"]
    for doc in plan.manifests:
        _validate(doc)
    job = docs["Job"]
    labels = {"llmops.io/training-job": JOB_ID, "llmops.io/attempt": "1", "app.kubernetes.io/managed-by": "llmops",
              "llmops.io/team": "search"}
    assert job["metadata"]["labels"] == labels and job["metadata"]["namespace"] == NS
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == 601
    assert "ttlSecondsAfterFinished" not in job["spec"] and "completionMode" not in job["spec"]
    template = job["spec"]["template"]
    assert template["metadata"]["labels"] == labels  # pods are found by the same labels
    pod = template["spec"]
    assert pod["restartPolicy"] == "Never" and "tolerations" not in pod and "imagePullSecrets" not in pod
    assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in pod["volumes"]
    container = pod["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": cfg.cpu_only_memory_request},
                                      "limits": {"cpu": cfg.cpu_only_cpu_limit, "memory": "3Gi"}}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert container["command"] == ["python", "-m", "adapters.training.trainer.hf"]
    env = _env(container)
    assert env["API_BASE_URL"] == "http://llmops.llmops:8080/llm-ops/v1" and "RANK" not in env
    assert env["LLMOPS_JOB_TOKEN"] == {"secretKeyRef": {"name": "tiny-sft-a1", "key": "LLMOPS_JOB_TOKEN"}}


def test_gpu_job_asks_for_its_gpus_and_tolerates_gpu_nodes() -> None:
    cfg = settings(image_pull_secret="regcred", gpu_resource="nvidia.com/gpu")
    docs = _by_kind(build_attempt(spec(use_gpu=True, gpus=4, cfg=cfg), cfg, NO_CRDS).manifests)
    for doc in docs.values():
        _validate(doc)
    pod = docs["Job"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": cfg.cpu_request, "memory": cfg.memory_request, "nvidia.com/gpu": "4"},
        "limits": {"cpu": cfg.cpu_limit, "memory": cfg.memory_limit, "nvidia.com/gpu": "4"}}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]


def test_distributed_without_kubeflow_is_an_indexed_job_with_a_headless_service() -> None:
    cfg = settings()
    plan = build_attempt(spec(use_gpu=True, gpus=2, nodes=3, attempt=2, cfg=cfg), cfg, NO_CRDS)
    assert plan.workload == "IndexedJob"
    docs = _by_kind(plan.manifests)
    assert list(docs) == ["Secret", "Service", "Job"]
    for doc in plan.manifests:
        _validate(doc)
    service, job = docs["Service"]["spec"], docs["Job"]["spec"]
    assert service["clusterIP"] == "None" and service["publishNotReadyAddresses"] is True
    assert service["selector"] == {"llmops.io/training-job": JOB_ID, "llmops.io/attempt": "2"}
    assert (job["completionMode"], job["completions"], job["parallelism"], job["backoffLimit"]) == (
        "Indexed", 3, 3, 0)
    assert [r["action"] for r in job["podFailurePolicy"]["rules"]] == ["FailJob", "FailJob"]
    assert job["podFailurePolicy"]["rules"][0]["onExitCodes"] == {"operator": "NotIn", "values": [0]}
    pod = job["template"]["spec"]
    assert pod["subdomain"] == "tiny-sft-a2"
    env = _env(pod["containers"][0])
    index = {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}
    assert env["RANK"] == env["NODE_RANK"] == index
    assert (env["WORLD_SIZE"], env["MASTER_ADDR"], env["MASTER_PORT"], env["LOCAL_RANK"], env["NPROC_PER_NODE"]) == (
        "3", "tiny-sft-a2-0.tiny-sft-a2", "29500", "0", "2")
    cpu = build_attempt(spec(nodes=2, cfg=cfg), cfg, NO_CRDS).manifests[-1]
    assert _env(cpu["spec"]["template"]["spec"]["containers"][0])["NPROC_PER_NODE"] == "1"


def test_distributed_as_a_trainjob_when_its_crd_is_installed() -> None:
    cfg = settings(trainjob_runtime="torch-distributed-gpu")
    plan = build_attempt(spec(use_gpu=True, gpus=8, nodes=4, cfg=cfg, deadline_s=7200), cfg, TRAINER)
    assert plan.workload == "TrainJob"
    secret, train = plan.manifests
    _validate(secret)
    assert (train["apiVersion"], train["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert train["metadata"]["labels"]["llmops.io/training-job"] == JOB_ID
    body = train["spec"]
    assert body["runtimeRef"] == {"name": "torch-distributed-gpu", "apiGroup": "trainer.kubeflow.org",
                                  "kind": "ClusterTrainingRuntime"}
    assert body["activeDeadlineSeconds"] == 7200
    trainer = body["trainer"]
    assert trainer["numNodes"] == 4 and trainer["image"] == cfg.image
    resources = _deserialize(trainer["resourcesPerNode"], "V1ResourceRequirements")
    assert resources.limits["nvidia.com/gpu"] == "8" and resources.requests["nvidia.com/gpu"] == "8"
    env = {e.name: e for e in _deserialize(trainer["env"], "List[V1EnvVar]")}
    assert env["LLMOPS_JOB_TOKEN"].value_from.secret_key_ref.name == "tiny-sft-a1"
    assert env["MASTER_ADDR"].value == "tiny-sft-a1-node-0-0.tiny-sft-a1" and env["WORLD_SIZE"].value == "4"
    # The trainer's fields make a valid container as Trainer merges them into its runtime's "node" container.
    _validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "node"}, "spec": {"containers": [{
        "name": "node", "image": trainer["image"], "command": trainer["command"], "env": trainer["env"],
        "resources": trainer["resourcesPerNode"]}]}})


def test_distributed_as_a_pytorchjob_when_only_that_crd_is_installed() -> None:
    cfg = settings(image_pull_secret="regcred")
    plan = build_attempt(spec(use_gpu=True, gpus=2, nodes=3, cfg=cfg, deadline_s=900), cfg, OPERATOR)
    assert plan.workload == "PyTorchJob"
    secret, job = plan.manifests
    _validate(secret)
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    assert job["spec"]["runPolicy"] == {"backoffLimit": 0, "activeDeadlineSeconds": 900, "cleanPodPolicy": "None"}
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert (replicas["Master"]["replicas"], replicas["Worker"]["replicas"]) == (1, 2)
    for role in ("Master", "Worker"):
        assert replicas[role]["restartPolicy"] == "Never"
        template = replicas[role]["template"]
        _validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": role.lower()},
                   "template": template})
        typed = _deserialize(template, "V1PodTemplateSpec")
        container = typed.spec.containers[0]
        assert container.name == "pytorch"  # the operator injects RANK, WORLD_SIZE, MASTER_* only there
        assert container.resources.limits["nvidia.com/gpu"] == "2"
        assert typed.metadata.labels["llmops.io/attempt"] == "1"
        names = {e.name for e in container.env}
        assert {"LOCAL_RANK", "NPROC_PER_NODE"} <= names and not {"RANK", "MASTER_ADDR"} & names


def test_the_distributed_setting_chooses_the_kind() -> None:
    two = spec(nodes=2)
    assert choose_workload(two, settings(), TRAINER) == "TrainJob"  # auto prefers Trainer
    assert choose_workload(two, settings(), ClusterFacts()) == "IndexedJob"  # not read: nothing assumed
    assert choose_workload(two, settings(distributed="indexed-job"), TRAINER) == "IndexedJob"
    assert choose_workload(two, settings(distributed="pytorchjob"), TRAINER) == "PyTorchJob"
    assert choose_workload(two, settings(distributed="trainjob"), ClusterFacts()) == "TrainJob"  # unknown: tried
    assert choose_workload(spec(nodes=1), settings(), TRAINER) == "Job"
    with pytest.raises(RuntimeFailure, match=r"pytorchjobs\.kubeflow\.org is not installed") as caught:
        choose_workload(two, settings(distributed="pytorchjob"), NO_CRDS)
    assert not caught.value.retryable


@pytest.mark.parametrize("facts", [NO_CRDS, TRAINER, OPERATOR])
@pytest.mark.parametrize("nodes", [1, 2])
def test_no_rendered_manifest_holds_a_secret_value(facts: ClusterFacts, nodes: int) -> None:
    cfg = settings()
    docs = build_attempt(spec(nodes=nodes, cfg=cfg), cfg, facts).manifests
    assert TOKEN not in json.dumps(docs)
    secret = _by_kind(docs)["Secret"]
    assert secret["stringData"] == {"LLMOPS_JOB_TOKEN": REDACTED, "MLFLOW_TRACKING_TOKEN": REDACTED}
    revealed = build_attempt(spec(nodes=nodes, cfg=cfg), cfg, facts, reveal_secrets=True).manifests
    assert _by_kind(revealed)["Secret"]["stringData"]["LLMOPS_JOB_TOKEN"] == TOKEN
    assert [d for d in revealed if d["kind"] != "Secret"] == [d for d in docs if d["kind"] != "Secret"]


def test_a_variable_the_runtime_sets_is_set_once() -> None:
    cfg = settings()
    docs = build_attempt(spec(nodes=2, cfg=cfg, env={"WORLD_SIZE": "99", "HF_HOME": "/cache"}), cfg, NO_CRDS)
    env = docs.manifests[-1]["spec"]["template"]["spec"]["containers"][0]["env"]
    names = [e["name"] for e in env]
    assert names.count("WORLD_SIZE") == 1 and _env({"env": env})["WORLD_SIZE"] == "2"
    assert _env({"env": env})["HF_HOME"] == "/cache"
