"""Thin raw-ASGI helpers for the hot path (no framework objects per request)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from adapters.errors import GatewayError, PayloadTooLarge
from adapters.request_id import SAFE_REQUEST_ID_BYTES

__all__ = ["ClientDisconnected", "first_request_id", "read_body", "request_id_from", "send_error", "send_json"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

# Minted ids: 48 random bits per process + a counter. Unique without a syscall per request.
_ID_PREFIX = ""
_ID_COUNTER = itertools.count()


def _new_id_source() -> None:
    """Draw this process's prefix; again in each forked worker (`--workers`), whose ids would
    otherwise repeat its siblings' one for one."""
    global _ID_PREFIX, _ID_COUNTER  # module state by design: read on every request
    _ID_PREFIX = os.urandom(6).hex()
    _ID_COUNTER = itertools.count(int.from_bytes(os.urandom(4), "big"))


_new_id_source()
os.register_at_fork(after_in_child=_new_id_source)


class ClientDisconnected(Exception):
    """The client went away while we were still reading its request."""


def request_id_from(incoming: bytes | None) -> str:
    """Honour a sane incoming `x-request-id` value; otherwise mint one (hostile ids are replaced).
    The rule is adapters/request_id.py's, shared with the admin API."""
    if incoming and SAFE_REQUEST_ID_BYTES.fullmatch(incoming):
        return incoming.decode()
    return f"{_ID_PREFIX}{next(_ID_COUNTER):012x}"


def first_request_id(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The first `x-request-id` header's raw value: the first one wins, as on the admin API."""
    for name, value in headers:
        if name == b"x-request-id":
            return value
    return None


async def read_body(receive: Receive, declared: bytes | None, limit: int) -> bytes:
    """The whole request body; `declared` is the raw content-length header, checked before reading."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body of {declared.decode()} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_json(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_error(send: Send, exc: GatewayError, request_id: str) -> None:
    headers = [(b"x-request-id", request_id.encode())]
    headers.extend((k.encode(), v.encode()) for k, v in exc.headers().items())
    await send_json(send, exc.http_status, exc.body(), headers)
