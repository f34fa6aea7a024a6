"""The seam through which other modules declare they depend on a model, which blocks its deletion.

Endpoints (serving) and training jobs do not exist yet; when they arrive, their
modules record each reference inside the transaction that creates the endpoint
or job, and remove it in the one that deletes it::

    refs = ctx.services[MODEL_REFS]     # adapters.adminapi.seams; a ModelRefTracker
    async with ctx.store.begin() as conn:
        ...insert the endpoint...
        await refs.add(conn, model_id, "endpoint", endpoint_id)

Writing in the caller's transaction is the point: the reference exists exactly
when the endpoint does, and ``DELETE /catalog/models/{id}`` (which locks the model
row, as ``add`` does) can never slip between the two.

A fine-tuned model whose parent is this model is a dependent too; that follows
from ``parent_model_id`` and needs no reference row.
"""

from __future__ import annotations

from typing import get_args

from sqlalchemy import and_, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import NotFound
from adapters.adminapi.seams import ModelRefKind
from adapters.store import utcnow
from control.catalog.models.protocol import Dependent
from control.catalog.tables import model_refs, models

__all__ = ["ModelRefs", "RefKind"]

RefKind = ModelRefKind
_KINDS = frozenset(get_args(RefKind))


class ModelRefs:
    async def add(self, conn: AsyncConnection, model_id: str, kind: RefKind, ref_id: str) -> None:
        """Record that ``kind``/``ref_id`` uses the model; idempotent. ``NotFound`` for an unknown or deleted model."""
        _check(kind, ref_id)
        row = (await conn.execute(
            select(models.c.deleted_at).where(models.c.id == model_id).with_for_update()
        )).one_or_none()
        if row is None or row.deleted_at is not None:
            raise NotFound(f"No model {model_id!r}")
        key = and_(model_refs.c.model_id == model_id, model_refs.c.ref_kind == kind, model_refs.c.ref_id == ref_id)
        # Look before inserting: a unique violation would abort the caller's whole PostgreSQL transaction.
        if (await conn.execute(select(model_refs.c.ref_id).where(key))).first() is None:
            await conn.execute(insert(model_refs).values(model_id=model_id, ref_kind=kind, ref_id=ref_id,
                                                         created_at=utcnow()))

    async def remove(self, conn: AsyncConnection, model_id: str, kind: RefKind, ref_id: str) -> bool:
        """Drop a reference; returns whether it existed."""
        _check(kind, ref_id)
        result = await conn.execute(delete(model_refs).where(
            model_refs.c.model_id == model_id, model_refs.c.ref_kind == kind, model_refs.c.ref_id == ref_id))
        return bool(result.rowcount)

    async def dependents(self, conn: AsyncConnection, model_id: str) -> list[Dependent]:
        """Everything that blocks deleting the model: references, then live child models; sorted."""
        refs = (await conn.execute(
            select(model_refs.c.ref_kind, model_refs.c.ref_id).where(model_refs.c.model_id == model_id)
        )).all()
        children = (await conn.execute(select(models.c.id).where(
            models.c.parent_model_id == model_id, models.c.deleted_at.is_(None)))).scalars().all()
        found = {(kind, ref) for kind, ref in refs} | {("model", child) for child in children}
        return [Dependent(kind=kind, id=ref) for kind, ref in sorted(found)]  # type: ignore[arg-type]


def _check(kind: str, ref_id: str) -> None:
    if kind not in _KINDS:
        raise ValueError(f"reference kind {kind!r} is not one of {sorted(_KINDS)}")
    if not ref_id or len(ref_id) > 200:
        raise ValueError("reference id must be 1-200 characters")
