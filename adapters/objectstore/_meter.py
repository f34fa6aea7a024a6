"""Size and sha256 of a stream, computed as it passes, with the size limit enforced."""

from __future__ import annotations

import hashlib

from adapters.objectstore.errors import ObjectTooLarge


class Meter:
    def __init__(self, key: str, max_bytes: int | None) -> None:
        if max_bytes is not None and max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.key = key
        self.max_bytes = max_bytes
        self.size_bytes = 0
        self._sha = hashlib.sha256()

    def count(self, chunk: bytes) -> None:
        """Count a chunk before it is written, so an oversized one is never stored."""
        self.size_bytes += len(chunk)
        if self.max_bytes is not None and self.size_bytes > self.max_bytes:
            raise ObjectTooLarge(self.key, self.max_bytes)

    def hash(self, data: bytes) -> None:
        # hashlib drops the GIL for large buffers, so this is fine inside to_thread.
        self._sha.update(data)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()
