"""Keys of the services the serving module provides in the control plane's registry.

``SERVING`` is its own handlers'; ``ENDPOINTS`` (``serving.endpoints``, declared in ``adapters.adminapi.seams``
with its protocol) is the directory other modules read endpoints through.
"""

from __future__ import annotations

from adapters.adminapi.seams import ENDPOINTS
from adapters.adminapi.services import ServiceKey
from control.serving.service import EndpointService

__all__ = ["ENDPOINTS", "SERVING"]

SERVING: ServiceKey[EndpointService] = ServiceKey("serving.service")
