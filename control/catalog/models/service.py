"""Model CRUD, versions and the status lifecycle; every change is audited and announced.

Each mutation is one store transaction holding the row change, its version
snapshot, the audit entry, the change-feed mark and (when it changes which models
the gateway serves: ``models.publish``) the ``snapshot.routes`` publish, so a failure at any step
leaves all of them as they were. Rows are locked (``FOR UPDATE``) before checks
that the write depends on, so concurrent requests cannot both pass them.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from sqlalchemy import Select, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import Actor, Conflict, FieldError, ModuleContext, NotFound, Page, PageParams, SemanticError
from adapters.objectstore import ObjectStoreError
from adapters.store import DuplicateKey, new_id, utcnow
from control.catalog.models.formats import missing_files
from control.catalog.models.lifecycle import EDITABLE, check_transition
from control.catalog.models.protocol import Model, ModelCreate, ModelUpdate, StatusChange
from control.catalog.models.providers import ProviderConfig, public_provider
from control.catalog.models.publish import publish_routes, served
from control.catalog.models.refs import ModelRefs
from control.catalog.models.validation import check_references, check_shape
from control.catalog.tables import MODELS_TOPIC, approvals, model_files, model_versions, models

__all__ = ["ModelService", "definition_of", "escape_like", "to_model"]

log = logging.getLogger("llmops.catalog")
_DEFINITION = ("name", "type", "owner_team", "description", "format", "provider", "parent_model_id",
               "training_datasets", "tags", "labels")


def to_model(row: Any) -> Model:
    return msgspec.convert(row, Model, from_attributes=True)


def definition_of(model: Model | ModelCreate) -> dict[str, Any]:
    """The versioned part of a model, as the API shows it (camelCase, no secrets: only references)."""
    full = msgspec.to_builtins(model)
    keys = {msgspec.structs.fields(type(model))[i].encode_name: name
            for i, name in enumerate(type(model).__struct_fields__)}
    return {wire: full.get(wire) for wire, name in keys.items() if name in _DEFINITION}


def escape_like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _columns(data: ModelCreate) -> dict[str, Any]:
    provider: ProviderConfig | None = public_provider(data.provider)
    return {
        "name": data.name, "type": data.type, "owner_team": data.owner_team, "description": data.description,
        "format": data.format, "provider": msgspec.to_builtins(provider) if provider else None,
        "parent_model_id": data.parent_model_id,
        "training_datasets": msgspec.to_builtins(data.training_datasets), "tags": list(data.tags),
        "labels": dict(data.labels),
    }


class ModelService:
    def __init__(self, ctx: ModuleContext, refs: ModelRefs) -> None:
        self._ctx = ctx
        self._store = ctx.store
        self._audit = ctx.audit
        self._changes = ctx.changes
        self._refs = refs

    async def create(self, actor: Actor, data: ModelCreate) -> Model:
        check_shape(data)
        try:
            async with self._store.begin() as conn:
                return await self.insert(conn, actor, data)
        except DuplicateKey as err:
            raise Conflict(f"A model named {data.name!r} already exists") from err

    async def insert(self, conn: AsyncConnection, actor: Actor, data: ModelCreate, *,
                     action: str = "catalog.model.create", training_job_id: str | None = None,
                     detail: str | None = None) -> Model:
        """A new draft at version 1 in ``conn``'s transaction (``data`` already passed ``check_shape``): its
        references checked, then the row, its version snapshot, the audit entry and the change mark. The one
        create path, shared by ``POST /catalog/models`` and the registry of trained models."""
        await check_references(conn, data)
        now, who, model_id = utcnow(), actor.principal.name, new_id("mdl")
        await conn.execute(insert(models).values(
            id=model_id, status="draft", version=1, review_round=0, **_columns(data), training_job_id=training_job_id,
            created_at=now, created_by=who, updated_at=now, updated_by=who))
        model = await self.live(conn, model_id)
        await self._snapshot(conn, model)
        await self._audit.record(conn, actor, action=action, resource_type="model", resource_id=model_id,
                                 after=model, detail=detail)
        await self._changes.mark(conn, MODELS_TOPIC)
        return model

    async def get(self, model_id: str) -> Model:
        async with self._store.read() as conn:
            return await self.live(conn, model_id)

    async def list(self, page: PageParams, *, type_: str | None = None, status: str | None = None,
                   owner_team: str | None = None, name: str | None = None) -> Page[Model]:
        query: Select[Any] = select(models).where(models.c.deleted_at.is_(None))
        if type_:
            query = query.where(models.c.type == type_)
        if status:
            query = query.where(models.c.status == status)
        if owner_team:
            query = query.where(models.c.owner_team == owner_team)
        if name:
            query = query.where(models.c.name.ilike(escape_like(name), escape="\\"))
        async with self._store.read() as conn:
            total = (await conn.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
            rows = (await conn.execute(query.order_by(models.c.created_at.desc(), models.c.id.desc())
                                       .limit(page.page_size).offset(page.offset))).all()
        return page.wrap([to_model(r) for r in rows], total)

    async def update(self, actor: Actor, model_id: str, data: ModelUpdate) -> tuple[Model, bool]:
        """Returns the model and whether a version was created (an identical definition creates none)."""
        check_shape(data)
        try:
            async with self._store.begin() as conn:
                before = await self.live(conn, model_id, lock=True)
                if data.expected_version is not None and data.expected_version != before.version:
                    raise Conflict(f"Model {model_id!r} is at version {before.version}, not "
                                   f"{data.expected_version}: reload and retry", {"version": before.version})
                if data.type != before.type:
                    raise SemanticError([FieldError(field="type", message=(
                        f"cannot change from {before.type} to {data.type}; register a new model instead"))])
                if before.status not in EDITABLE:
                    raise Conflict(f"Model {model_id!r} is {before.status}; only draft and under_review models "
                                   "can be edited", {"status": before.status})
                if definition_of(data) == definition_of(before):
                    return before, False
                await check_references(conn, data, model_id)
                now, who = utcnow(), actor.principal.name
                values = {**_columns(data), "version": before.version + 1, "updated_at": now, "updated_by": who}
                await conn.execute(update(models).where(models.c.id == model_id).values(values))
                after = await self.live(conn, model_id)
                await self._snapshot(conn, after)
                await self._audit.record(conn, actor, action="catalog.model.update", resource_type="model",
                                         resource_id=model_id, before=before, after=after)
                await self._changes.mark(conn, MODELS_TOPIC)
        except DuplicateKey as err:
            raise Conflict(f"A model named {data.name!r} already exists") from err
        return after, True

    async def change_status(self, actor: Actor, model_id: str, change: StatusChange) -> Model:
        async with self._store.begin() as conn:
            before = await self.live(conn, model_id, lock=True)
            check_transition(model_id, before.status, change.status)
            values: dict[str, Any] = {"status": change.status, "updated_at": utcnow(),
                                      "updated_by": actor.principal.name}
            if change.status == "under_review":
                await self._require_files(conn, before)
                values["review_round"] = (await self._round(conn, model_id)) + 1
            if change.status == "approved" and before.status == "under_review":
                await self._require_approval(conn, before)
            await conn.execute(update(models).where(models.c.id == model_id).values(values))
            after = await self.live(conn, model_id)
            detail = f"{before.status} -> {after.status}" + (f": {change.note}" if change.note else "")
            await self._audit.record(conn, actor, action="catalog.model.status", resource_type="model",
                                     resource_id=model_id, before=before, after=after, detail=detail)
            await self._changes.mark(conn, MODELS_TOPIC)
            if served(before) or served(after):  # the gateway's routes change with this commit
                await publish_routes(self._ctx, conn)
        return after

    async def delete(self, actor: Actor, model_id: str) -> Model:
        """Refused (409, listing them) while anything depends on the model; then a tombstone, files removed."""
        async with self._store.begin() as conn:
            before = await self.live(conn, model_id, lock=True)
            dependents = await self._refs.dependents(conn, model_id)
            if dependents:
                listed = ", ".join(f"{d.kind} {d.id}" for d in dependents)
                raise Conflict(f"Model {model_id!r} is still used by {listed}; remove those first",
                               {"dependents": msgspec.to_builtins(dependents)})
            keys = (await conn.execute(select(model_files.c.object_key)
                                       .where(model_files.c.model_id == model_id))).scalars().all()
            await conn.execute(delete(model_files).where(model_files.c.model_id == model_id))
            await conn.execute(update(models).where(models.c.id == model_id)
                               .values(deleted_at=utcnow(), deleted_by=actor.principal.name))
            await self._audit.record(conn, actor, action="catalog.model.delete", resource_type="model",
                                     resource_id=model_id, before=before,
                                     detail=f"{len(keys)} file(s) removed" if keys else None)
            await self._changes.mark(conn, MODELS_TOPIC)
            if served(before):
                await publish_routes(self._ctx, conn)
        await self._delete_objects(keys)
        return before

    async def live(self, conn: AsyncConnection, model_id: str, *, lock: bool = False) -> Model:
        query = select(models).where(models.c.id == model_id)
        row = (await conn.execute(query.with_for_update() if lock else query)).one_or_none()
        if row is None or row.deleted_at is not None:
            raise NotFound(f"No model {model_id!r}")
        return to_model(row)

    async def _snapshot(self, conn: AsyncConnection, model: Model) -> None:
        await conn.execute(insert(model_versions).values(
            model_id=model.id, version=model.version, snapshot=definition_of(model),
            created_at=model.updated_at, created_by=model.updated_by))

    @staticmethod
    async def _round(conn: AsyncConnection, model_id: str) -> int:
        return int((await conn.execute(select(models.c.review_round).where(models.c.id == model_id))).scalar_one())

    async def _require_files(self, conn: AsyncConnection, model: Model) -> None:
        if model.format is None:  # external: nothing to upload
            return
        names = (await conn.execute(select(model_files.c.filename)
                                    .where(model_files.c.model_id == model.id))).scalars().all()
        missing = missing_files(model.format, list(names))
        if missing:
            raise Conflict(f"Model {model.id!r} cannot go under review: its {model.format} files are incomplete "
                           f"(missing {', '.join(missing)})", {"missingFiles": missing})

    async def _require_approval(self, conn: AsyncConnection, model: Model) -> None:
        review_round = await self._round(conn, model.id)
        latest = (await conn.execute(
            select(approvals.c.decision, approvals.c.model_version)
            .where(approvals.c.model_id == model.id, approvals.c.review_round == review_round)
            .order_by(approvals.c.id.desc()).limit(1)
        )).one_or_none()
        if latest is None or latest.decision != "approve" or latest.model_version != model.version:
            why = ("no decision has been recorded" if latest is None
                   else "the latest decision is reject" if latest.decision != "approve"
                   else f"the approval was for version {latest.model_version}, the model is at {model.version}")
            raise Conflict(f"Model {model.id!r} needs an approval of version {model.version} in the current review "
                           f"before it can be approved: {why}. POST /catalog/models/{model.id}/approvals "
                           "with decision approve.", {"approvalRequired": True})

    async def _delete_objects(self, keys: Any) -> None:
        store = self._ctx.object_store
        for key in keys:
            try:
                if store is not None:
                    await store.delete(key)
            except ObjectStoreError as err:  # the row is gone; an orphaned object is only wasted space
                log.warning("could not delete model file object %s: %s", key, err)

