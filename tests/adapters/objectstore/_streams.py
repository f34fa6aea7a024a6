"""Async chunk sources for upload tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable


async def chunks_of(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def failing_after(parts: Iterable[bytes], exc: BaseException) -> AsyncIterator[bytes]:
    """Yield the parts, then fail the way a dropped client connection would."""
    for part in parts:
        yield part
    raise exc


async def read_all(it: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in it])
