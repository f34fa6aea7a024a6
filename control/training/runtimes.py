"""Which runtime the training module drives, and the address its trainers call back.

``make_runtime`` builds the runtime ``TRAINING_RUNTIME`` names, importing it lazily (the Kubernetes client is
heavy, and neither backend is needed by a test that hands in its own): ``local`` ->
``LocalTrainingRuntime`` with its state under ``TRAINING_LOCAL_DIR`` or ``<data dir>/training``,
``kubernetes`` -> ``KubernetesTrainingRuntime``.

``API_BASE_URL`` (``api_base_url``): the module's ``api_base_url`` argument, else ``TRAINING_API_BASE_URL``
(required on Kubernetes: pods reach the control plane through a Service this process cannot guess), else
``control.module_settings.training.api_base_url``, which the gateway fills in with its own listen address plus
``/llm-ops/v1`` (where this control plane is served) unless the YAML sets it. Read per launch, so a reload that
changes it is seen.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import cast

from adapters.adminapi import ModuleContext
from adapters.envsettings import SettingsError
from adapters.training.base import TrainingRuntime
from adapters.training.settings import TrainingSettings

__all__ = ["api_base_url", "make_runtime"]


def make_runtime(settings: TrainingSettings, ctx: ModuleContext) -> TrainingRuntime:
    if settings.runtime == "kubernetes":
        from adapters.training.kubernetes.runtime import KubernetesTrainingRuntime

        # cast: the protocol's ``name`` is a Literal of both kinds, each runtime's only its own
        return cast(TrainingRuntime, KubernetesTrainingRuntime(settings))
    from adapters.training.local import LocalTrainingRuntime

    state_dir = Path(settings.local_dir) if settings.local_dir else ctx.data_dir / "training"
    return cast(TrainingRuntime, LocalTrainingRuntime(settings, state_dir=state_dir, python=settings.local_python))


def api_base_url(ctx: ModuleContext, settings: TrainingSettings, runtime: str, given: str | None
                 ) -> Callable[[], str | None]:
    """What a launch reads ``API_BASE_URL`` from; a Kubernetes runtime without one fails start-up."""
    fixed = given or settings.api_base_url
    if fixed:
        root = fixed.rstrip("/")
        return lambda: root
    if runtime == "kubernetes":
        raise SettingsError("TRAINING_API_BASE_URL is required with TRAINING_RUNTIME=kubernetes: the control "
                            "plane's /llm-ops/v1 URL as pods reach it")

    def live() -> str | None:
        # the gateway fills in its own admin URL here (gateway/app.py _control_cfg); read at each launch, so a
        # reload that moves the server is followed
        own = ctx.settings.module_settings.get("training")
        if isinstance(own, dict) and isinstance(own.get("api_base_url"), str) and own["api_base_url"]:
            return str(own["api_base_url"]).rstrip("/")
        return None

    return live
