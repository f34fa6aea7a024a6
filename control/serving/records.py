"""Revision rows and external slots, as create, redeploy and rollback write them."""

from __future__ import annotations

from typing import Any

import msgspec

from adapters.adminapi import Actor, FieldError
from adapters.adminapi.seams import CatalogModel
from adapters.serving import DeploymentSpec
from adapters.store import utcnow
from control.serving.health import SlotState
from control.serving.protocol import EndpointCreate, Redeploy
from control.serving.specs import Choices

__all__ = ["external_errors", "external_slot", "revision_values"]


def external_slot(revision: int, spec: dict[str, Any]) -> SlotState:
    """An external model's slot: always ready, at its provider's URL."""
    provider = spec["provider"]
    return SlotState(revision=revision, wanted_revision=revision, phase="ready", ready_replicas=1,
                     desired_replicas=1, base_url=provider["baseUrl"], served_model_name=provider["model"],
                     details={"provider": {k: provider[k] for k in ("kind", "apiKeyRef")}})


def revision_values(endpoint_id: str, revision: int, state: str, model: CatalogModel, choices: Choices,
                    spec: DeploymentSpec | dict[str, Any], manifests: list[dict[str, Any]], actor: Actor,
                    reason: str) -> dict[str, Any]:
    resources: dict[str, Any] = (msgspec.to_builtins(spec.resources) if isinstance(spec, DeploymentSpec) else {})
    served = spec.served_model_name if isinstance(spec, DeploymentSpec) else spec["served_model_name"]
    return {"endpoint_id": endpoint_id, "revision": revision, "state": state, "model_id": model.id,
            "model_version": model.version, "image": choices.image if isinstance(spec, dict) else spec.image,
            "use_gpu": choices.use_gpu, "gpu_count": choices.gpu_count if choices.use_gpu else 0,
            "resources": resources, "min_replicas": choices.min_replicas, "max_replicas": choices.max_replicas,
            "autoscaling": msgspec.to_builtins(choices.autoscaling), "vllm_args": list(choices.vllm_args),
            "served_model_name": served, "spec": msgspec.to_builtins(spec), "manifests": manifests,
            "reason": reason, "created_at": utcnow(), "created_by": actor.principal.name}


def external_errors(data: EndpointCreate | Redeploy) -> list[FieldError]:
    """External models have no runtime: GPU, image and vLLM settings make no sense for them."""
    errors = []
    for field, wire in (("serving_runtime_image", "servingRuntimeImage"), ("gpu_count", "gpuCount"),
                        ("vllm_args", "vllmArgs")):
        if getattr(data, field):
            errors.append(FieldError(field=wire, message="an external model has no runtime to configure"))
    if data.use_gpu:
        errors.append(FieldError(field="useGpu", message="an external model has no runtime to configure"))
    return errors
