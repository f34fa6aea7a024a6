"""A pull-style streaming ``multipart/form-data`` reader over an async byte stream.

``python-multipart``'s ``MultipartParser`` is push-based (feed bytes, get
callbacks); object stores want to *pull* each file as an async iterator of
chunks. ``MultipartReader`` bridges the two: it feeds the request body to the
parser only as fast as the current part's consumer asks for data, so at most one
received body chunk (tens of KiB) is buffered, whatever the file size.

Usage::

    reader = MultipartReader(request.stream(), request.headers.get("content-type"))
    async for part in reader.parts():
        await object_store.put_stream(key, part.chunks())

A part left unread is skipped when the next one is requested. Malformed or
truncated bodies raise ``MultipartError`` (a 400 in the API); a body that is not
``multipart/form-data`` raises ``NotMultipart`` (415).
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

__all__ = ["FilePart", "MultipartError", "MultipartReader", "NotMultipart"]


class MultipartError(Exception):
    """The body is not well-formed multipart (truncated, bad boundary, bad part headers)."""


class NotMultipart(MultipartError):
    """The request's content type is not ``multipart/form-data`` with a boundary."""


@dataclass
class FilePart:
    """One part. ``filename`` is the raw client-supplied name: validate it before using it as a key."""

    field_name: str
    filename: str | None
    content_type: str
    _reader: MultipartReader = field(repr=False)
    _done: bool = field(default=False, repr=False)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The part's bytes, in the order received; may be iterated once."""
        while not self._done:
            kind, data = await self._reader._next_event()
            if kind == "data":
                yield data
            elif kind == "end":
                self._done = True
            else:
                raise MultipartError("the multipart body ended in the middle of a part")

    async def drain(self) -> None:
        async for _ in self.chunks():
            pass


class MultipartReader:
    def __init__(self, body: AsyncIterator[bytes], content_type: str | None, *, max_header_bytes: int = 4096) -> None:
        ctype, params = parse_options_header(content_type or "")
        if ctype != b"multipart/form-data":
            raise NotMultipart(
                f"expected a multipart/form-data body, got {ctype.decode('latin-1') or 'no content type'}"
            )
        boundary = params.get(b"boundary")
        if not boundary or len(boundary) > 70:
            raise NotMultipart("the multipart/form-data content type has no valid boundary")
        self._body = body
        # Events carry the part headers: one body chunk may hold several parts' headers.
        self._events: deque[tuple[str, Any]] = deque()
        self._headers: list[tuple[bytes, bytes]] = []
        self._field = bytearray()
        self._value = bytearray()
        self._eof = False
        callbacks = {
            "on_part_begin": self._on_part_begin,
            "on_header_field": lambda d, s, e: self._field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._value.extend(d[s:e]),
            "on_header_end": self._on_header_end,
            "on_headers_finished": lambda: self._events.append(("begin", self._headers)),
            "on_part_data": lambda d, s, e: self._events.append(("data", bytes(d[s:e]))),
            "on_part_end": lambda: self._events.append(("end", b"")),
        }
        try:
            self._parser = MultipartParser(boundary, callbacks, max_header_size=max_header_bytes)  # type: ignore[arg-type]
        except FormParserError as err:
            raise NotMultipart(str(err)) from err

    def _on_part_begin(self) -> None:
        self._headers = []

    def _on_header_end(self) -> None:
        self._headers.append((bytes(self._field).strip().lower(), bytes(self._value).strip()))
        self._field.clear()
        self._value.clear()

    async def _next_event(self) -> tuple[str, Any]:
        """Next parser event, reading more body as needed; ``("eof", b"")`` once the body is exhausted."""
        while not self._events:
            if self._eof:
                return "eof", b""
            chunk = await anext(self._body, None)
            if chunk is None:
                self._eof = True
                if self._parser.state != MultipartState.END:
                    raise MultipartError("the multipart body is truncated: its closing boundary is missing")
                continue
            if chunk:
                try:
                    self._parser.write(chunk)
                except FormParserError as err:
                    raise MultipartError(f"malformed multipart body: {err}") from err
        return self._events.popleft()

    async def parts(self) -> AsyncIterator[FilePart]:
        previous: FilePart | None = None
        while True:
            if previous is not None and not previous._done:
                await previous.drain()
            kind, headers = await self._next_event()
            if kind == "eof":
                return
            if kind != "begin":  # data/end outside a part cannot happen with a sane parser
                raise MultipartError("malformed multipart body: data outside a part")
            previous = self._make_part(dict(headers))
            yield previous

    def _make_part(self, headers: dict[bytes, bytes]) -> FilePart:
        disposition = headers.get(b"content-disposition")
        if disposition is None:
            raise MultipartError("a multipart part has no Content-Disposition header")
        kind, params = parse_options_header(disposition)
        if kind != b"form-data" or b"name" not in params:
            raise MultipartError("a multipart part's Content-Disposition must be form-data with a name")
        raw_name = params.get(b"filename")
        try:
            # parse_options_header maps header bytes 1:1 to latin-1; clients send UTF-8 names.
            filename = raw_name.decode("utf-8") if raw_name is not None else None
            field_name = params[b"name"].decode("utf-8")
        except UnicodeDecodeError as err:
            raise MultipartError("a multipart part's name or filename is not valid UTF-8") from err
        content_type = headers.get(b"content-type", b"application/octet-stream").decode("latin-1")
        return FilePart(field_name=field_name, filename=filename, content_type=content_type[:200], _reader=self)
