"""Key of the service the serving module provides in the control plane's registry (its own handlers')."""

from __future__ import annotations

from adapters.adminapi.services import ServiceKey
from control.serving.service import EndpointService

__all__ = ["SERVING"]

SERVING: ServiceKey[EndpointService] = ServiceKey("serving.endpoints")
