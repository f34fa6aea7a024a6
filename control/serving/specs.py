"""From a catalog model and the caller's choices to one revision's ``DeploymentSpec``, and the rules on them.

What the server loads (``model_uri``): the model's ``hf.repo`` label when it has one (a Hugging Face id the
runtime pulls); else, when the model has files, ``/models/<model id>`` (``/models/<model id>/<file>.gguf``
for a GGUF model), the directory the runtime fills from the object store; else the model's name, which
for a base model registered without files is taken to be a Hugging Face id. The name the server answers
to (``served_model_name``, the gateway's target model) is the catalog model's name.

Refused on meaning (422, naming the field): ``minReplicas`` above ``maxReplicas``; vLLM arguments the
runtime sets itself (``--host``, ``--port``, ``--model``, ``--served-model-name``), and arguments that would
put a secret into revisions, manifests and the audit log (``--api-key``, a flag named for a key, token or
password, a value shaped like a known key), and control characters in them; scale to zero (``minReplicas`` 0)
where nothing can scale from zero (the local runtime, or Kubernetes with ``SERVING_AUTOSCALER=hpa``); GPU,
image and vLLM settings on an external model, which has no runtime.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

import msgspec

from adapters.adminapi import FieldError, Unprocessable
from adapters.adminapi.seams import CatalogModel
from adapters.serving import Autoscaling, DeploymentSpec, RuntimeFailure, ServingRuntime, Slot
from adapters.serving.settings import ServingSettings
from control.serving.protocol import AutoscalingPolicy, Environment

__all__ = [
    "RESERVED_ARGS",
    "Choices",
    "arg_errors",
    "build_spec",
    "external_provider",
    "model_meta",
    "model_uri",
    "render",
    "replica_errors",
]

RESERVED_ARGS = ("--host", "--port", "--model", "--served-model-name", "--api-key")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A flag named for a secret (--hf-token, --api-key, --db-password; not --max-num-batched-tokens) or a value
# shaped like a known key: args are stored on the revision, rendered into manifests and audited.
_SECRET_WORDS = frozenset({"key", "token", "secret", "password", "passwd", "credential", "credentials"})
_KEY_PREFIXES = ("sk-", "sk_", "hf_", "ghp_", "github_pat_", "xoxb-", "xoxp-", "AKIA", "AIza", "llmops_")
_GATEWAY_KINDS = {"openai": "openai", "vllm": "openai", "ollama": "ollama"}


class Choices(msgspec.Struct, frozen=True, kw_only=True):
    """What a revision runs besides the model: resolved, no defaults left to fill."""

    image: str | None
    use_gpu: bool
    gpu_count: int
    min_replicas: int
    max_replicas: int
    autoscaling: AutoscalingPolicy
    vllm_args: list[str]


def arg_errors(args: Sequence[str], field: str = "vllmArgs") -> list[FieldError]:
    errors = []
    for i, arg in enumerate(args):
        flag = arg.split("=", 1)[0]
        if flag in RESERVED_ARGS:
            errors.append(FieldError(field=f"{field}[{i}]", message=(
                f"{flag} is set by the serving runtime (reserved: {', '.join(RESERVED_ARGS)})")))
        elif _CONTROL.search(arg):
            errors.append(FieldError(field=f"{field}[{i}]", message="control characters are not allowed"))
        elif _secret_like(flag, arg):
            errors.append(FieldError(field=f"{field}[{i}]", message=(
                "looks like a secret: arguments are stored, rendered into manifests and audited; give the "
                "server its secrets through its environment instead")))
    return errors


def _secret_like(flag: str, arg: str) -> bool:
    words = set(flag.lstrip("-").lower().replace("_", "-").split("-")) if flag.startswith("-") else set()
    value = arg.split("=", 1)[1] if "=" in arg else arg
    return bool(words & _SECRET_WORDS) or value.startswith(_KEY_PREFIXES)


def replica_errors(settings: ServingSettings, runtime: str, min_replicas: int, max_replicas: int,
                   field: str = "minReplicas") -> list[FieldError]:
    if min_replicas > max_replicas:
        return [FieldError(field=field, message=f"{min_replicas} is above maxReplicas {max_replicas}")]
    if min_replicas == 0 and runtime == "local":
        return [FieldError(field=field, message="the local runtime cannot scale to zero (Kubernetes with KEDA can)")]
    if min_replicas == 0 and runtime == "kubernetes" and settings.autoscaler == "hpa":
        return [FieldError(field=field, message="scale to zero needs KEDA; SERVING_AUTOSCALER is hpa")]
    return []


def model_uri(model: CatalogModel) -> str:
    if model.labels.get("hf.repo"):
        return model.labels["hf.repo"]
    if model.files:
        root = f"/models/{model.id}"
        gguf = sorted(PurePosixPath(key).name for key in model.files if key.lower().endswith(".gguf"))
        return f"{root}/{gguf[0]}" if model.format == "gguf" and gguf else root
    return model.name


def model_meta(model: CatalogModel) -> dict[str, Any]:
    """The bound model as the endpoint shows it (no secrets: the provider's kind only)."""
    return {"id": model.id, "name": model.name, "type": model.type, "status": model.status,
            "version": model.version, "format": model.format,
            "providerKind": (model.provider or {}).get("kind")}


def external_provider(model: CatalogModel) -> dict[str, Any]:
    """An external model's provider as the snapshot needs it: gateway kind, URL, model, key reference."""
    provider = model.provider or {}
    return {"kind": _GATEWAY_KINDS.get(str(provider.get("kind")), "openai"), "baseUrl": provider.get("baseUrl"),
            "model": provider.get("model"), "apiKeyRef": provider.get("apiKeyRef")}


def build_spec(settings: ServingSettings, *, endpoint_id: str, endpoint_name: str, route: str, revision: int,
               environment: Environment, model: CatalogModel, choices: Choices) -> DeploymentSpec:
    resources = settings.resources(choices.use_gpu, choices.gpu_count if choices.use_gpu else None)
    return DeploymentSpec(
        endpoint_id=endpoint_id, endpoint_name=endpoint_name, revision=revision, environment=environment,
        model_id=model.id, model_name=model.name, model_version=model.version, model_format=model.format,
        model_files=list(model.files), model_uri=model_uri(model), served_model_name=model.name,
        image=choices.image or settings.image(choices.use_gpu), use_gpu=choices.use_gpu, resources=resources,
        autoscaling=Autoscaling(min_replicas=choices.min_replicas, max_replicas=choices.max_replicas,
                                target_queue_length=choices.autoscaling.target_queue_length,
                                scale_down_delay_s=choices.autoscaling.scale_down_delay_s),
        vllm_args=list(choices.vllm_args), labels=_labels(environment, model, route))


def _labels(environment: str, model: CatalogModel, route: str) -> dict[str, str]:
    # llmops.io/route: the route whose queued requests wake a scaled-to-zero slot (the Kubernetes runtime carries
    # it as an annotation, since route names may hold characters a label value cannot)
    return {"llmops.io/environment": environment, "llmops.io/model-id": model.id, "llmops.io/route": route,
            "llmops.io/model-version": str(model.version)}


def for_environment(spec: DeploymentSpec, environment: Environment) -> DeploymentSpec:
    """A stored spec applied again after a promotion: the environment (and its label) as the endpoint's now."""
    if spec.environment == environment:
        return spec
    return msgspec.structs.replace(spec, environment=environment,
                                   labels={**spec.labels, "llmops.io/environment": environment})


def render(runtime: ServingRuntime, spec: DeploymentSpec, slot: Slot) -> list[dict[str, Any]]:
    """The manifests kept on the revision; a runtime that cannot render this spec (e.g. a model storage URI it
    does not support) refuses the call with a 422 before anything is written."""
    try:
        return runtime.render(spec, slot)
    except RuntimeFailure as err:
        raise Unprocessable(f"The {runtime.name} runtime cannot deploy this: {err.reason}") from None
