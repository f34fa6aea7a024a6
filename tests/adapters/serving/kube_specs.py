"""Deployment specs and settings for the Kubernetes runtime's tests."""

from __future__ import annotations

from typing import Any

import msgspec

from adapters.serving.base import Autoscaling, DeploymentSpec
from adapters.serving.settings import ServingSettings, load_serving_settings

NS = "serving-test"


def settings(**overrides: Any) -> ServingSettings:
    return load_serving_settings({}, runtime="kubernetes", namespace=NS, **overrides)


def spec(*, use_gpu: bool = True, gpu_count: int = 1, revision: int = 1, min_replicas: int = 1,
         max_replicas: int = 1, cfg: ServingSettings | None = None, **overrides: Any) -> DeploymentSpec:
    cfg = cfg or settings()
    base = DeploymentSpec(
        endpoint_id="ep_llama", endpoint_name="llama", revision=revision, environment="DEV", model_id="mdl_1",
        model_name="llama-3.1-8b", model_version=2, model_uri="meta-llama/Llama-3.1-8B-Instruct",
        served_model_name="llama-3.1-8b", image=cfg.image(use_gpu), use_gpu=use_gpu,
        resources=cfg.resources(use_gpu, gpu_count if use_gpu else None),
        autoscaling=Autoscaling(min_replicas=min_replicas, max_replicas=max_replicas),
        labels={"llmops.io/environment": "DEV"})
    return msgspec.structs.replace(base, **overrides) if overrides else base
