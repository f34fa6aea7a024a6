"""Contract tests: every backend behaves the same (local directory and S3 via moto)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from contextlib import aclosing

import msgspec
import pytest

from adapters.objectstore import (
    InvalidKey,
    ObjectNotFound,
    ObjectStore,
    ObjectTooLarge,
    StoredObject,
)
from tests.adapters.objectstore._streams import chunks_of, failing_after, read_all


class ClientGone(ConnectionError):
    pass


def test_backends_satisfy_the_protocol(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)


async def test_put_then_read_back_with_size_and_sha256(store: ObjectStore) -> None:
    parts = [os.urandom(1000) for _ in range(50)]
    data = b"".join(parts)
    stored = await store.put_stream("datasets/1/v1/train.csv", chunks_of(parts))
    assert stored.key == "datasets/1/v1/train.csv"
    assert stored.size_bytes == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.storage_uri == store.uri("datasets/1/v1/train.csv")
    assert await read_all(store.open(stored.key, chunk_bytes=4096)) == data
    assert await store.exists(stored.key)


async def test_stored_object_encodes_camel_case() -> None:
    obj = StoredObject(key="k", size_bytes=1, sha256="ab", storage_uri="file:///k")
    assert msgspec.json.decode(msgspec.json.encode(obj)) == {
        "key": "k", "sizeBytes": 1, "sha256": "ab", "storageUri": "file:///k"
    }


async def test_empty_object_is_allowed(store: ObjectStore) -> None:
    stored = await store.put_stream("empty.bin", chunks_of([]))
    assert stored.size_bytes == 0
    assert stored.sha256 == hashlib.sha256(b"").hexdigest()
    assert await read_all(store.open("empty.bin")) == b""


async def test_over_max_bytes_aborts_and_keeps_nothing(store: ObjectStore) -> None:
    with pytest.raises(ObjectTooLarge) as info:
        await store.put_stream("big.bin", chunks_of([b"x" * 600, b"y" * 600]), max_bytes=1000)
    assert info.value.max_bytes == 1000
    assert info.value.status == 413
    assert not await store.exists("big.bin")
    assert await store.list() == []


async def test_exactly_max_bytes_is_accepted(store: ObjectStore) -> None:
    stored = await store.put_stream("edge.bin", chunks_of([b"x" * 500, b"y" * 500]), max_bytes=1000)
    assert stored.size_bytes == 1000


async def test_failed_upload_does_not_clobber_existing_object(store: ObjectStore) -> None:
    await store.put_stream("model/weights.bin", chunks_of([b"original"]))
    with pytest.raises(ClientGone):
        await store.put_stream("model/weights.bin", failing_after([b"new" * 100], ClientGone()))
    with pytest.raises(ObjectTooLarge):
        await store.put_stream("model/weights.bin", chunks_of([b"z" * 100]), max_bytes=10)
    assert await read_all(store.open("model/weights.bin")) == b"original"
    assert await store.list("model/") == ["model/weights.bin"]


async def test_successful_put_replaces_object(store: ObjectStore) -> None:
    await store.put_stream("a.txt", chunks_of([b"one"]))
    await store.put_stream("a.txt", chunks_of([b"two"]))
    assert await read_all(store.open("a.txt")) == b"two"


async def test_cancelled_upload_leaves_nothing(store: ObjectStore) -> None:
    started = asyncio.Event()

    async def slow() -> object:
        yield b"first"
        started.set()
        await asyncio.sleep(30)
        yield b"never"

    task = asyncio.create_task(store.put_stream("slow.bin", slow()))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await store.list() == []


async def test_missing_object_raises_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        await read_all(store.open("nope.csv"))
    with pytest.raises(ObjectNotFound):
        async with store.local_path("nope.csv"):
            pass
    assert not await store.exists("nope.csv")


async def test_delete_is_idempotent(store: ObjectStore) -> None:
    await store.put_stream("d/x", chunks_of([b"1"]))
    await store.delete("d/x")
    await store.delete("d/x")
    assert not await store.exists("d/x")


async def test_list_by_string_prefix(store: ObjectStore) -> None:
    for key in ["datasets/1/v1/a.csv", "datasets/1/v2/a.csv", "datasets/10/v1/a.csv", "models/1/w.bin"]:
        await store.put_stream(key, chunks_of([b"."]))
    assert await store.list("datasets/1/") == ["datasets/1/v1/a.csv", "datasets/1/v2/a.csv"]
    assert await store.list("datasets/1") == [
        "datasets/1/v1/a.csv", "datasets/1/v2/a.csv", "datasets/10/v1/a.csv"
    ]
    assert len(await store.list()) == 4
    assert await store.list("nothing/") == []


async def test_local_path_gives_a_readable_file(store: ObjectStore) -> None:
    await store.put_stream("data/t.parquet", chunks_of([b"PAR1", b"body"]))
    async with store.local_path("data/t.parquet") as path:
        assert path.read_bytes() == b"PAR1body"


async def test_open_can_stop_early(store: ObjectStore) -> None:
    await store.put_stream("big", chunks_of([b"a" * 10_000]))
    async with aclosing(store.open("big", chunk_bytes=100)) as stream:
        async for chunk in stream:
            assert chunk == b"a" * 100
            break


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", "a\\b", ""])
async def test_every_operation_validates_keys(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        await store.put_stream(key, chunks_of([b"x"]))
    with pytest.raises(InvalidKey):
        await store.exists(key)
    with pytest.raises(InvalidKey):
        await store.delete(key)
    with pytest.raises(InvalidKey):
        await read_all(store.open(key))
