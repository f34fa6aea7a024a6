"""The trainer pod of one attempt, as typed ``kubernetes.client`` models: container, environment, resources, GPU
placement, ``/dev/shm``.

The job's secrets (``LaunchSpec.secret_env``: the job token, twice) never appear in a pod spec: each is a
``secretKeyRef`` into the attempt's Secret, so a rendered manifest, ``kubectl get -o yaml`` or an audit log of
the Job shows only the Secret's name. Distributed pods get torchrun's variables (``contract``): an indexed Job
computes them itself (the rank from the pod's completion index through the downward API); a ``PyTorchJob``'s
operator injects ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``, so only the rest is set here.
"""

from __future__ import annotations

import math

from kubernetes import client

from adapters.training.base import LaunchSpec, TrainingResources
from adapters.training.settings import TrainingSettings

__all__ = [
    "COMPLETION_INDEX",
    "CONTAINER_NAME",
    "MASTER_PORT",
    "build_container",
    "build_pod_spec",
    "container_env",
    "indexed_env",
    "resources",
    "torch_env",
]

CONTAINER_NAME = "trainer"
MASTER_PORT = 29500
# Set by the Job controller on every pod of an Indexed Job (annotation and, since 1.28, label too).
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


def resources(res: TrainingResources) -> client.V1ResourceRequirements:
    requests = {"cpu": res.cpu_request, "memory": res.memory_request}
    limits = {"cpu": res.cpu_limit, "memory": res.memory_limit}
    if res.gpus_per_node > 0:
        # Extended resources cannot be overcommitted: the request must equal the limit.
        requests[res.gpu_resource] = limits[res.gpu_resource] = str(res.gpus_per_node)
    return client.V1ResourceRequirements(requests=requests, limits=limits)


def torch_env(res: TrainingResources) -> list[client.V1EnvVar]:
    """What every distributed pod gets, whoever launches it: one process per pod, torchrun spawns the rest."""
    return [client.V1EnvVar(name="LOCAL_RANK", value="0"),
            client.V1EnvVar(name="NPROC_PER_NODE", value=str(res.gpus_per_node or 1))]


def indexed_env(spec: LaunchSpec, master_addr: str) -> list[client.V1EnvVar]:
    """torchrun's variables for an indexed Job: the rank is the pod's completion index (downward API)."""
    index = client.V1EnvVarSource(field_ref=client.V1ObjectFieldSelector(
        field_path=f"metadata.annotations['{COMPLETION_INDEX}']"))
    return [client.V1EnvVar(name="RANK", value_from=index),
            client.V1EnvVar(name="NODE_RANK", value_from=index),
            client.V1EnvVar(name="WORLD_SIZE", value=str(spec.resources.nodes)),
            client.V1EnvVar(name="MASTER_ADDR", value=master_addr),
            client.V1EnvVar(name="MASTER_PORT", value=str(MASTER_PORT)),
            *torch_env(spec.resources)]


def container_env(spec: LaunchSpec, secret_name: str, extra: list[client.V1EnvVar]) -> list[client.V1EnvVar]:
    """``spec.env``, then the secrets by reference, then ``extra``; a name set later wins, so it is set once."""
    later = set(spec.secret_env) | {e.name for e in extra}
    plain = [client.V1EnvVar(name=k, value=v) for k, v in spec.env.items() if k not in later]
    secret = [client.V1EnvVar(name=k, value_from=client.V1EnvVarSource(
        secret_key_ref=client.V1SecretKeySelector(name=secret_name, key=k)))
        for k in sorted(spec.secret_env) if k not in {e.name for e in extra}]
    return [*plain, *secret, *extra]


def build_container(spec: LaunchSpec, secret_name: str, *, name: str = CONTAINER_NAME,
                    extra_env: list[client.V1EnvVar] | None = None) -> client.V1Container:
    return client.V1Container(
        name=name,
        image=spec.image,
        command=list(spec.command),
        env=container_env(spec, secret_name, extra_env or []),
        resources=resources(spec.resources),
        volume_mounts=[client.V1VolumeMount(name="dshm", mount_path="/dev/shm")],
        # The log's tail becomes the terminated state's message when the trainer dies without writing one:
        # the failure reason on the timeline then says why (credentials are stripped when it is read).
        termination_message_policy="FallbackToLogsOnError",
        security_context=client.V1SecurityContext(allow_privilege_escalation=False),
    )


def build_pod_spec(spec: LaunchSpec, settings: TrainingSettings, secret_name: str, *,
                   container_name: str = CONTAINER_NAME, extra_env: list[client.V1EnvVar] | None = None,
                   subdomain: str | None = None) -> client.V1PodSpec:
    gpu = spec.resources.gpus_per_node > 0
    return client.V1PodSpec(
        containers=[build_container(spec, secret_name, name=container_name, extra_env=extra_env)],
        restart_policy="Never",  # retries are the training module's, one visible attempt each
        subdomain=subdomain,
        volumes=[
            # torch's DataLoader workers and NCCL share tensors through /dev/shm; the 64 MiB default is too small.
            client.V1Volume(name="dshm", empty_dir=client.V1EmptyDirVolumeSource(medium="Memory")),
        ],
        tolerations=[client.V1Toleration(key=spec.resources.gpu_resource, operator="Exists",
                                         effect="NoSchedule")] if gpu else None,
        image_pull_secrets=[client.V1LocalObjectReference(name=settings.image_pull_secret)]
        if settings.image_pull_secret else None,
        # Cancel: SIGTERM, then SIGKILL after the grace the settings give (the pod is deleted with it too).
        termination_grace_period_seconds=math.ceil(settings.cancel_grace_s),
        enable_service_links=False,  # a namespace's many Services would otherwise land in the environment
        automount_service_account_token=False,  # trainers talk to llmops with their job token, never to Kubernetes
    )
