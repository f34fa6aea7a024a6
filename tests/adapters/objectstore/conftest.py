"""Fixtures: every contract test runs against the local backend and against S3.

The S3 side talks to moto's S3 server on a loopback port. moto is a test double
for S3 (an in-process emulator), not S3 itself; it speaks the real wire protocol,
so the aiobotocore client, multipart uploads and error codes are all exercised.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from adapters.objectstore import LocalObjectStore, ObjectStore, S3ObjectStore

PART_BYTES = 5 * 1024 * 1024  # S3's minimum, so multipart tests stay small


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    server_mod = pytest.importorskip("moto.server", reason="moto[server] (dev extra) is not installed")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def aio_session() -> object:
    """One botocore session for all tests: it caches the parsed S3 service model, the slow part."""
    from aiobotocore.session import get_session

    return get_session()


@pytest.fixture
async def s3_client(moto_endpoint: str, aio_session: object) -> AsyncIterator[object]:
    from aiobotocore.config import AioConfig

    config = AioConfig(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10)
    async with aio_session.create_client(  # type: ignore[attr-defined]
        "s3", endpoint_url=moto_endpoint, region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test", config=config,
    ) as client:
        yield client


@pytest.fixture
async def s3_store(s3_client: object) -> S3ObjectStore:
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    await s3_client.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    return S3ObjectStore(s3_client, bucket, prefix="tenant-a", part_bytes=PART_BYTES)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects", fsync=False, buffer_bytes=64 * 1024)
    return request.getfixturevalue("s3_store")
