"""``S3ObjectStore``: objects in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, R2...).

Built on aiobotocore because it is natively async over aiohttp, which the
gateway already ships, so no thread pool sits between us and the network.
Install with the ``s3`` extra.

Atomicity comes from S3 itself: a ``PutObject`` or a completed multipart upload
appears all at once. Small streams (under ``part_bytes``) go up in one PUT; larger
ones as a multipart upload of ``part_bytes`` parts (S3 needs >= 5 MiB per part and
allows 10,000 parts, so the default 8 MiB caps one object near 80 GB). A failure,
a cancellation or ``ObjectTooLarge`` aborts the multipart upload, so no part lingers
and the previous object under the key, if any, stays as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import msgspec

from adapters.objectstore._meter import Meter
from adapters.objectstore.base import DEFAULT_CHUNK_BYTES, StoredObject
from adapters.objectstore.errors import ObjectNotFound, ObjectStoreUnavailable
from adapters.objectstore.keys import validate_key, validate_prefix

__all__ = ["S3Config", "S3ObjectStore"]

_MIN_PART_BYTES = 5 * 1024 * 1024
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


class S3Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the bucket is. Credentials left as None fall back to botocore's usual chain."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    part_bytes: int = 8 * 1024 * 1024
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    max_attempts: int = 3


class S3ObjectStore:
    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        prefix: str = "",
        part_bytes: int = 8 * 1024 * 1024,
        tmp_dir: str | None = None,
        exit_stack: AsyncExitStack | None = None,
    ) -> None:
        """``client`` is an aiobotocore S3 client; the store closes it only if it owns ``exit_stack``."""
        if part_bytes < _MIN_PART_BYTES:
            raise ValueError(f"part_bytes must be at least {_MIN_PART_BYTES} (S3's minimum part size)")
        if prefix:
            validate_prefix(prefix if prefix.endswith("/") else prefix + "/")
        self._client = client
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self._part_bytes = part_bytes
        self._tmp_dir = tmp_dir
        self._exit_stack = exit_stack

    @classmethod
    async def connect(cls, cfg: S3Config, *, tmp_dir: str | None = None) -> S3ObjectStore:
        """Create the client from config; ``aclose()`` releases it (call it from lifespan)."""
        from aiobotocore.config import AioConfig  # optional extra: import only when configured
        from aiobotocore.session import get_session

        stack = AsyncExitStack()
        client = await stack.enter_async_context(
            get_session().create_client(
                "s3",
                endpoint_url=cfg.endpoint_url,
                region_name=cfg.region,
                aws_access_key_id=cfg.access_key_id,
                aws_secret_access_key=cfg.secret_access_key,
                config=AioConfig(
                    connect_timeout=cfg.connect_timeout_s,
                    read_timeout=cfg.read_timeout_s,
                    retries={"max_attempts": cfg.max_attempts, "mode": "standard"},
                ),
            )
        )
        return cls(client, cfg.bucket, prefix=cfg.prefix, part_bytes=cfg.part_bytes, tmp_dir=tmp_dir,
                   exit_stack=stack)

    async def aclose(self) -> None:
        if self._exit_stack is not None:
            await self._exit_stack.aclose()
            self._exit_stack = None

    def _object_key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._object_key(key)}"

    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], *, max_bytes: int | None = None
    ) -> StoredObject:
        object_key = self._object_key(key)
        meter = Meter(key, max_bytes)
        pending = bytearray()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            with _translate(key):
                async for chunk in chunks:
                    meter.count(chunk)
                    pending += chunk
                    if len(pending) >= self._part_bytes:
                        if upload_id is None:
                            upload_id = await self._start_multipart(object_key)
                        block, pending = bytes(pending), bytearray()
                        await asyncio.to_thread(meter.hash, block)
                        parts.append(await self._upload_part(object_key, upload_id, len(parts) + 1, block))
                block = bytes(pending)
                await asyncio.to_thread(meter.hash, block)
                if upload_id is None:
                    await self._client.put_object(Bucket=self.bucket, Key=object_key, Body=block)
                else:
                    if block:
                        parts.append(await self._upload_part(object_key, upload_id, len(parts) + 1, block))
                    await self._client.complete_multipart_upload(
                        Bucket=self.bucket, Key=object_key, UploadId=upload_id,
                        MultipartUpload={"Parts": parts},
                    )
        except BaseException:
            if upload_id is not None:
                await self._abort(object_key, upload_id)
            raise
        return StoredObject(
            key=key, size_bytes=meter.size_bytes, sha256=meter.hexdigest(), storage_uri=self.uri(key)
        )

    async def _start_multipart(self, object_key: str) -> str:
        created = await self._client.create_multipart_upload(Bucket=self.bucket, Key=object_key)
        return str(created["UploadId"])

    async def _upload_part(
        self, object_key: str, upload_id: str, number: int, block: bytes
    ) -> dict[str, Any]:
        """Upload one part; returns the entry CompleteMultipartUpload wants."""
        sent = await self._client.upload_part(
            Bucket=self.bucket, Key=object_key, UploadId=upload_id, PartNumber=number, Body=block
        )
        return {"ETag": sent["ETag"], "PartNumber": number}

    async def _abort(self, object_key: str, upload_id: str) -> None:
        # Best effort: the original error is what the caller needs; a bucket lifecycle
        # rule for incomplete multipart uploads is the backstop if this fails too.
        with contextlib.suppress(Exception):
            await asyncio.shield(
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=object_key, UploadId=upload_id)
            )

    async def open(self, key: str, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> AsyncIterator[bytes]:
        object_key = self._object_key(key)
        with _translate(key):
            response = await self._client.get_object(Bucket=self.bucket, Key=object_key)
            async with response["Body"] as body:
                async for chunk in body.iter_chunks(chunk_bytes):
                    yield chunk

    @asynccontextmanager
    async def local_path(self, key: str) -> AsyncIterator[Path]:
        """Download to a private temp file, removed when the block exits."""
        suffix = PurePosixPath(key).suffix
        fd, tmp = await asyncio.to_thread(tempfile.mkstemp, suffix=suffix, prefix="s3-", dir=self._tmp_dir)
        handle = os.fdopen(fd, "wb")
        try:
            try:
                async for chunk in self.open(key):
                    await asyncio.to_thread(handle.write, chunk)
            finally:
                handle.close()
            yield Path(tmp)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    async def delete(self, key: str) -> None:
        object_key = self._object_key(key)
        with _translate(key):
            await self._client.delete_object(Bucket=self.bucket, Key=object_key)

    async def exists(self, key: str) -> bool:
        object_key = self._object_key(key)
        try:
            with _translate(key):
                await self._client.head_object(Bucket=self.bucket, Key=object_key)
        except ObjectNotFound:
            return False
        return True

    async def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        keys: list[str] = []
        with _translate(prefix):
            paginator = self._client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                keys.extend(item["Key"][len(self.prefix):] for item in page.get("Contents", ()))
        return sorted(keys)


@contextlib.contextmanager
def _translate(key: str) -> Iterator[None]:
    """The one place botocore's exceptions become ours."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in _NOT_FOUND_CODES:
            raise ObjectNotFound(key) from None
        message = f"S3 refused {key!r}: {code} {error.get('Message', '')}".strip()
        raise ObjectStoreUnavailable(message) from exc
    except BotoCoreError as exc:
        raise ObjectStoreUnavailable(f"S3 unreachable for {key!r}: {exc}") from exc
