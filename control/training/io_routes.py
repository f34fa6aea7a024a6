"""The job's I/O API (``adapters.training.contract``): its inputs, and the files it stores.

Pods and local trainers call these paths with their job-scoped token, never an admin key: each route is
public to the admin guard and authenticates itself (``_job``). A missing, malformed, unknown or finished job's
token, or one of another job, is the same 401, so an answer tells a guesser nothing, and it is recorded like
the guard's denials (without the token). Authentication comes before any other check, so nothing about a job
(its paths, its model) is revealed to a caller without its token.

Answers are the contract's own JSON objects (``{"files": [...]}``, ``{"key", "sizeBytes", "sha256"}``), not
wrapped in the admin envelope: they are the trainer contract's wire, which trainers and the test double read as
written there. Errors are the envelope, as on every admin path. Files and the dataset are streamed raw
(``application/octet-stream``, ``application/x-ndjson``), never held whole in memory. Every
refusal is decided before the first byte: a failure after it (the object store or the dataset gone
mid-stream) aborts the response, so a client sees a truncated body, never a short file that looks complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, cast
from urllib.parse import unquote

import msgspec
from litestar import Controller, Request, get, put
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from litestar.params import Parameter
from litestar.response import Stream

from adapters.adminapi import (
    BadRequest,
    Conflict,
    FieldError,
    ModuleContext,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
    ValidationFailed,
)
from adapters.adminapi.envelope import request_id
from adapters.adminapi.seams import DATASET_READER, MODEL_CATALOG, CatalogModel
from adapters.adminapi.services import MissingService, ServiceKey
from adapters.objectstore import InvalidKey, ObjectNotFound, ObjectStore, ObjectStoreError, ObjectTooLarge
from adapters.training.contract import ArtifactFile
from adapters.training.settings import TrainingSettings, load_training_settings
from control.training.artifacts import (
    MAX_PATH_CHARS,
    artifact_key,
    find_artifact,
    list_artifacts,
    record_artifact,
    validate_artifact_path,
)
from control.training.services import TRAINING
from control.training.tokens import bearer_token, job_for_token

__all__ = ["CONTROLLERS", "JobIOController"]

log = logging.getLogger("llmops.training")

JobId = Annotated[str, Parameter(min_length=1, max_length=40, description="the job's id")]
_DENIED = "This path needs the job's own token (Authorization: Bearer $LLMOPS_JOB_TOKEN) while the job runs"
_PUBLIC = {"public": True}  # to the admin-key guard: these routes authenticate the job token themselves
_ROWS = msgspec.json.Encoder()
_READS: list[Any] = [Unauthorized, NotFound]
_WRITES: list[Any] = [Unauthorized, PayloadTooLarge]
_DATASET: list[Any] = [Unauthorized, NotFound, Conflict]  # 409: the version is not ready


class ModelFileName(msgspec.Struct, frozen=True):
    name: str


class ModelFiles(msgspec.Struct, frozen=True):
    """The base model's files, by name (``GET .../inputs/model/{name}`` downloads one)."""

    files: list[ModelFileName]


class ArtifactFiles(msgspec.Struct, frozen=True):
    files: list[ArtifactFile]


class StoredArtifact(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    path: str
    key: str
    size_bytes: int
    sha256: str


@dataclass
class _BinaryUploadOperation(Operation):
    """OpenAPI for the PUT: the handler streams the raw body itself, which Litestar cannot infer."""

    def __post_init__(self) -> None:
        binary = Schema(type=OpenAPIType.STRING, format="binary")  # type: ignore[arg-type]
        self.request_body = RequestBody(required=True, content={
            "application/octet-stream": OpenAPIMediaType(schema=binary)}, description="The file's bytes.")


class _ClientGone(BadRequest):
    """The client closed the connection before the whole body arrived (the answer reaches no one)."""


class JobIOController(Controller):
    path = "/training/jobs"
    tags = ["training"]

    @get("/{jobId:str}/inputs/dataset", opt=_PUBLIC, raises=_DATASET, media_type="application/x-ndjson",
         summary="The job's dataset version as JSON lines, in file order (job token)")
    async def get_dataset(self, jobId: JobId, request: Request[Any, Any, Any], ctx: ModuleContext) -> Stream:
        job = await _job(request, ctx, jobId)
        reader = _service(ctx, DATASET_READER)
        async with ctx.store.read() as conn:
            await reader.version(conn, job.dataset_id, job.dataset_version)  # 404/409 before the first byte
        return Stream(_json_lines(reader.rows(job.dataset_id, job.dataset_version), jobId),
                      media_type="application/x-ndjson")

    @get("/{jobId:str}/inputs/model", opt=_PUBLIC, raises=_READS,
         summary="The names of the job's base model files (job token)")
    async def list_model_files(self, jobId: JobId, request: Request[Any, Any, Any],
                               ctx: ModuleContext) -> ModelFiles:
        model = await _base_model(request, ctx, jobId)
        return ModelFiles(files=[ModelFileName(name=name) for name in _names(model)])

    @get("/{jobId:str}/inputs/model/{name:str}", opt=_PUBLIC, raises=_READS, media_type="application/octet-stream",
         summary="One base model file's bytes (job token)")
    async def get_model_file(self, jobId: JobId, name: Annotated[str, Parameter(min_length=1, max_length=255)],
                             request: Request[Any, Any, Any], ctx: ModuleContext) -> Stream:
        model = await _base_model(request, ctx, jobId)
        key = _names(model).get(name)
        if key is None:
            raise NotFound(f"The base model {model.id!r} has no file {name!r}", {"name": name})
        return await _download(ctx, key, f"Model file {name!r}")

    @put("/{jobId:str}/artifacts/{path:path}", status_code=201, opt=_PUBLIC, raises=_WRITES,
         request_max_body_size=None, operation_class=_BinaryUploadOperation,
         summary="Store a checkpoint or output file, streamed to the object store (job token)",
         description="path under checkpoints/ or output/, segments of letters, digits, '.', '_', '-'. "
                     "A later PUT of the same path replaces the file.")
    async def put_artifact(self, jobId: JobId, path: str, request: Request[Any, Any, Any],
                           ctx: ModuleContext) -> StoredArtifact:
        job = await _job(request, ctx, jobId)
        path = _checked_path(request, jobId, path)
        store, limit = _object_store(ctx), _max_artifact_bytes(ctx)
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise _too_large(limit)  # an honest client is refused before a byte is read
        with _translated(path, limit):
            stored = await store.put_stream(artifact_key(job.id, path), _body(request), max_bytes=limit)
        try:
            async with ctx.store.begin() as conn:
                await record_artifact(conn, job.id, path, stored)
        except BaseException:
            # Shielded: a cancelled request must not leave an object that no row describes.
            await asyncio.shield(_delete_quietly(store, stored.key))
            raise
        return StoredArtifact(path=path, key=stored.key, size_bytes=stored.size_bytes, sha256=stored.sha256)

    @get("/{jobId:str}/artifacts", opt=_PUBLIC, raises=_READS,
         summary="The files this job stored (every attempt), sorted by path (job token)")
    async def list_files(
        self, jobId: JobId, request: Request[Any, Any, Any], ctx: ModuleContext,
        prefix: str = Parameter(query="prefix", default="", max_length=MAX_PATH_CHARS,
                                description="only paths that start with it, e.g. checkpoints/"),
    ) -> ArtifactFiles:
        job = await _job(request, ctx, jobId)
        async with ctx.store.read() as conn:
            return ArtifactFiles(files=await list_artifacts(conn, job.id, prefix))

    @get("/{jobId:str}/artifacts/{path:path}", opt=_PUBLIC, raises=_READS, media_type="application/octet-stream",
         summary="One stored file's bytes (job token)")
    async def get_artifact(self, jobId: JobId, path: str, request: Request[Any, Any, Any],
                           ctx: ModuleContext) -> Stream:
        job = await _job(request, ctx, jobId)
        path = _checked_path(request, jobId, path)
        async with ctx.store.read() as conn:
            row = await find_artifact(conn, job.id, path)
        if row is None:
            raise NotFound(f"Job {job.id!r} stored no file {path!r}", {"path": path})
        return await _download(ctx, row.key, f"File {path!r}")


CONTROLLERS = [JobIOController]


async def _job(request: Request[Any, Any, Any], ctx: ModuleContext, job_id: str) -> Any:
    """The live job ``request``'s token belongs to, if it is ``job_id``; else one 401 whatever was wrong."""
    token = bearer_token(request.headers)
    job = None
    if token is not None:
        async with ctx.store.read() as conn:
            job = await job_for_token(conn, token, job_id)
    if job is None:
        await ctx.audit.denial(principal=None, key_id=None, request_id=request_id(request), method=request.method,
                               path=request.url.path, status_code=401, reason="invalid job token",
                               source=request.client.host if request.client else None)
        raise Unauthorized(_DENIED)
    return job


def _service(ctx: ModuleContext, key: ServiceKey[Any]) -> Any:
    try:
        return ctx.services[key]
    except MissingService:
        raise ServiceUnavailable(f"The {key.module} module is not running; the job's inputs are unavailable") \
            from None


async def _base_model(request: Request[Any, Any, Any], ctx: ModuleContext, job_id: str) -> CatalogModel:
    job = await _job(request, ctx, job_id)
    if job.base_model_id is None:
        raise NotFound(f"Job {job.id!r} has no base model (a {job.job_type} job)")
    catalog = _service(ctx, MODEL_CATALOG)
    async with ctx.store.read() as conn:
        model: CatalogModel = await catalog.get(conn, job.base_model_id)
    return model


def _names(model: CatalogModel) -> dict[str, str]:
    """File name (the key's last segment) -> object-store key."""
    return {key.rpartition("/")[2]: key for key in model.files}


def _checked_path(request: Request[Any, Any, Any], job_id: str, parsed: str) -> str:
    """The artifact path as sent, or a 400 naming ``path``.

    Read from the request's raw path rather than Litestar's parameter (or ``scope["path"]``, which Litestar
    rewrites), which fold ``a//b`` into ``a/b`` and drop a trailing ``/``: a path must be refused, not silently
    stored under another name."""
    raw_path: bytes = request.scope.get("raw_path") or b""  # optional in ASGI
    raw = unquote(raw_path.decode("latin-1").partition("?")[0])
    _, found, path = raw.partition(f"/training/jobs/{job_id}/artifacts/")
    if not found:  # a server that gives no raw path
        path = parsed.lstrip("/")
    error = validate_artifact_path(path)
    if error is not None:
        raise ValidationFailed([FieldError("path", error)])
    return path


def _object_store(ctx: ModuleContext) -> ObjectStore:
    if ctx.object_store is None:
        raise ServiceUnavailable("No object store is configured or reachable; job files are unavailable")
    return ctx.object_store


def _max_artifact_bytes(ctx: ModuleContext) -> int:
    """The module's ``TRAINING_MAX_ARTIFACT_BYTES`` (its job service's settings); the environment's, read once,
    when the routes are mounted without that service."""
    if TRAINING in ctx.services:
        return ctx.services[TRAINING].settings.max_artifact_bytes
    return _environment_settings().max_artifact_bytes


@functools.cache
def _environment_settings() -> TrainingSettings:
    return load_training_settings()


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The file exceeds the limit of {limit} bytes (TRAINING_MAX_ARTIFACT_BYTES)",
                           {"maxArtifactBytes": limit})


@contextlib.contextmanager
def _translated(path: str, limit: int) -> Iterator[None]:
    """Object-store failures of an upload as admin errors (the one place they are mapped)."""
    try:
        yield
    except ObjectTooLarge as err:
        raise _too_large(limit) from err
    except InvalidKey as err:  # e.g. a file where another file's path needs a directory
        raise ValidationFailed([FieldError("path", err.message)]) from err
    except ObjectStoreError as err:
        raise ServiceUnavailable("The object store is unavailable; retry later") from err


async def _body(request: Request[Any, Any, Any]) -> AsyncIterator[bytes]:
    """The request body as it arrives; a client gone mid-body is ``_ClientGone`` (so the upload is dropped),
    logged once without a traceback (``request.stream()`` would make it a 500)."""
    received = 0
    while True:
        event = await request.receive()
        if event["type"] == "http.disconnect":
            log.info("client disconnected after %d body bytes of %s %s", received, request.method,
                     request.url.path)
            raise _ClientGone("The client disconnected before the upload was complete", {"receivedBytes": received})
        body: bytes = event.get("body", b"")  # type: ignore[assignment]  # an http.request event here
        if body:
            received += len(body)
            yield body
        if not event.get("more_body", False):
            return


async def _download(ctx: ModuleContext, key: str, what: str) -> Stream:
    """Stream ``key``; a missing object is a 404 and an unreachable store a 503, both before the first byte."""
    store = _object_store(ctx)
    chunks = cast(AsyncGenerator[bytes, None], store.open(key))  # the protocol's "an async generator"
    try:
        first = await anext(chunks, b"")
    except ObjectNotFound:
        raise NotFound(f"{what} is missing from the object store") from None
    except ObjectStoreError as err:
        raise ServiceUnavailable("The object store is unavailable; retry later") from err

    async def rest() -> AsyncIterator[bytes]:
        async with contextlib.aclosing(chunks):
            if first:
                yield first
            async for chunk in chunks:
                yield chunk

    return Stream(rest(), media_type="application/octet-stream")


async def _json_lines(batches: AsyncIterator[list[dict[str, Any]]], job_id: str) -> AsyncIterator[bytes]:
    """One JSON object per line, a batch per chunk; a failure mid-way aborts the response (logged)."""
    try:
        async for batch in batches:
            if batch:
                yield b"\n".join(_ROWS.encode(row) for row in batch) + b"\n"
    except Exception as err:
        log.warning("training job %s: its dataset stream failed mid-way (%s)", job_id, type(err).__name__)
        raise


async def _delete_quietly(store: ObjectStore, key: str) -> None:
    try:
        await store.delete(key)
    except ObjectStoreError as err:
        log.warning("could not delete %s after a failed upload (%s)", key, err.code)
