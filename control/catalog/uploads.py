"""Shared plumbing of the two streaming upload endpoints (model files, dataset versions).

The upload handlers opt out of the admin router's JSON body cap
(``request_max_body_size=None``) and enforce ``ControlCfg.max_upload_bytes``
themselves: up front from ``Content-Length`` (so an honest oversized request is
refused before a byte is read) and again while streaming (for chunked bodies and
liars). The limit counts file bytes; the raw body may exceed it by
``FRAMING_SLACK_BYTES`` of multipart headers and boundaries.

``translated`` is the one place object-store and multipart errors become
admin-API errors, with the client's file name in the message and ``data``.

A client that goes away mid-body is not a server error: the body reader raises
``ClientDisconnected`` (logged once at info, no traceback; the 400 reaches no
one), and the upload services remove what the request had stored.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema

from adapters.adminapi import (
    AdminError,
    BadRequest,
    ModuleContext,
    PayloadTooLarge,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from adapters.objectstore import InvalidKey, ObjectStore, ObjectStoreError, ObjectTooLarge, safe_filename
from control.catalog.multipart import MultipartError, MultipartReader, NotMultipart

__all__ = [
    "FRAMING_SLACK_BYTES",
    "ClientDisconnected",
    "MultipartUploadOperation",
    "checked_filename",
    "multipart_body",
    "object_store_of",
    "translated",
]

FRAMING_SLACK_BYTES = 1 << 20

log = logging.getLogger("llmops.catalog")


class ClientDisconnected(BadRequest):
    """The client closed the connection before sending the whole body."""


@dataclass
class MultipartUploadOperation(Operation):
    """OpenAPI for a handler that streams ``request`` itself: Litestar cannot infer its multipart body."""

    def __post_init__(self) -> None:
        binary = Schema(type=OpenAPIType.STRING, format="binary")  # type: ignore[arg-type]
        self.request_body = RequestBody(required=True, content={"multipart/form-data": OpenAPIMediaType(
            schema=Schema(type=OpenAPIType.OBJECT, properties={"file": binary}, required=["file"]))},
            description="File part(s) with a filename; the part's field name is free.")


def object_store_of(ctx: ModuleContext) -> ObjectStore:
    if ctx.object_store is None:
        raise ServiceUnavailable("No object store is configured or reachable; uploads are unavailable")
    return ctx.object_store


def multipart_body(request: Request[Any, Any, Any], max_file_bytes: int) -> MultipartReader:
    """A streaming multipart reader over the request body, bounded as described above."""
    limit = max_file_bytes + FRAMING_SLACK_BYTES
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(_too_large(max_file_bytes), {"maxUploadBytes": max_file_bytes})
    try:
        return MultipartReader(_bounded(_body(request), limit, max_file_bytes), request.headers.get("content-type"))
    except NotMultipart as err:
        raise UnsupportedMediaType(f"{err}; send the file(s) as multipart/form-data") from err


async def _body(request: Request[Any, Any, Any]) -> AsyncIterator[bytes]:
    """The request body as received. Unlike ``request.stream()``, which turns a disconnect into a 500
    (logged with a traceback), a client gone mid-body is ``ClientDisconnected``."""
    received = 0
    while True:
        event = await request.receive()
        if event["type"] == "http.disconnect":
            log.info("client disconnected after %d body bytes of %s %s", received, request.method, request.url.path)
            raise ClientDisconnected("The client disconnected before the upload was complete",
                                     {"receivedBytes": received})
        body: bytes = event.get("body", b"")  # type: ignore[assignment]  # an http.request event here
        if body:
            received += len(body)
            yield body
        if not event.get("more_body", False):
            return


async def _bounded(body: AsyncIterator[bytes], limit: int, max_file_bytes: int) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in body:
        seen += len(chunk)
        if seen > limit:
            raise PayloadTooLarge(_too_large(max_file_bytes), {"maxUploadBytes": max_file_bytes})
        yield chunk


def _too_large(max_file_bytes: int) -> str:
    return f"The upload exceeds the limit of {max_file_bytes} bytes (control.max_upload_bytes)"


def checked_filename(raw: str | None, field_name: str) -> str:
    """The part's file name if it is safe to store under, else a 400 naming the problem."""
    if raw is None:
        raise BadRequest(f"Form field {field_name!r} is not a file; send files as parts with a filename",
                         {"field": field_name})
    try:
        return safe_filename(raw)
    except InvalidKey as err:
        raise BadRequest(f"Rejected file name {raw!r}: {err.message}", {"filename": raw}) from err


@contextlib.contextmanager
def translated(filename: str | None, max_file_bytes: int) -> Iterator[None]:
    """Map multipart and object-store failures to admin errors (AdminErrors pass through)."""
    try:
        yield
    except AdminError:
        raise
    except NotMultipart as err:
        raise UnsupportedMediaType(str(err)) from err
    except MultipartError as err:
        raise BadRequest(f"Malformed upload: {err}") from err
    except ObjectTooLarge as err:
        raise PayloadTooLarge(_too_large(max_file_bytes), {"maxUploadBytes": max_file_bytes,
                                                           "filename": filename}) from err
    except InvalidKey as err:
        raise BadRequest(f"Rejected file name {filename!r}: {err.message}", {"filename": filename}) from err
    except ObjectStoreError as err:
        if err.status >= 500:
            raise ServiceUnavailable("The object store is unavailable; retry later") from err
        raise BadRequest(err.message) from err
