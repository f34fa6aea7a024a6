"""What an endpoint's slots mean: its status, whether it is routable, and the traffic split the gateway makes.

Pure functions over ``SlotState`` (what the reconciler last read from the runtime, stored on the endpoint row),
shared by the ``endpoints`` snapshot and the REST view, so the split an operator reads is the split the
gateway makes.

* A slot is **routable** when its base URL is known and it serves: ``ready``, ``scaled_to_zero`` (requests
  wait at the gateway up to the route's ``queue_timeout_s``), or any phase with a ready replica (a rolling
  update whose new pods crash still has the old ones serving).
* **Targets**: stable with weight ``100 - canary_percent``, canary with ``canary_percent`` once routable;
  a zero weight leaves the target out (a promotion in progress routes to the canary only, until the stable
  slot runs the promoted revision), and when the weighted slot is not routable the other one takes it all.
* **Status** (``protocol.EndpointStatus``): ``deploying`` until the stable slot serves, then ``ready``, or
  ``degraded`` while a rollout is in progress, replicas are missing or the canary is not ready (the reason
  says which: the runtime's, or ``RolloutInProgress`` / ``ReplicasNotReady`` / ``CanaryNotReady``);
  ``failed`` when nothing serves and the runtime says why; ``scaled_to_zero``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from control.serving.protocol import EndpointStatus

__all__ = ["SlotState", "Target", "endpoint_status", "routable", "targets"]

SLOTS = ("stable", "canary")


class SlotState(msgspec.Struct, frozen=True, kw_only=True):
    """One slot as last read (``revision``: what it runs, as reported, else what it was asked to run)."""

    revision: int
    wanted_revision: int
    phase: str = "absent"
    reason: str | None = None
    message: str = ""
    ready_replicas: int = 0
    desired_replicas: int = 0
    base_url: str | None = None
    served_model_name: str = ""
    details: dict[str, Any] = {}


class Target(msgspec.Struct, frozen=True):
    slot: str
    state: SlotState
    weight: int


def routable(slot: SlotState | None) -> bool:
    if slot is None or not slot.base_url:
        return False
    return slot.phase in ("ready", "scaled_to_zero") or slot.ready_replicas > 0


def targets(slots: dict[str, SlotState], canary_percent: int) -> list[Target]:
    """The gateway's targets, in slot order; empty when nothing serves."""
    stable, canary = slots.get("stable"), slots.get("canary")
    share = canary_percent if routable(canary) else 0
    out = []
    if routable(stable) and 100 - share > 0:
        assert stable is not None
        out.append(Target("stable", stable, 100 - share))
    if share > 0:
        assert canary is not None
        out.append(Target("canary", canary, share))
    if out:
        return out
    if routable(stable):  # the canary took it all (a promotion) and is gone meanwhile
        assert stable is not None
        return [Target("stable", stable, 100)]
    return []


def endpoint_status(slots: dict[str, SlotState], wants_canary: bool) -> tuple[EndpointStatus, str | None]:
    """``(status, reason)`` of a runtime-backed endpoint from its slots."""
    stable, canary = slots.get("stable"), slots.get("canary")
    if stable is None:
        return "deploying", None
    if not routable(stable):
        if stable.phase == "failed":
            return "failed", stable.reason or "Failed"
        return "deploying", stable.reason
    if stable.phase == "scaled_to_zero":
        return "scaled_to_zero", None
    if stable.revision != stable.wanted_revision:
        return "degraded", stable.reason or "RolloutInProgress"
    if stable.phase != "ready" or stable.ready_replicas < stable.desired_replicas:
        return "degraded", stable.reason or "ReplicasNotReady"
    if wants_canary and (canary is None or canary.phase != "ready"):
        return "degraded", (canary.reason if canary is not None else None) or "CanaryNotReady"
    return "ready", None
