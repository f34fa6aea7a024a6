"""File uploads from the browser to the admin API, streamed through without being held in memory.

`console.js` sends the file as the raw request body (XMLHttpRequest, for its progress events) with its name in
`?filename=`; the API's upload endpoints read one `multipart/form-data` file part. `forward_file` frames the
body as that part while it streams. The browser's `content-length` is passed on (grown by the framing), so the
API can refuse an oversized file before a byte of it is read. A browser gone mid-file leaves the part unclosed:
the API refuses it as truncated and keeps nothing.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Response
from litestar.exceptions import InternalServerException

from gateway.console.api import ApiError, error_of
from gateway.console.render import PAGE_HEADERS
from gateway.console.session import Console

__all__ = ["filename_problem", "forward_file", "json_answer"]

log = logging.getLogger("llmops.console")
_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}$")
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def json_answer(status: int, payload: dict[str, Any]) -> Response[bytes]:
    """What the upload script reads: `{"location"}` on success, `{"message"}` with the status on failure."""
    return Response(msgspec.json.encode(payload), status_code=status, media_type="application/json",
                    headers=PAGE_HEADERS)


def filename_problem(name: str) -> str | None:
    """Why a file name cannot go into the part's header, in words; `None` when it can."""
    if not name:
        return "The file has no name."
    if len(name) > 255:
        return "The file name is longer than 255 characters; rename the file."
    if any(ch in name for ch in '"\\/') or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return f"The file name {name!r} holds a quote, a slash or a control character; rename the file."
    return None


async def _framed(head: bytes, body: AsyncIterator[bytes], tail: bytes) -> AsyncIterator[bytes]:
    yield head
    try:
        async for chunk in body:
            yield chunk
    except InternalServerException:  # Litestar's word for "client disconnected prematurely"
        log.info("console upload: the browser went away mid-file")
        return  # the part stays unclosed, so the API keeps nothing
    yield tail


async def forward_file(console: Console, api_path: str) -> tuple[str, Any]:
    """Send this request's body to `api_path` as one file part: `(filename, the API's data)`.

    Raises `ApiError` for a body the console refuses (400, 415) and for the API's own refusals."""
    request = console.request
    media = request.headers.get("content-type", "").split(";")[0].strip()
    if media.startswith(_FORM_TYPES):
        raise ApiError(415, "Send the file as the request body (the upload form does this when JavaScript is on), "
                            "or use the API's multipart upload.")
    filename = request.query_params.get("filename", "").strip()
    if problem := filename_problem(filename):
        raise ApiError(400, problem)
    media = media if _MEDIA_TYPE.match(media) else "application/octet-stream"
    boundary = "llmops-console-" + secrets.token_hex(16)
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {media}\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    length = request.headers.get("content-length", "")
    if length.isdigit():
        headers["content-length"] = str(len(head) + int(length) + len(tail))
    reply = await console.api.raw("POST", api_path, body=_framed(head, request.stream(), tail), headers=headers)
    if reply.status >= 400:
        raise error_of(reply.status, reply.body)
    doc = msgspec.json.decode(reply.body) if reply.body else {}
    return filename, doc.get("data") if isinstance(doc, dict) else None
