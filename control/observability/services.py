"""Keys of the services observability publishes in the control plane's registry."""

from __future__ import annotations

from adapters.adminapi.services import ServiceKey
from control.observability.service import CostReports

__all__ = ["REPORTS"]

REPORTS: ServiceKey[CostReports] = ServiceKey("observability.reports")
