"""Rows as the REST API shows them (``protocol.Endpoint``, ``protocol.Revision``)."""

from __future__ import annotations

from typing import Any

import msgspec

from control.serving.health import SlotState, targets
from control.serving.protocol import AutoscalingPolicy, Endpoint, Revision, SlotHealth

__all__ = ["slot_states", "to_endpoint", "to_revision"]


def slot_states(row: Any) -> dict[str, SlotState]:
    return {name: msgspec.convert(value, SlotState) for name, value in (row.slots or {}).items()}


def to_endpoint(row: Any) -> Endpoint:
    slots = slot_states(row)
    routed = targets(slots, row.canary_percent) if row.status != "deleting" else []
    weights = {t.slot: t.weight for t in routed}
    split: dict[str, int] = {}
    for t in routed:
        split[str(t.state.revision)] = split.get(str(t.state.revision), 0) + t.weight
    return Endpoint(
        id=row.id, name=row.name, route=row.route, environment=row.environment, model_id=row.model_id,
        model=dict(row.model), runtime=row.runtime, runtime_image=row.image, use_gpu=row.use_gpu,
        gpu_count=row.gpu_count, min_replicas=row.min_replicas, max_replicas=row.max_replicas,
        autoscaling=msgspec.convert(row.autoscaling, AutoscalingPolicy), vllm_args=list(row.vllm_args),
        queue_timeout_s=row.queue_timeout_s, status=row.status, status_reason=row.status_reason,
        current_revision=row.current_revision, canary_revision=row.canary_revision, traffic_split=split,
        slots={name: SlotHealth(revision=s.revision, phase=s.phase, reason=s.reason, message=s.message,
                                ready_replicas=s.ready_replicas, desired_replicas=s.desired_replicas,
                                weight_percent=weights.get(name, 0), base_url=s.base_url, details=dict(s.details))
               for name, s in slots.items()},
        replicas={"ready": sum(s.ready_replicas for s in slots.values()),
                  "desired": sum(s.desired_replicas for s in slots.values())},
        checked_at=row.checked_at, created_at=row.created_at, created_by=row.created_by,
        updated_at=row.updated_at, updated_by=row.updated_by,
    )


def to_revision(row: Any) -> Revision:
    return Revision(
        endpoint_id=row.endpoint_id, revision=row.revision, state=row.state, model_id=row.model_id,
        model_version=row.model_version, image=row.image, use_gpu=row.use_gpu, gpu_count=row.gpu_count,
        resources=dict(row.resources), min_replicas=row.min_replicas, max_replicas=row.max_replicas,
        vllm_args=list(row.vllm_args), manifests=list(row.manifests), reason=row.reason,
        created_at=row.created_at, created_by=row.created_by,
    )
