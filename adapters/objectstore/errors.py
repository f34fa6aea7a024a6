"""Errors raised by object stores.

Each carries an HTTP-ish ``status`` and a stable ``code`` so that the admin API
can shape it into its envelope without knowing which backend raised it.

    ObjectStoreError              500 object_store_error
    ├── InvalidKey                400 invalid_key          (bad key or hostile file name)
    ├── ObjectNotFound            404 object_not_found
    ├── ObjectTooLarge            413 object_too_large     (upload aborted, nothing kept)
    └── ObjectStoreUnavailable    503 object_store_unavailable (disk or S3 failure)
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "InvalidKey",
    "ObjectNotFound",
    "ObjectStoreError",
    "ObjectStoreUnavailable",
    "ObjectTooLarge",
]


class ObjectStoreError(Exception):
    """Base of every error an object store raises on purpose."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "object_store_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidKey(ObjectStoreError):
    status = 400
    code = "invalid_key"


class ObjectNotFound(ObjectStoreError):
    status = 404
    code = "object_not_found"

    def __init__(self, key: str) -> None:
        super().__init__(f"object {key!r} does not exist")
        self.key = key


class ObjectTooLarge(ObjectStoreError):
    status = 413
    code = "object_too_large"

    def __init__(self, key: str, max_bytes: int) -> None:
        super().__init__(f"object {key!r} exceeds the limit of {max_bytes} bytes")
        self.key = key
        self.max_bytes = max_bytes


class ObjectStoreUnavailable(ObjectStoreError):
    status = 503
    code = "object_store_unavailable"
