"""The vLLM pod of one slot, as typed ``kubernetes.client`` models: container, probes, volumes, GPU placement.

Probes follow vLLM's loading behaviour (vLLM #17386): ``/health`` answers only once the engine is up, which can
take many minutes for a large model, so a ``startupProbe`` on ``/health`` gets the whole
``SERVING_STARTUP_TIMEOUT_S`` and gates the other two; readiness asks ``/v1/models`` (served once the model is
registered); liveness is lenient so a busy engine is not restarted. A loading pod is never killed.

Model files (``settings.model_storage_uri`` and ``spec.model_files`` both set): an init container copies each
object key ``K`` from ``<model_storage_uri>/K`` to ``/models/<model id>/<file name of K>`` on an ``emptyDir``
shared with the server, with the AWS CLI (``MODEL_FETCH_IMAGE``) and credentials from the optional Secret
``MODEL_STORAGE_SECRET`` (``AWS_*`` variables; ``AWS_ENDPOINT_URL`` for S3-compatible stores). ``--model`` stays
``spec.model_uri``, which the serving module points at that directory (or at the GGUF file in it).
"""

from __future__ import annotations

import math

from kubernetes import client

from adapters.serving.base import DeploymentSpec, RuntimeFailure
from adapters.serving.settings import ServingSettings

__all__ = [
    "CONTAINER_NAME",
    "HF_TOKEN_SECRET",
    "MODELS_DIR",
    "MODEL_FETCH_IMAGE",
    "MODEL_STORAGE_SECRET",
    "PORT",
    "build_container",
    "build_pod_spec",
    "model_dir",
    "server_args",
]

PORT = 8000
CONTAINER_NAME = "vllm"
MODELS_DIR = "/models"
MODEL_FETCH_IMAGE = "amazon/aws-cli:2.22.35"
MODEL_STORAGE_SECRET = "llmops-model-storage"
HF_TOKEN_SECRET = "hf-token"  # optional; gated Hugging Face models need it (key "token"), as deploy/vllm does
STARTUP_PERIOD_S = 10
# Copies "$@" (the object keys, passed as arguments, never interpolated into the script) into directory "$2".
_FETCH_SCRIPT = ('set -eu; src="$1"; dest="$2"; shift 2; mkdir -p "$dest"; '
                 'for key in "$@"; do aws s3 cp --only-show-errors "$src/$key" "$dest/${key##*/}"; done')


def model_dir(spec: DeploymentSpec) -> str:
    """Where the init container puts the model's files (the serving module's ``model_uri`` convention)."""
    return f"{MODELS_DIR}/{spec.model_id}"


def server_args(spec: DeploymentSpec) -> list[str]:
    return ["--model", spec.model_uri, "--served-model-name", spec.served_model_name,
            "--host", "0.0.0.0", "--port", str(PORT), *spec.vllm_args]


def _resources(spec: DeploymentSpec) -> client.V1ResourceRequirements:
    res = spec.resources
    requests = {"cpu": res.cpu_request, "memory": res.memory_request}
    limits = {"cpu": res.cpu_limit, "memory": res.memory_limit}
    if res.gpu_count > 0:
        requests[res.gpu_resource] = limits[res.gpu_resource] = str(res.gpu_count)
    return client.V1ResourceRequirements(requests=requests, limits=limits)


def _probe(path: str, *, period_s: int, timeout_s: int, failures: int) -> client.V1Probe:
    return client.V1Probe(http_get=client.V1HTTPGetAction(path=path, port="http"), period_seconds=period_s,
                          timeout_seconds=timeout_s, failure_threshold=failures, success_threshold=1)


def build_container(spec: DeploymentSpec, settings: ServingSettings, *,
                    name: str = CONTAINER_NAME) -> client.V1Container:
    """The server container; ``args`` only, so the image's own entrypoint (vLLM's server) runs them."""
    startup_failures = math.ceil(settings.startup_timeout_s / STARTUP_PERIOD_S)
    return client.V1Container(
        name=name,
        image=spec.image,
        args=server_args(spec),
        ports=[client.V1ContainerPort(name="http", container_port=PORT, protocol="TCP")],
        env=[
            client.V1EnvVar(name="HF_HOME", value=f"{MODELS_DIR}/huggingface"),
            client.V1EnvVar(name="HF_TOKEN", value_from=client.V1EnvVarSource(
                secret_key_ref=client.V1SecretKeySelector(name=HF_TOKEN_SECRET, key="token", optional=True))),
        ],
        resources=_resources(spec),
        startup_probe=_probe("/health", period_s=STARTUP_PERIOD_S, timeout_s=5, failures=startup_failures),
        readiness_probe=_probe("/v1/models", period_s=5, timeout_s=3, failures=3),
        liveness_probe=_probe("/health", period_s=15, timeout_s=10, failures=6),
        volume_mounts=[client.V1VolumeMount(name="dshm", mount_path="/dev/shm"),
                       client.V1VolumeMount(name="models", mount_path=MODELS_DIR)],
        security_context=client.V1SecurityContext(allow_privilege_escalation=False),
    )


def _fetch_container(spec: DeploymentSpec, storage_uri: str) -> client.V1Container:
    if not storage_uri.startswith("s3://"):
        raise RuntimeFailure("SERVING_MODEL_STORAGE_URI must be an s3:// URI for the Kubernetes runtime")
    return client.V1Container(
        name="fetch-model",
        image=MODEL_FETCH_IMAGE,
        command=["/bin/sh", "-c", _FETCH_SCRIPT, "fetch-model"],
        args=[storage_uri.rstrip("/"), model_dir(spec), *spec.model_files],
        env_from=[client.V1EnvFromSource(secret_ref=client.V1SecretEnvSource(name=MODEL_STORAGE_SECRET,
                                                                             optional=True))],
        volume_mounts=[client.V1VolumeMount(name="models", mount_path=MODELS_DIR)],
        resources=client.V1ResourceRequirements(requests={"cpu": "500m", "memory": "512Mi"},
                                                limits={"cpu": "2", "memory": "2Gi"}),
        security_context=client.V1SecurityContext(allow_privilege_escalation=False),
    )


def build_pod_spec(spec: DeploymentSpec, settings: ServingSettings, *, container_name: str = CONTAINER_NAME,
                   ) -> client.V1PodSpec:
    init = None
    if settings.model_storage_uri and spec.model_files:
        init = [_fetch_container(spec, settings.model_storage_uri)]
    gpu = spec.resources.gpu_count > 0
    return client.V1PodSpec(
        containers=[build_container(spec, settings, name=container_name)],
        init_containers=init,
        volumes=[
            # vLLM's workers share tensors through /dev/shm; the container default (64 MiB) is far too small.
            client.V1Volume(name="dshm", empty_dir=client.V1EmptyDirVolumeSource(medium="Memory")),
            client.V1Volume(name="models", empty_dir=client.V1EmptyDirVolumeSource()),
        ],
        tolerations=[client.V1Toleration(key=spec.resources.gpu_resource, operator="Exists",
                                         effect="NoSchedule")] if gpu else None,
        image_pull_secrets=[client.V1LocalObjectReference(name=settings.image_pull_secret)]
        if settings.image_pull_secret else None,
        termination_grace_period_seconds=120,  # in-flight generations finish before the pod goes
    )
