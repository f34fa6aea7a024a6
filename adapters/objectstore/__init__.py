"""Object stores for uploaded model files and datasets: local directory (default) or S3-compatible.

``S3ObjectStore`` needs the ``s3`` extra (aiobotocore); importing this package does not.
"""

from adapters.objectstore.base import DEFAULT_CHUNK_BYTES, ObjectStore, StoredObject
from adapters.objectstore.errors import (
    InvalidKey,
    ObjectNotFound,
    ObjectStoreError,
    ObjectStoreUnavailable,
    ObjectTooLarge,
)
from adapters.objectstore.keys import safe_filename, validate_key, validate_prefix
from adapters.objectstore.local import LocalObjectStore
from adapters.objectstore.s3 import S3Config, S3ObjectStore

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "InvalidKey",
    "LocalObjectStore",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectStoreError",
    "ObjectStoreUnavailable",
    "ObjectTooLarge",
    "S3Config",
    "S3ObjectStore",
    "StoredObject",
    "safe_filename",
    "validate_key",
    "validate_prefix",
]
