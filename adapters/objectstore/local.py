"""``LocalObjectStore``: objects as files under one root directory (the default backend).

Uploads are written into ``<root>/.llmops-staging/`` and renamed into place with
``os.replace``, which is atomic on one file system: readers see the old object or
the new one, never half a file. Blocking file I/O runs in worker threads, in
blocks of ``buffer_bytes``, so the event loop only shuffles bytes.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import BinaryIO

from adapters.objectstore._meter import Meter
from adapters.objectstore.base import DEFAULT_CHUNK_BYTES, StoredObject
from adapters.objectstore.errors import InvalidKey, ObjectNotFound, ObjectStoreUnavailable
from adapters.objectstore.keys import validate_key, validate_prefix

__all__ = ["LocalObjectStore"]

STAGING_DIR = ".llmops-staging"
_STALE_STAGING_S = 24 * 3600


class LocalObjectStore:
    def __init__(
        self, root_dir: str | os.PathLike[str], *, fsync: bool = True, buffer_bytes: int = DEFAULT_CHUNK_BYTES
    ) -> None:
        self.root = Path(root_dir).resolve()
        self._staging = self.root / STAGING_DIR
        self._staging.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._buffer_bytes = buffer_bytes
        self._sweep_staging()

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

    def _sweep_staging(self) -> None:
        """Drop temp files a crashed process left behind; young ones may belong to a live upload."""
        cutoff = time.time() - _STALE_STAGING_S
        for entry in os.scandir(self._staging):
            with contextlib.suppress(OSError):
                if entry.is_file() and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)

    def _path(self, key: str) -> Path:
        validate_key(key)
        if key.split("/", 1)[0] == STAGING_DIR:
            raise InvalidKey(f"object key may not start with the reserved {STAGING_DIR!r}")
        path = self.root / key
        # A symlink planted inside the root must not lead reads or writes outside it.
        if not Path(os.path.realpath(path)).is_relative_to(self.root):
            raise InvalidKey(f"object key {key!r} resolves outside the store root")
        return path

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], *, max_bytes: int | None = None
    ) -> StoredObject:
        path = self._path(key)
        meter = Meter(key, max_bytes)
        try:
            fd, tmp = await asyncio.to_thread(
                tempfile.mkstemp, dir=self._staging, prefix="put-", suffix=".part"
            )
        except OSError as exc:
            raise ObjectStoreUnavailable(f"cannot create a staging file: {exc.strerror}") from exc
        handle = os.fdopen(fd, "wb")
        try:
            pending = bytearray()
            async for chunk in chunks:
                meter.count(chunk)
                pending += chunk
                if len(pending) >= self._buffer_bytes:
                    block, pending = bytes(pending), bytearray()
                    await asyncio.to_thread(_write_block, handle, meter, block)
            if pending:
                await asyncio.to_thread(_write_block, handle, meter, bytes(pending))
            await asyncio.to_thread(self._commit, handle, tmp, path, key)
        except BaseException:
            # Also on cancellation: closing and unlinking are quick and must not be skipped.
            handle.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return StoredObject(
            key=key, size_bytes=meter.size_bytes, sha256=meter.hexdigest(), storage_uri=path.as_uri()
        )

    def _commit(self, handle: BinaryIO, tmp: str, path: Path, key: str) -> None:
        try:
            handle.flush()
            if self._fsync:
                os.fsync(handle.fileno())
            handle.close()
            if path.is_dir():
                raise InvalidKey(f"object key {key!r} names a prefix that holds other objects")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise InvalidKey(f"a parent of object key {key!r} is itself an object") from None
            os.replace(tmp, path)
        except OSError as exc:
            raise ObjectStoreUnavailable(f"cannot store {key!r}: {exc.strerror}") from exc

    async def open(self, key: str, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            handle = await asyncio.to_thread(open, path, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        try:
            while chunk := await asyncio.to_thread(handle.read, chunk_bytes):
                yield chunk
        finally:
            handle.close()

    @asynccontextmanager
    async def local_path(self, key: str) -> AsyncIterator[Path]:
        """The object's own file: no copy is made, so never write to it."""
        path = self._path(key)
        if not await asyncio.to_thread(path.is_file):
            raise ObjectNotFound(key)
        yield path

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await asyncio.to_thread(_unlink_file, path)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).is_file)

    async def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        return await asyncio.to_thread(self._list, prefix)

    def _list(self, prefix: str) -> builtins.list[str]:
        # Walk only the deepest directory the prefix pins down, then filter by string prefix.
        start = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(start):
            if Path(dirpath) == self.root and STAGING_DIR in dirnames:
                dirnames.remove(STAGING_DIR)
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    async def aclose(self) -> None:
        return None


def _write_block(handle: BinaryIO, meter: Meter, block: bytes) -> None:
    meter.hash(block)
    try:
        handle.write(block)
    except OSError as exc:
        raise ObjectStoreUnavailable(f"cannot write {meter.key!r}: {exc.strerror}") from exc


def _unlink_file(path: Path) -> None:
    if path.is_file():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
