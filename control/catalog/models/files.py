"""Model file uploads: multipart, streamed part by part into the object store, all-or-nothing.

Every file of a request goes to a fresh key ``models/{modelId}/{uploadId}/{filename}``
(never overwriting anything), hashed (sha256) and size-checked as it streams.
Only when every part is stored does one transaction point the model's file rows
at the new objects; then the objects they replaced are deleted. Any failure
(oversize, hostile or disallowed name, bad magic bytes, truncated body, client gone)
deletes what this request stored, so earlier files stay exactly as they were.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from typing import ClassVar

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import Actor, AdminError, BadRequest, Conflict, ModuleContext, UnsupportedMediaType
from adapters.objectstore import ObjectStore, ObjectStoreError, StoredObject
from adapters.store import new_id, utcnow
from control.catalog.models.formats import FORMATS, BadMagic, InvalidSafetensors, check_magic, missing_files
from control.catalog.models.lifecycle import UPLOADABLE
from control.catalog.models.protocol import Model, ModelFile, ModelFiles
from control.catalog.models.service import ModelService
from control.catalog.multipart import MultipartReader
from control.catalog.tables import model_files
from control.catalog.uploads import checked_filename, object_store_of, translated

__all__ = ["ModelFileService"]

log = logging.getLogger("llmops.catalog")


class InvalidModelFile(AdminError):
    """The file is what its name says, but its content contradicts itself (a safetensors header past its end)."""

    status: ClassVar[int] = 422


class ModelFileService:
    def __init__(self, ctx: ModuleContext, models: ModelService, *, max_files: int) -> None:
        self._ctx = ctx
        self._models = models
        self._max_files = max_files

    async def list(self, model_id: str) -> ModelFiles:
        async with self._ctx.store.read() as conn:
            model = await self._models.live(conn, model_id)
            return await self._describe(conn, model)

    async def precheck(self, model_id: str) -> Model:
        """404/409 before the handler reads a byte of the body."""
        model = await self._models.get(model_id)
        self.check_uploadable(model)
        return model

    def check_uploadable(self, model: Model) -> None:
        if model.format is None:
            raise Conflict(f"Model {model.id!r} is {model.type}: it has no files to upload")
        if model.status not in UPLOADABLE:
            raise Conflict(f"Model {model.id!r} is {model.status}; files can change only in draft "
                           "(move it back to draft first)", {"status": model.status})

    async def upload(self, actor: Actor, model_id: str, reader: MultipartReader) -> ModelFiles:
        store = object_store_of(self._ctx)
        model = await self.precheck(model_id)
        stored: list[tuple[StoredObject, str, str]] = []  # (object, filename, content type)
        try:
            await self._receive(reader, store, model, stored)
            async with self._ctx.store.begin() as conn:
                model = await self._models.live(conn, model_id, lock=True)
                self.check_uploadable(model)  # the status may have moved while we streamed
                replaced = await self._record(conn, actor, model, stored)
                result = await self._describe(conn, model, uploaded=[name for _, name, _ in stored])
                await self._ctx.audit.record(conn, actor, action="catalog.model.upload", resource_type="model",
                                             resource_id=model_id, after=result)
        except BaseException:
            # Shielded: a cancelled request (client gone) must still not leave orphans behind.
            await asyncio.shield(_delete_quietly(store, [obj.key for obj, _, _ in stored]))
            raise
        await _delete_quietly(store, replaced)
        return result

    async def _receive(self, reader: MultipartReader, store: ObjectStore, model: Model,
                       stored: builtins.list[tuple[StoredObject, str, str]]) -> None:
        assert model.format is not None
        rules = FORMATS[model.format]
        limit = self._ctx.settings.max_upload_bytes
        budget, upload_id = limit, new_id("upl")
        filename: str | None = None
        with translated(filename, limit):
            async for part in reader.parts():
                filename = checked_filename(part.filename, part.field_name)
                with translated(filename, limit):
                    if not rules.allows(filename):
                        raise UnsupportedMediaType(
                            f"File {filename!r} is not allowed for a {model.format} model; allowed extensions: "
                            + ", ".join(rules.extensions), {"filename": filename, "allowed": list(rules.extensions)})
                    if any(name == filename for _, name, _ in stored):
                        raise BadRequest(f"File {filename!r} appears twice in this upload", {"filename": filename})
                    if len(stored) >= self._max_files:
                        raise BadRequest(f"At most {self._max_files} files per upload")
                    key = f"models/{model.id}/{upload_id}/{filename}"
                    try:
                        obj = await store.put_stream(key, check_magic(filename, part.chunks()), max_bytes=budget)
                    except InvalidSafetensors as err:
                        raise InvalidModelFile(f"Rejected {filename!r}: {err}", {"filename": filename}) from err
                    except BadMagic as err:
                        raise BadRequest(f"Rejected {filename!r}: {err}", {"filename": filename}) from err
                    budget -= obj.size_bytes
                    stored.append((obj, filename, part.content_type))
        if not stored:
            raise BadRequest("The upload holds no files; send one or more file parts")

    async def _record(self, conn: AsyncConnection, actor: Actor, model: Model,
                      stored: builtins.list[tuple[StoredObject, str, str]]) -> builtins.list[str]:
        """Point the model's file rows at the new objects; returns the object keys they replaced."""
        names = [name for _, name, _ in stored]
        replaced = (await conn.execute(select(model_files.c.object_key).where(
            model_files.c.model_id == model.id, model_files.c.filename.in_(names)))).scalars().all()
        await conn.execute(delete(model_files).where(model_files.c.model_id == model.id,
                                                     model_files.c.filename.in_(names)))
        now = utcnow()
        await conn.execute(insert(model_files), [
            {"model_id": model.id, "filename": name, "object_key": obj.key, "storage_uri": obj.storage_uri,
             "size_bytes": obj.size_bytes, "sha256": obj.sha256, "content_type": ctype, "uploaded_at": now,
             "uploaded_by": actor.principal.name}
            for obj, name, ctype in stored
        ])
        return list(replaced)

    async def _describe(self, conn: AsyncConnection, model: Model,
                        uploaded: builtins.list[str] | None = None) -> ModelFiles:
        rows = (await conn.execute(select(model_files).where(model_files.c.model_id == model.id)
                                   .order_by(model_files.c.filename))).all()
        files = [ModelFile(filename=r.filename, size_bytes=r.size_bytes, sha256=r.sha256, storage_uri=r.storage_uri,
                           content_type=r.content_type, uploaded_at=r.uploaded_at, uploaded_by=r.uploaded_by)
                 for r in rows]
        missing = missing_files(model.format, [f.filename for f in files]) if model.format else []
        return ModelFiles(model_id=model.id, format=model.format, files=files, complete=not missing,
                          missing_files=missing, uploaded=uploaded or [])


async def _delete_quietly(store: ObjectStore, keys: list[str]) -> None:
    for key in keys:
        try:
            await store.delete(key)
        except ObjectStoreError as err:
            log.warning("could not delete model file object %s: %s", key, err)
