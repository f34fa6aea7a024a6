"""Serving runtimes behind one protocol (``base.ServingRuntime``): Kubernetes and this machine."""

from adapters.serving.base import (
    Autoscaling,
    DeleteReport,
    DeploymentSpec,
    Phase,
    Resources,
    RuntimeFailure,
    RuntimeStatus,
    ServingRuntime,
    Slot,
)

__all__ = [
    "Autoscaling",
    "DeleteReport",
    "DeploymentSpec",
    "Phase",
    "Resources",
    "RuntimeFailure",
    "RuntimeStatus",
    "ServingRuntime",
    "Slot",
]
