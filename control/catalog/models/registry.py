"""``catalog.model_registry`` (``adapters.adminapi.seams.MODEL_REGISTRY``): models that training jobs produced.

A succeeded job's output is already in the object store (the job uploaded it); registering makes it a
catalog model in the caller's transaction, through the same create path as ``POST /catalog/models``
(``ModelService.insert``: references, row, version snapshot, audit, change mark) plus the file rows,
which point at the job's objects without copying them. From then on the catalog owns those objects:
deleting the model deletes them, exactly like uploaded files.

Checks, in order (nothing is written unless all pass):

    the job registered before        -> that model (idempotent), or 409 when it has since been deleted
    the definition (ModelCreate)     -> 400 (bounds, patterns, what each type needs), as a create
    the files                        -> 422 naming files[i]: safe names the format allows, no duplicate,
                                        a sha256, and the format's required files (config.json + *.safetensors)
    parent model, dataset version    -> 404 when unknown; 422 when unfit (external parent, version not ready)
    the objects                      -> 422 when a key is absent from the object store or already the
                                        catalog's (another model's file, a dataset version)

A name a live model already has gets ``-2``, ``-3``, … appended (cut to fit 100 characters). Two
registrations racing for one name on PostgreSQL: the loser's insert fails inside a savepoint, which
is rolled back, and it takes the next suffix; racing for one job, the loser returns the winner's model.
"""

from __future__ import annotations

import mimetypes
import re
import uuid
from typing import Any

import msgspec
from sqlalchemy import insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import (
    Actor,
    Conflict,
    FieldError,
    ModuleContext,
    NotFound,
    Principal,
    Role,
    SemanticError,
    ValidationFailed,
)
from adapters.adminapi.seams import CatalogModel, ModelRegistration, RegisteredFile
from adapters.objectstore import InvalidKey, ObjectStore, ObjectStoreError, safe_filename, validate_key
from adapters.store import utcnow
from control.catalog.models.formats import FORMATS, missing_files
from control.catalog.models.protocol import ModelCreate
from control.catalog.models.reader import ModelReader
from control.catalog.models.service import ModelService
from control.catalog.models.validation import check_shape
from control.catalog.tables import dataset_versions, datasets, model_files, models
from control.catalog.uploads import object_store_of

__all__ = ["ModelRegistry"]

_MAX_NAME = 100  # ModelCreate.name's bound
_NAME_ATTEMPTS = 5  # names lost to concurrent creates before giving up (each loss means another writer won)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ModelRegistry:
    def __init__(self, ctx: ModuleContext, models: ModelService, reader: ModelReader) -> None:
        self._ctx = ctx
        self._models = models
        self._reader = reader

    async def register(self, conn: AsyncConnection, registration: ModelRegistration, *, actor: str
                       ) -> CatalogModel:
        """Create the model (draft) with its files and lineage in ``conn``'s transaction; see the module doc."""
        job_id = registration.training_job_id
        if not 1 <= len(job_id) <= 40:
            raise ValidationFailed([FieldError(field="trainingJobId", message="must be 1-40 characters")])
        found = await self._produced_by(conn, job_id)
        if found is not None:
            return found
        data = _definition(registration)
        check_shape(data)
        _check_files(data.format or "", registration.files)
        await _require_references(conn, registration)
        store = object_store_of(self._ctx)
        await _require_objects(conn, store, registration.files)
        who = _actor(actor)
        for _ in range(_NAME_ATTEMPTS):
            named = msgspec.structs.replace(data, name=await _free_name(conn, data.name))
            try:
                async with conn.begin_nested():  # a lost race undoes only this attempt, not the caller's work
                    model = await self._models.insert(
                        conn, who, named, action="catalog.model.register", training_job_id=job_id,
                        detail=f"trained by {job_id}: {len(registration.files)} file(s)")
                    await _record_files(conn, store, model.id, who, registration.files)
            except IntegrityError:
                found = await self._produced_by(conn, job_id)
                if found is not None:  # the same job registered concurrently: its model stands
                    return found
                continue  # the name was taken between the look-up and the insert
            return await self._reader.get(conn, model.id)
        raise Conflict(f"Could not find a free name for {data.name!r}: other models kept taking it; retry")

    async def _produced_by(self, conn: AsyncConnection, job_id: str) -> CatalogModel | None:
        row = (await conn.execute(select(models.c.id, models.c.deleted_at)
                                  .where(models.c.training_job_id == job_id))).one_or_none()
        if row is None:
            return None
        if row.deleted_at is not None:
            raise Conflict(f"Training job {job_id!r} registered model {row.id!r}, which has since been deleted "
                           "(with its files)", {"modelId": row.id})
        return await self._reader.get(conn, row.id)


def _actor(name: str) -> Actor:
    if not 1 <= len(name) <= 100:
        raise ValueError("actor must be 1-100 characters")
    return Actor(principal=Principal(key_id=name[:40], name=name, role=Role.developer),
                 request_id=f"register-{uuid.uuid4().hex}")


def _definition(reg: ModelRegistration) -> ModelCreate:
    """The registration as the create body it stands for, validated against the same wire type."""
    body = {"name": reg.name, "type": reg.type, "ownerTeam": reg.owner_team, "description": reg.description,
            "format": reg.format, "parentModelId": reg.parent_model_id,
            "trainingDatasets": [{"datasetId": reg.dataset_id, "version": reg.dataset_version}],
            "tags": list(reg.tags), "labels": dict(reg.labels)}
    try:
        return msgspec.convert(body, ModelCreate)
    except msgspec.ValidationError as err:
        message, _, path = str(err).partition(" - at `$")
        raise ValidationFailed([FieldError(field=path.rstrip("`").lstrip("."), message=message)]) from None


def _check_files(fmt: str, files: list[RegisteredFile]) -> None:
    rules = FORMATS[fmt]
    errors: list[FieldError] = []
    seen: set[str] = set()
    for i, f in enumerate(files):
        try:
            if safe_filename(f.name) != f.name:
                raise InvalidKey("it is not in normal form (NFC)")
            if not rules.allows(f.name):
                raise InvalidKey(f"a {fmt} model may hold only {', '.join(rules.extensions)} files")
            if f.name in seen:
                raise InvalidKey("listed twice")
        except InvalidKey as err:
            errors.append(FieldError(field=f"files[{i}].name", message=f"{f.name!r}: {err.message}"))
        seen.add(f.name)
        try:
            validate_key(f.key)
        except InvalidKey as err:
            errors.append(FieldError(field=f"files[{i}].key", message=err.message))
        if f.size_bytes < 0:
            errors.append(FieldError(field=f"files[{i}].sizeBytes", message="must be 0 or more"))
        if not _SHA256.match(f.sha256):
            errors.append(FieldError(field=f"files[{i}].sha256", message="must be 64 lowercase hex digits"))
    missing = missing_files(fmt, [f.name for f in files])
    if missing:
        errors.append(FieldError(field="files", message=f"a {fmt} model needs {' and '.join(missing)}; "
                                                        f"missing: {', '.join(missing)}"))
    if errors:
        raise SemanticError(errors)


async def _require_references(conn: AsyncConnection, reg: ModelRegistration) -> None:
    """404 for what does not exist at all (the seam's contract); ``check_references`` judges the rest."""
    if reg.parent_model_id is not None:
        parent = (await conn.execute(select(models.c.id).where(
            models.c.id == reg.parent_model_id, models.c.deleted_at.is_(None)))).one_or_none()
        if parent is None:
            raise NotFound(f"No parent model {reg.parent_model_id!r}")
    version = (await conn.execute(
        select(dataset_versions.c.version).select_from(datasets.join(
            dataset_versions, dataset_versions.c.dataset_id == datasets.c.id))
        .where(datasets.c.id == reg.dataset_id, datasets.c.deleted_at.is_(None),
               dataset_versions.c.version == reg.dataset_version))).one_or_none()
    if version is None:
        raise NotFound(f"No version {reg.dataset_version} of dataset {reg.dataset_id!r}")


async def _require_objects(conn: AsyncConnection, store: ObjectStore, files: list[RegisteredFile]) -> None:
    """Every key holds an object, and none is already the catalog's: deleting this model deletes them."""
    keys = [f.key for f in files]
    owned = set((await conn.execute(select(model_files.c.object_key).where(
        model_files.c.object_key.in_(keys)))).scalars()) | set((await conn.execute(select(
            dataset_versions.c.object_key).where(dataset_versions.c.object_key.in_(keys)))).scalars())
    errors: list[FieldError] = []
    for i, f in enumerate(files):
        if f.key in owned:
            errors.append(FieldError(field=f"files[{i}].key", message=f"{f.key!r} already belongs to the catalog"))
        elif not await _exists(store, f.key):
            errors.append(FieldError(field=f"files[{i}].key", message=f"no object {f.key!r} in the object store"))
    if errors:
        raise SemanticError(errors)


async def _exists(store: ObjectStore, key: str) -> bool:
    try:
        return await store.exists(key)
    except ObjectStoreError as err:
        if err.status >= 500:
            raise  # the envelope answers 503: nothing was written
        return False


async def _free_name(conn: AsyncConnection, name: str) -> str:
    """``name``, or the first of ``name-2``, ``name-3``, … no live model has (each cut to 100 characters)."""
    # Every candidate up to -999999999 starts with ``prefix``: ``name-`` itself when no cut is ever needed.
    prefix = name + "-" if len(name) <= _MAX_NAME - 10 else name[:_MAX_NAME - 10]
    taken = set((await conn.execute(select(models.c.name).where(
        models.c.deleted_at.is_(None), or_(models.c.name == name, models.c.name.startswith(prefix, autoescape=True)),
    ))).scalars())
    n, candidate = 1, name
    while candidate in taken:
        n += 1
        suffix = f"-{n}"
        candidate = name[:_MAX_NAME - len(suffix)] + suffix
    return candidate


async def _record_files(conn: AsyncConnection, store: ObjectStore, model_id: str, actor: Actor,
                        files: list[RegisteredFile]) -> None:
    now = utcnow()
    rows: list[dict[str, Any]] = [
        {"model_id": model_id, "filename": f.name, "object_key": f.key, "storage_uri": store.uri(f.key),
         "size_bytes": f.size_bytes, "sha256": f.sha256,
         "content_type": mimetypes.guess_type(f.name)[0] or "application/octet-stream",
         "uploaded_at": now, "uploaded_by": actor.principal.name}
        for f in files
    ]
    await conn.execute(insert(model_files), rows)
