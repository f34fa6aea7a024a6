"""Keys of the services governance publishes in the control plane's registry."""

from __future__ import annotations

from adapters.adminapi.keyring import KeyRing
from adapters.adminapi.services import ServiceKey
from control.governance.service import PolicyService

__all__ = ["KEYRING", "POLICIES"]

POLICIES: ServiceKey[PolicyService] = ServiceKey("governance.policies")
KEYRING: ServiceKey[KeyRing] = ServiceKey("governance.keyring")
