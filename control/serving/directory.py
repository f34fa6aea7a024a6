"""``ENDPOINTS`` (``adapters.adminapi.seams``): which endpoints exist, for modules that must not import serving.

Evaluation resolves its targets and production baselines through it, in its own transaction. Live means
not being deleted; ``model_version`` and ``revision`` are those of the revision the stable slot is meant to
run (``current_revision``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi.seams import EndpointRef, Environment
from control.serving.tables import endpoints, revisions

__all__ = ["EndpointDirectory"]


class EndpointDirectory:
    async def find(self, conn: AsyncConnection, *, endpoint_id: str | None = None, model_id: str | None = None,
                   environment: Environment | None = None) -> list[EndpointRef]:
        """Live endpoints matching every given filter, oldest first (none given: all)."""
        e = endpoints.c
        query: Any = (select(e.id, e.name, e.route, e.environment, e.model_id, e.current_revision, e.status,
                             revisions.c.model_version)
                      .join(revisions, and_(revisions.c.endpoint_id == e.id,
                                            revisions.c.revision == e.current_revision))
                      .where(e.status != "deleting"))
        if endpoint_id is not None:
            query = query.where(e.id == endpoint_id)
        if model_id is not None:
            query = query.where(e.model_id == model_id)
        if environment is not None:
            query = query.where(e.environment == environment)
        rows = (await conn.execute(query.order_by(e.created_at, e.id))).all()
        return [EndpointRef(id=r.id, name=r.name, route=r.route, environment=r.environment, model_id=r.model_id,
                            model_version=r.model_version, revision=r.current_revision, status=r.status)
                for r in rows]
