"""Services one control module provides for the others: the protocol and its ``ServiceKey``.

Modules never import one another, so a service meant to be shared is typed by a
protocol here, and the providing module's class satisfies it. Read one per
request with ``ctx.services[KEY]``.

``MODEL_REFS`` (provided by ``catalog``): record that an endpoint, a training job
or another model depends on a model, inside the caller's transaction, so the
model cannot be deleted while the dependent exists::

    refs = ctx.services[MODEL_REFS]
    async with ctx.store.begin() as conn:
        ...insert the endpoint...
        await refs.add(conn, model_id, "endpoint", endpoint_id)
"""

from __future__ import annotations

from typing import Literal, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi.services import ServiceKey

__all__ = ["MODEL_REFS", "ModelRefKind", "ModelRefTracker"]

ModelRefKind = Literal["endpoint", "training_job", "model"]


class ModelRefTracker(Protocol):
    async def add(self, conn: AsyncConnection, model_id: str, kind: ModelRefKind, ref_id: str) -> None:
        """Record the reference; idempotent. Raises ``NotFound`` for an unknown or deleted model."""
        ...

    async def remove(self, conn: AsyncConnection, model_id: str, kind: ModelRefKind, ref_id: str) -> bool:
        """Drop the reference; returns whether it existed."""
        ...


MODEL_REFS: ServiceKey[ModelRefTracker] = ServiceKey("catalog.model_refs")
