"""``catalog.model_reader`` (``adapters.adminapi.seams.MODEL_CATALOG``): one model as serving and training see it.

Other modules never import the catalog; they read a model through this seam, in their own
transaction, and may lock its row (``lock=True``) so that its status cannot change, nor the
model be deleted, between their check ("only approved models go to PROD") and their write.
"""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import NotFound
from adapters.adminapi.seams import CatalogModel
from control.catalog.tables import model_files, models

__all__ = ["ModelReader"]


class ModelReader:
    async def get(self, conn: AsyncConnection, model_id: str, *, lock: bool = False) -> CatalogModel:
        query = select(models).where(models.c.id == model_id)
        if lock:
            query = query.with_for_update()
        row = (await conn.execute(query)).one_or_none()
        if row is None or row.deleted_at is not None:
            raise NotFound(f"No model {model_id!r}")
        files = (await conn.execute(select(model_files.c.filename, model_files.c.object_key)
                                    .where(model_files.c.model_id == model_id)
                                    .order_by(model_files.c.filename))).all()
        provider: dict[str, Any] | None = row.provider
        if provider is not None:  # references only are stored; never pass a raw key on, even a legacy one
            provider = {k: v for k, v in provider.items() if k != "apiKey"}
        return msgspec.convert({
            "id": row.id, "name": row.name, "type": row.type, "status": row.status, "version": row.version,
            "owner_team": row.owner_team, "format": row.format, "provider": provider,
            "parent_model_id": row.parent_model_id, "files": [f.object_key for f in files],
            "file_names": [f.filename for f in files], "tags": list(row.tags or []),
            "labels": dict(row.labels or {}), "updated_at": row.updated_at,
        }, CatalogModel)
