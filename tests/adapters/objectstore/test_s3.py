"""What only the S3 backend has: multipart uploads, prefixes, error translation (moto test double)."""

from __future__ import annotations

import hashlib
import os
import socket

import pytest

from adapters.objectstore import ObjectStoreUnavailable, ObjectTooLarge, S3Config, S3ObjectStore
from tests.adapters.objectstore._streams import chunks_of, read_all

MiB = 1024 * 1024


async def test_large_stream_goes_up_as_multipart(s3_store: S3ObjectStore, s3_client: object) -> None:
    parts = [os.urandom(MiB) for _ in range(12)]  # 12 MiB: two 5 MiB parts plus a 2 MiB tail
    stored = await s3_store.put_stream("models/m/weights.bin", chunks_of(parts))
    data = b"".join(parts)
    assert stored.size_bytes == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.storage_uri == f"s3://{s3_store.bucket}/tenant-a/models/m/weights.bin"
    head = await s3_client.head_object(Bucket=s3_store.bucket, Key="tenant-a/models/m/weights.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-3")  # S3's multipart ETag names the part count
    assert await read_all(s3_store.open("models/m/weights.bin")) == data


async def test_too_large_multipart_is_aborted(s3_store: S3ObjectStore, s3_client: object) -> None:
    parts = [b"x" * MiB for _ in range(8)]
    with pytest.raises(ObjectTooLarge):
        await s3_store.put_stream("big.bin", chunks_of(parts), max_bytes=7 * MiB)
    uploads = await s3_client.list_multipart_uploads(Bucket=s3_store.bucket)
    assert uploads.get("Uploads", []) == []
    assert not await s3_store.exists("big.bin")


async def test_keys_live_under_the_store_prefix(s3_store: S3ObjectStore, s3_client: object) -> None:
    await s3_client.put_object(Bucket=s3_store.bucket, Key="other-tenant/secret.csv", Body=b"x")
    await s3_store.put_stream("mine.csv", chunks_of([b"y"]))
    assert await s3_store.list() == ["mine.csv"]
    async with s3_store.local_path("mine.csv") as path:
        assert path.suffix == ".csv"
        assert path.read_bytes() == b"y"
    assert not path.exists()


async def test_missing_bucket_is_unavailable_not_not_found(s3_client: object) -> None:
    store = S3ObjectStore(s3_client, "no-such-bucket", part_bytes=5 * MiB)
    with pytest.raises(ObjectStoreUnavailable, match="NoSuchBucket"):
        await store.put_stream("x", chunks_of([b"1"]))


async def test_unreachable_endpoint_is_unavailable() -> None:
    pytest.importorskip("aiobotocore")
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = S3Config(
        bucket="b", endpoint_url=f"http://127.0.0.1:{port}", access_key_id="k", secret_access_key="s",
        connect_timeout_s=1, max_attempts=1,
    )
    store = await S3ObjectStore.connect(cfg)
    try:
        with pytest.raises(ObjectStoreUnavailable, match="unreachable"):
            await store.exists("x")
    finally:
        await store.aclose()


def test_part_size_below_s3_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        S3ObjectStore(object(), "b", part_bytes=MiB)


async def test_connect_from_config_and_round_trip(moto_endpoint: str, s3_client: object) -> None:
    await s3_client.create_bucket(Bucket="from-config")  # type: ignore[attr-defined]
    cfg = S3Config(bucket="from-config", prefix="p/", endpoint_url=moto_endpoint, access_key_id="test",
                   secret_access_key="test", max_attempts=1)
    store = await S3ObjectStore.connect(cfg)
    try:
        stored = await store.put_stream("a/b.txt", chunks_of([b"hello"]))
        assert stored.storage_uri == "s3://from-config/p/a/b.txt"
        assert await store.list("a/") == ["a/b.txt"]
    finally:
        await store.aclose()
        await store.aclose()  # idempotent
