"""The ``ObjectStore`` seam: where uploaded model files and datasets live.

Contract shared by every backend:

* Keys are validated with ``validate_key`` first; a bad one raises ``InvalidKey``
  before any I/O.
* ``put_stream`` consumes the chunks once, never holding more than one part in
  memory, and hashes as it goes. The object becomes visible only when the whole
  stream was stored (temp file + rename locally, a single PUT or a completed
  multipart upload on S3). If the stream fails, is cancelled, or passes
  ``max_bytes`` (``ObjectTooLarge``), the partial data is removed and an existing
  object under the same key is left untouched. A successful put replaces it.
* ``open`` is an async generator: ``ObjectNotFound`` surfaces on the first
  iteration. The consumer should ``aclose()`` it (``contextlib.aclosing``) if it
  stops early; the backend then releases the file or connection.
* ``local_path`` yields a real file for libraries such as pyarrow that want a
  path. Treat it as read-only; it is only valid inside the ``async with``.
* ``delete`` is idempotent. ``list`` returns sorted keys that start with the
  prefix (plain string prefix, as in S3).
* Backend I/O failures surface as ``ObjectStoreUnavailable``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol, runtime_checkable

import msgspec

__all__ = ["DEFAULT_CHUNK_BYTES", "ObjectStore", "StoredObject"]

DEFAULT_CHUNK_BYTES = 1024 * 1024


class StoredObject(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """What the catalog records about a stored file."""

    key: str
    size_bytes: int
    sha256: str
    storage_uri: str


@runtime_checkable
class ObjectStore(Protocol):
    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], *, max_bytes: int | None = None
    ) -> StoredObject: ...

    def open(self, key: str, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> AsyncIterator[bytes]: ...

    def local_path(self, key: str) -> AbstractAsyncContextManager[Path]: ...

    async def delete(self, key: str) -> None: ...

    async def exists(self, key: str) -> bool: ...

    async def list(self, prefix: str = "") -> list[str]: ...

    def uri(self, key: str) -> str:
        """The ``storage_uri`` an object under ``key`` has (or would have)."""
        ...

    async def aclose(self) -> None: ...
