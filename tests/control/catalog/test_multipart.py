"""The streaming multipart reader: any chunking, lazy reads, and precise errors for broken bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from control.catalog.multipart import MultipartError, MultipartReader, NotMultipart
from tests.control.catalog._helpers import BOUNDARY, multipart

CTYPE = f"multipart/form-data; boundary={BOUNDARY}"


async def chunked(body: bytes, size: int, log: list[int] | None = None) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        if log is not None:
            log.append(start)
        yield body[start:start + size]
    yield b""  # Litestar's request.stream() ends with an empty chunk


async def read_all(reader: MultipartReader) -> list[tuple[str, str | None, bytes]]:
    out = []
    async for part in reader.parts():
        out.append((part.field_name, part.filename, b"".join([c async for c in part.chunks()])))
    return out


@pytest.mark.parametrize("size", [1, 7, 64, 10_000])
async def test_parts_survive_any_chunking(size: int) -> None:
    parts = [("files", "a.json", b'{"a": 1}'), ("files", "w.bin", bytes(range(256)) * 20),
             ("note", None, b"text\r\n--not-a-boundary"), ("files", "日本語.txt", b"")]
    body, _ = multipart(*parts)
    assert await read_all(MultipartReader(chunked(body, size), CTYPE)) == parts


async def test_reads_the_body_only_as_fast_as_parts_are_consumed() -> None:
    body, _ = multipart(("f", "big.bin", b"x" * 50_000), ("f", "small.bin", b"y"))
    pulled: list[int] = []
    reader = MultipartReader(chunked(body, 1000, pulled), CTYPE)
    parts = reader.parts()
    first = await anext(parts)
    assert first.filename == "big.bin" and len(pulled) == 1  # headers only: no file data buffered ahead
    second = await anext(parts)  # skipping the unread first part drains it
    assert second.filename == "small.bin" and b"".join([c async for c in second.chunks()]) == b"y"
    assert await anext(parts, None) is None


async def test_broken_bodies_raise_precise_errors() -> None:
    body, _ = multipart(("f", "a.txt", b"hello world"))
    with pytest.raises(MultipartError, match="truncated"):
        await read_all(MultipartReader(chunked(body[:-10], 5), CTYPE))
    with pytest.raises(MultipartError, match="truncated"):
        await read_all(MultipartReader(chunked(b"", 5), CTYPE))
    no_disposition = f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode()
    with pytest.raises(MultipartError, match="Content-Disposition"):
        await read_all(MultipartReader(chunked(no_disposition, 100), CTYPE))
    bad_utf8 = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f"; filename="'.encode() + b"\xff\xfe"
                + f'"\r\n\r\nx\r\n--{BOUNDARY}--\r\n'.encode())
    with pytest.raises(MultipartError, match="UTF-8"):
        await read_all(MultipartReader(chunked(bad_utf8, 100), CTYPE))
    for ctype in (None, "application/json", "multipart/form-data", "multipart/mixed; boundary=x"):
        with pytest.raises(NotMultipart):
            MultipartReader(chunked(body, 5), ctype)
