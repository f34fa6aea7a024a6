"""Key of the service the training module keeps in the control plane's registry: ``JobService`` (its handlers',
and the job I/O routes' source of ``settings``, e.g. ``max_artifact_bytes``)."""

from __future__ import annotations

from adapters.adminapi.services import ServiceKey
from control.training.service import JobService

__all__ = ["TRAINING"]

TRAINING: ServiceKey[JobService] = ServiceKey("training.jobs")
