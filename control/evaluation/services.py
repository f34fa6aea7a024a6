"""Key of the service the evaluation module keeps in the control plane's registry (its own handlers and parts:
``RunService``, whose ``wake()`` tells this replica's worker there is work, e.g. judging just asked for)."""

from __future__ import annotations

from adapters.adminapi.services import ServiceKey
from control.evaluation.runs import RunService

__all__ = ["EVALUATION"]

EVALUATION: ServiceKey[RunService] = ServiceKey("evaluation.service")
