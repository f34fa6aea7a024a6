"""Read-and-record around a model that is not its definition: approvals, versions, diff, lineage."""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import func, insert, select

from adapters.adminapi import Actor, Conflict, ModuleContext, NotFound, Page, PageParams
from adapters.store import utcnow
from control.catalog.models.diff import diff_definitions
from control.catalog.models.protocol import (
    Approval,
    ApprovalCreate,
    Lineage,
    LineageDataset,
    LineageModel,
    ModelVersion,
    VersionDiff,
)
from control.catalog.models.service import ModelService
from control.catalog.tables import approvals, dataset_versions, datasets, model_versions, models

__all__ = ["ModelHistory"]

_MAX_ANCESTORS = 100


def _to_approval(row: Any) -> Approval:
    return msgspec.convert(row, Approval, from_attributes=True)


def _lineage_model(row: Any) -> LineageModel:
    return LineageModel(id=row.id, name=row.name, type=row.type, status=row.status, version=row.version,
                        training_job_id=row.training_job_id)


class ModelHistory:
    def __init__(self, ctx: ModuleContext, models: ModelService) -> None:
        self._store = ctx.store
        self._audit = ctx.audit
        self._models = models

    async def approve(self, actor: Actor, model_id: str, data: ApprovalCreate) -> Approval:
        """Record the caller's decision on the model's current version; only while it is under review."""
        async with self._store.begin() as conn:
            model = await self._models.live(conn, model_id, lock=True)
            if model.status != "under_review":
                raise Conflict(f"Model {model_id!r} is {model.status}; decisions are recorded only under_review "
                               "(PATCH its status to under_review first)", {"status": model.status})
            review_round = (await conn.execute(select(models.c.review_round)
                                               .where(models.c.id == model_id))).scalar_one()
            values = {"model_id": model_id, "model_version": model.version, "review_round": review_round,
                      "decision": data.decision, "note": data.note, "approver": actor.principal.name,
                      "approver_key_id": actor.principal.key_id, "created_at": utcnow()}
            new_id = (await conn.execute(insert(approvals).values(values))).inserted_primary_key[0]  # type: ignore[index]
            approval = Approval(id=int(new_id), **values)
            await self._audit.record(conn, actor, action="catalog.model.approval", resource_type="model",
                                     resource_id=model_id, after=approval, detail=data.decision)
        return approval

    async def approvals(self, model_id: str, page: PageParams) -> Page[Approval]:
        where = approvals.c.model_id == model_id
        async with self._store.read() as conn:
            await self._models.live(conn, model_id)
            total = (await conn.execute(select(func.count()).select_from(approvals).where(where))).scalar_one()
            rows = (await conn.execute(select(approvals).where(where).order_by(approvals.c.id.desc())
                                       .limit(page.page_size).offset(page.offset))).all()
        return page.wrap([_to_approval(r) for r in rows], total)

    async def versions(self, model_id: str, page: PageParams) -> Page[ModelVersion]:
        where = model_versions.c.model_id == model_id
        async with self._store.read() as conn:
            await self._models.live(conn, model_id)
            total = (await conn.execute(select(func.count()).select_from(model_versions).where(where))).scalar_one()
            rows = (await conn.execute(select(model_versions).where(where).order_by(model_versions.c.version.desc())
                                       .limit(page.page_size).offset(page.offset))).all()
        return page.wrap([self._to_version(r) for r in rows], total)

    async def version(self, model_id: str, version: int) -> ModelVersion:
        async with self._store.read() as conn:
            await self._models.live(conn, model_id)
            return await self._version(conn, model_id, version)

    async def diff(self, model_id: str, old: int, new: int) -> VersionDiff:
        async with self._store.read() as conn:
            await self._models.live(conn, model_id)
            a, b = await self._version(conn, model_id, old), await self._version(conn, model_id, new)
        changes = diff_definitions(a.definition, b.definition)
        return VersionDiff(model_id=model_id, from_version=old, to_version=new, identical=not changes,
                           changes=changes)

    async def lineage(self, model_id: str) -> Lineage:
        async with self._store.read() as conn:
            model = await self._models.live(conn, model_id)
            ancestors: list[LineageModel] = []
            parent, seen = model.parent_model_id, {model_id}
            while parent is not None and parent not in seen and len(ancestors) < _MAX_ANCESTORS:
                seen.add(parent)
                row = (await conn.execute(select(models).where(models.c.id == parent))).one_or_none()
                if row is None:
                    break
                ancestors.append(_lineage_model(row))
                parent = row.parent_model_id
            children = (await conn.execute(select(models).where(
                models.c.parent_model_id == model_id, models.c.deleted_at.is_(None)).order_by(models.c.id))).all()
            used = []
            for ref in model.training_datasets:
                row = (await conn.execute(
                    select(datasets.c.name, dataset_versions.c.status)
                    .select_from(datasets.outerjoin(dataset_versions, (dataset_versions.c.dataset_id == datasets.c.id)
                                                    & (dataset_versions.c.version == ref.version)))
                    .where(datasets.c.id == ref.dataset_id))).one_or_none()
                used.append(LineageDataset(dataset_id=ref.dataset_id, version=ref.version,
                                           name=row.name if row else None, status=row.status if row else None))
        current = _lineage_model(model)
        return Lineage(model=current, ancestors=ancestors, training_datasets=used,
                       children=[_lineage_model(r) for r in children])

    async def _version(self, conn: Any, model_id: str, version: int) -> ModelVersion:
        row = (await conn.execute(select(model_versions).where(
            model_versions.c.model_id == model_id, model_versions.c.version == version))).one_or_none()
        if row is None:
            raise NotFound(f"No version {version} of model {model_id!r}")
        return self._to_version(row)

    @staticmethod
    def _to_version(row: Any) -> ModelVersion:
        return ModelVersion(model_id=row.model_id, version=row.version, definition=row.snapshot,
                            created_at=row.created_at, created_by=row.created_by)
