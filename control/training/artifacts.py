"""What a job stored in the object store (``training_artifacts``): paths, keys, rows, clean-up.

A job stores files only under ``checkpoints/`` or ``output/`` (``contract.ARTIFACT_ROOTS``), at the key
``training/{job_id}/{path}``. Paths are checked here, once, for the routes and for anyone else: a plain
character set per segment, so a path is the same key on every backend and names no file outside its job.

The row is written after the object is complete (``put_stream`` publishes all or nothing), so a row always
describes a whole file; a later PUT of the same path replaces both. At finalization the jobs side reads
``output_files`` (the model to register) and calls ``delete_job_artifacts`` (the checkpoints are no longer
needed once the job succeeded; the outputs then belong to the catalog).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi.seams import RegisteredFile
from adapters.objectstore import ObjectStore, ObjectStoreError, StoredObject
from adapters.store import utcnow
from adapters.training.contract import ARTIFACT_ROOTS, ArtifactFile
from control.training.tables import artifacts, jobs

__all__ = [
    "MAX_PATH_CHARS",
    "OUTPUT_ROOT",
    "artifact_key",
    "delete_job_artifacts",
    "find_artifact",
    "list_artifacts",
    "output_files",
    "record_artifact",
    "validate_artifact_path",
]

log = logging.getLogger("llmops.training")

MAX_PATH_CHARS = 512  # training_artifacts.path
OUTPUT_ROOT = "output/"
_CHECKPOINT_ROOT = "checkpoints/"
_MAX_SEGMENT_CHARS = 255  # one file name, on the local store's file systems
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")


def artifact_key(job_id: str, path: str) -> str:
    """The object-store key of a job's file (``path`` already validated)."""
    return f"training/{job_id}/{path}"


def validate_artifact_path(path: str) -> str | None:
    """Why ``path`` cannot be stored (one sentence, without echoing control characters), or None when it can."""
    if not path.startswith(ARTIFACT_ROOTS):
        return "must start with " + " or ".join(repr(r) for r in ARTIFACT_ROOTS)
    if len(path) > MAX_PATH_CHARS:
        return f"must be at most {MAX_PATH_CHARS} characters"
    for segment in path.split("/"):
        if not segment:
            return "has an empty segment (a doubled or trailing '/', or nothing after the root)"
        if segment in (".", ".."):
            return "must not contain '.' or '..' segments"
        if not _SEGMENT.fullmatch(segment):
            return "segments may hold only letters, digits, '.', '_' and '-'"
        if len(segment) > _MAX_SEGMENT_CHARS:
            return f"segments must be at most {_MAX_SEGMENT_CHARS} characters (a file name's limit)"
    return None


async def record_artifact(conn: AsyncConnection, job_id: str, path: str, stored: StoredObject) -> ArtifactFile:
    """Upsert the row of a file just stored, with the job's current attempt (in the caller's transaction)."""
    attempt = (await conn.execute(select(jobs.c.attempt).where(jobs.c.id == job_id))).scalar_one()
    values = {"job_id": job_id, "path": path, "key": stored.key, "size_bytes": stored.size_bytes,
              "sha256": stored.sha256, "attempt": int(attempt), "created_at": utcnow()}
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(artifacts).values(**values)
    await conn.execute(stmt.on_conflict_do_update(
        index_elements=[artifacts.c.job_id, artifacts.c.path],
        set_={name: stmt.excluded[name] for name in ("key", "size_bytes", "sha256", "attempt", "created_at")}))
    return ArtifactFile(path=path, size_bytes=stored.size_bytes, sha256=stored.sha256)


async def list_artifacts(conn: AsyncConnection, job_id: str, prefix: str = "") -> list[ArtifactFile]:
    """The job's files (every attempt) whose path starts with ``prefix`` (a plain prefix), sorted by path."""
    query = select(artifacts.c.path, artifacts.c.size_bytes, artifacts.c.sha256).where(artifacts.c.job_id == job_id)
    if prefix:
        query = query.where(artifacts.c.path.startswith(prefix, autoescape=True))
    rows = (await conn.execute(query.order_by(artifacts.c.path))).all()
    return [ArtifactFile(path=r.path, size_bytes=int(r.size_bytes), sha256=r.sha256) for r in rows]


async def find_artifact(conn: AsyncConnection, job_id: str, path: str) -> Any | None:
    """The row of one stored file, or None."""
    return (await conn.execute(select(artifacts).where(
        artifacts.c.job_id == job_id, artifacts.c.path == path))).one_or_none()


async def output_files(conn: AsyncConnection, job_id: str) -> list[RegisteredFile]:
    """The job's ``output/`` files as the catalog registers them: ``name`` is the path below ``output/``."""
    rows = (await conn.execute(select(artifacts).where(
        artifacts.c.job_id == job_id, artifacts.c.path.startswith(OUTPUT_ROOT, autoescape=True))
        .order_by(artifacts.c.path))).all()
    return [RegisteredFile(name=r.path[len(OUTPUT_ROOT):], key=r.key, size_bytes=int(r.size_bytes), sha256=r.sha256)
            for r in rows]


async def delete_job_artifacts(conn: AsyncConnection, store: ObjectStore, job_id: str, *, keep_output: bool) -> int:
    """Remove the job's checkpoints (and its outputs too unless ``keep_output``): rows and objects.

    Returns how many rows were removed. The rows go in the caller's transaction; the objects are deleted
    by prefix, so a file whose row was never written (the database failed after the upload) goes too. An
    object the store cannot delete now is logged and left behind: clean-up must not fail a finished job.
    """
    query = delete(artifacts).where(artifacts.c.job_id == job_id)
    if keep_output:
        query = query.where(~artifacts.c.path.startswith(OUTPUT_ROOT, autoescape=True))
    removed = (await conn.execute(query)).rowcount or 0
    roots = (_CHECKPOINT_ROOT,) if keep_output else ("",)
    for root in roots:
        prefix = artifact_key(job_id, root)
        try:
            keys = await store.list(prefix)
            for key in keys:
                await store.delete(key)
        except ObjectStoreError as err:
            log.warning("training job %s: could not delete its stored files under %s (%s); they are left behind",
                        job_id, prefix, err.code)
    return int(removed)
