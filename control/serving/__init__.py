"""The serving control module: deploy catalog models as endpoints (vLLM on Kubernetes, or local processes).

An endpoint binds a model to an environment and a route; every deploy is an immutable revision; a canary
takes a share of the traffic the gateway splits; rollback applies an older revision again; the reconciler
follows the runtime and publishes the ``endpoints`` snapshot, so routes appear, move and go by themselves.
REST under ``/llm-ops/v1/serving/`` (``protocol``); see docs/admin-api.md (Serving).

The names below load on first use, so ``from control.serving.client import ServingClient`` (an operator's
script) does not import the module's server side (SQLAlchemy, Litestar, the runtimes).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from control.serving.module import ServingModule
    from control.serving.service import EndpointService
    from control.serving.services import SERVING
    from control.serving.tables import SERVING_TOPIC

    module: ServingModule

__all__ = ["SERVING", "SERVING_TOPIC", "EndpointService", "ServingModule", "module"]

_LAZY = {"ServingModule": "control.serving.module", "EndpointService": "control.serving.service",
         "SERVING": "control.serving.services", "SERVING_TOPIC": "control.serving.tables"}


def __getattr__(name: str) -> Any:
    if name == "module":  # the entry point's object, made once
        value: Any = importlib.import_module("control.serving.module").ServingModule()
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'control.serving' has no attribute {name!r}")
    globals()[name] = value
    return value
