"""Key of the service the prompts module provides in the control plane's registry."""

from __future__ import annotations

from adapters.adminapi.services import ServiceKey
from control.prompts.service import PromptsService

__all__ = ["PROMPTS"]

PROMPTS: ServiceKey[PromptsService] = ServiceKey("prompts.service")
