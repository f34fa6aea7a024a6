"""Every object of one training attempt, built as typed ``kubernetes.client`` models (the Kubeflow kinds as dicts):
pure, no I/O.

An attempt is named ``{job_name}-a{attempt}``; its Secret, its Service (indexed Jobs) and its workload share that
name and the labels ``llmops.io/training-job`` and ``llmops.io/attempt``, which is how the runtime finds them again
(after a restart too). The workload is:

* ``nodes == 1``: a ``batch/v1`` Job;
* ``nodes > 1``, per ``TRAINING_DISTRIBUTED``: a Kubeflow ``TrainJob`` (Trainer v2) or ``PyTorchJob``
  (Training Operator v1) where that CRD is installed (``auto`` prefers the TrainJob), else an indexed Job with a
  headless Service for rendezvous (``MASTER_ADDR`` is rank 0's pod, ``{name}-0.{name}``).

None retries by itself (``backoffLimit: 0``): retries are the training module's. The TrainJob carries only the
fields Trainer's API kept stable across releases (runtime reference, image, command, env, nodes, resources);
tolerations, ``/dev/shm`` and pull secrets come from the ``ClusterTrainingRuntime`` it names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import msgspec
from kubernetes import client

from adapters.training.base import LaunchSpec, RuntimeFailure
from adapters.training.kubernetes.pod import (
    COMPLETION_INDEX,
    MASTER_PORT,
    build_pod_spec,
    container_env,
    indexed_env,
    resources,
    torch_env,
)
from adapters.training.settings import TrainingSettings

__all__ = [
    "ANN_NODES", "CONTAINERS", "CRDS", "CUSTOM", "LABEL_ATTEMPT", "LABEL_JOB", "LABEL_MANAGED", "REDACTED",
    "AttemptPlan", "ClusterFacts", "Workload", "attempt_labels", "attempt_name", "build_attempt",
    "choose_workload", "owner_patch", "to_plain",
]

LABEL_JOB = "llmops.io/training-job"
LABEL_ATTEMPT = "llmops.io/attempt"
LABEL_MANAGED = "app.kubernetes.io/managed-by"
ANN_JOB_NAME = "llmops.io/job-name"
ANN_WORKLOAD = "llmops.io/workload"
ANN_NODES = "llmops.io/nodes"
REDACTED = "(redacted)"

Workload = Literal["Job", "IndexedJob", "TrainJob", "PyTorchJob"]
# The custom kinds: (group, version, plural), and the CRD that says the cluster has them.
CUSTOM: dict[str, tuple[str, str, str]] = {
    "TrainJob": ("trainer.kubeflow.org", "v1alpha1", "trainjobs"),
    "PyTorchJob": ("kubeflow.org", "v1", "pytorchjobs"),
}
CRDS: dict[str, str] = {"TrainJob": "trainjobs.trainer.kubeflow.org", "PyTorchJob": "pytorchjobs.kubeflow.org"}
# The trainer's container in each kind's pods: Trainer's runtimes call it "node"; the Training Operator injects
# its variables only into a container named "pytorch".
CONTAINERS: dict[str, str] = {"Job": "trainer", "IndexedJob": "trainer", "TrainJob": "node", "PyTorchJob": "pytorch"}


class ClusterFacts(msgspec.Struct, frozen=True, kw_only=True):
    """Which Kubeflow CRDs the cluster has; None: not read (``render`` before any ``submit``) or unreadable."""

    trainjob: bool | None = None
    pytorchjob: bool | None = None


@dataclass(frozen=True)
class AttemptPlan:
    name: str
    workload: Workload
    manifests: list[dict[str, Any]]  # in creation order: Secret, (Service), the workload last


@cache
def _serializer() -> client.ApiClient:
    """Only its ``sanitize_for_serialization`` is used (models to camelCase dicts); it never connects."""
    return client.ApiClient()


def to_plain(obj: Any) -> Any:
    return _serializer().sanitize_for_serialization(obj)


def attempt_name(job_name: str, attempt: int) -> str:
    return f"{job_name}-a{attempt}"


def attempt_labels(spec: LaunchSpec) -> dict[str, str]:
    """What every object of the attempt carries; the first two are how it is found again."""
    return {**spec.labels, LABEL_JOB: spec.job_id, LABEL_ATTEMPT: str(spec.attempt), LABEL_MANAGED: "llmops"}


def choose_workload(spec: LaunchSpec, settings: TrainingSettings, facts: ClusterFacts) -> Workload:
    """Raises ``RuntimeFailure`` when ``TRAINING_DISTRIBUTED`` names a kind the cluster is known not to have."""
    if spec.resources.nodes <= 1:
        return "Job"
    choice = settings.distributed
    if choice == "indexed-job":
        return "IndexedJob"
    if choice in ("trainjob", "pytorchjob"):
        kind: Workload = "TrainJob" if choice == "trainjob" else "PyTorchJob"
        if getattr(facts, choice) is False:
            raise RuntimeFailure(f"TRAINING_DISTRIBUTED={choice} but the CRD {CRDS[kind]} is not installed")
        return kind
    if facts.trainjob:
        return "TrainJob"
    if facts.pytorchjob:
        return "PyTorchJob"
    return "IndexedJob"


def _meta(spec: LaunchSpec, settings: TrainingSettings, name: str, workload: Workload) -> client.V1ObjectMeta:
    return client.V1ObjectMeta(name=name, namespace=settings.namespace, labels=attempt_labels(spec), annotations={
        ANN_JOB_NAME: spec.job_name, ANN_WORKLOAD: workload, ANN_NODES: str(spec.resources.nodes)})


def _deadline(spec: LaunchSpec) -> int | None:
    return max(1, math.ceil(spec.deadline_s)) if spec.deadline_s is not None else None


def _secret(spec: LaunchSpec, settings: TrainingSettings, name: str, workload: Workload,
            reveal: bool) -> client.V1Secret:
    values = {k: (v if reveal else REDACTED) for k, v in sorted(spec.secret_env.items())}
    return client.V1Secret(api_version="v1", kind="Secret", type="Opaque", string_data=values,
                           metadata=_meta(spec, settings, name, workload))


def _template(spec: LaunchSpec, pod: client.V1PodSpec) -> client.V1PodTemplateSpec:
    return client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=attempt_labels(spec)), spec=pod)


def _job(spec: LaunchSpec, settings: TrainingSettings, name: str) -> client.V1Job:
    pod = build_pod_spec(spec, settings, name)
    return client.V1Job(
        api_version="batch/v1", kind="Job", metadata=_meta(spec, settings, name, "Job"),
        # No ttlSecondsAfterFinished: the training module reads the outcome, then cleanup deletes.
        spec=client.V1JobSpec(backoff_limit=0, active_deadline_seconds=_deadline(spec),
                              template=_template(spec, pod)))


def _indexed_job(spec: LaunchSpec, settings: TrainingSettings, name: str) -> list[Any]:
    nodes = spec.resources.nodes
    pod = build_pod_spec(spec, settings, name, subdomain=name, extra_env=indexed_env(spec, f"{name}-0.{name}"))
    service = client.V1Service(
        api_version="v1", kind="Service", metadata=_meta(spec, settings, name, "IndexedJob"),
        spec=client.V1ServiceSpec(
            cluster_ip="None",  # headless: one DNS record per pod, {name}-{index}.{name}
            publish_not_ready_addresses=True,  # rank 0 must resolve before any pod is Ready (there is no probe)
            selector={LABEL_JOB: spec.job_id, LABEL_ATTEMPT: str(spec.attempt)},
            ports=[client.V1ServicePort(name="rendezvous", port=MASTER_PORT, target_port=MASTER_PORT,
                                        protocol="TCP")]))
    # Any rank failing (a non-zero exit, or its pod evicted or lost with its node) fails the whole Job at once:
    # the others would otherwise hang in a collective until the deadline.
    failure_policy = client.V1PodFailurePolicy(rules=[
        client.V1PodFailurePolicyRule(action="FailJob", on_exit_codes=client.V1PodFailurePolicyOnExitCodesRequirement(
            operator="NotIn", values=[0])),
        client.V1PodFailurePolicyRule(action="FailJob", on_pod_conditions=[
            client.V1PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget", status="True")]),
    ])
    job = client.V1Job(
        api_version="batch/v1", kind="Job", metadata=_meta(spec, settings, name, "IndexedJob"),
        spec=client.V1JobSpec(
            completion_mode="Indexed", completions=nodes, parallelism=nodes, backoff_limit=0,
            active_deadline_seconds=_deadline(spec), pod_failure_policy=failure_policy,
            template=_template(spec, pod)))
    return [service, job]


def _train_job(spec: LaunchSpec, settings: TrainingSettings, name: str) -> dict[str, Any]:
    """Trainer's JobSet names rank 0's pod ``{name}-node-0-0`` under the subdomain ``{name}``."""
    index = client.V1EnvVarSource(field_ref=client.V1ObjectFieldSelector(
        field_path=f"metadata.annotations['{COMPLETION_INDEX}']"))
    extra = [client.V1EnvVar(name="RANK", value_from=index), client.V1EnvVar(name="NODE_RANK", value_from=index),
             client.V1EnvVar(name="WORLD_SIZE", value=str(spec.resources.nodes)),
             client.V1EnvVar(name="MASTER_ADDR", value=f"{name}-node-0-0.{name}"),
             client.V1EnvVar(name="MASTER_PORT", value=str(MASTER_PORT)), *torch_env(spec.resources)]
    trainer: dict[str, Any] = {
        "image": spec.image, "command": list(spec.command),
        "env": to_plain(container_env(spec, name, extra)),
        "numNodes": spec.resources.nodes,
        "resourcesPerNode": to_plain(resources(spec.resources)),
    }
    body: dict[str, Any] = {"runtimeRef": {"name": settings.trainjob_runtime, "apiGroup": "trainer.kubeflow.org",
                                           "kind": "ClusterTrainingRuntime"},
                            "trainer": trainer}
    deadline = _deadline(spec)
    if deadline is not None:
        body["activeDeadlineSeconds"] = deadline  # newer Trainer releases; older ones prune it (module enforces)
    group, version, _ = CUSTOM["TrainJob"]
    return {"apiVersion": f"{group}/{version}", "kind": "TrainJob",
            "metadata": to_plain(_meta(spec, settings, name, "TrainJob")), "spec": body}


def _pytorch_job(spec: LaunchSpec, settings: TrainingSettings, name: str) -> dict[str, Any]:
    container = CONTAINERS["PyTorchJob"]
    pod = build_pod_spec(spec, settings, name, container_name=container, extra_env=torch_env(spec.resources))
    template = to_plain(_template(spec, pod))

    def replicas(count: int) -> dict[str, Any]:
        return {"replicas": count, "restartPolicy": "Never", "template": template}

    run_policy: dict[str, Any] = {"backoffLimit": 0, "cleanPodPolicy": "None"}  # pods stay for their logs
    deadline = _deadline(spec)
    if deadline is not None:
        run_policy["activeDeadlineSeconds"] = deadline
    group, version, _ = CUSTOM["PyTorchJob"]
    return {"apiVersion": f"{group}/{version}", "kind": "PyTorchJob",
            "metadata": to_plain(_meta(spec, settings, name, "PyTorchJob")),
            "spec": {"runPolicy": run_policy, "pytorchReplicaSpecs": {
                "Master": replicas(1), "Worker": replicas(spec.resources.nodes - 1)}}}


def build_attempt(spec: LaunchSpec, settings: TrainingSettings, facts: ClusterFacts, *,
                  reveal_secrets: bool = False) -> AttemptPlan:
    """The attempt's objects; the Secret's values are ``REDACTED`` unless ``reveal_secrets`` (``submit`` only)."""
    name = attempt_name(spec.job_name, spec.attempt)
    workload = choose_workload(spec, settings, facts)
    objects: list[Any] = [_secret(spec, settings, name, workload, reveal_secrets)]
    if workload == "Job":
        objects.append(_job(spec, settings, name))
    elif workload == "IndexedJob":
        objects.extend(_indexed_job(spec, settings, name))
    elif workload == "TrainJob":
        objects.append(_train_job(spec, settings, name))
    else:
        objects.append(_pytorch_job(spec, settings, name))
    return AttemptPlan(name, workload, [o if isinstance(o, dict) else to_plain(o) for o in objects])


def owner_patch(workload: dict[str, Any], uid: str) -> dict[str, Any]:
    """A merge patch making the workload own an object, so deleting the workload (foreground) deletes it too."""
    return {"metadata": {"ownerReferences": [{
        "apiVersion": workload["apiVersion"], "kind": workload["kind"], "name": workload["metadata"]["name"],
        "uid": uid, "blockOwnerDeletion": True, "controller": False}]}}
