"""What only the local backend has: a root directory, a staging area, symlinks, fsync."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from adapters.objectstore import InvalidKey, LocalObjectStore, ObjectTooLarge
from adapters.objectstore.local import STAGING_DIR
from tests.adapters.objectstore._streams import chunks_of, failing_after


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "root", buffer_bytes=1024)


async def test_files_land_under_root_with_file_uri(store: LocalObjectStore) -> None:
    stored = await store.put_stream("datasets/7/v1/x.csv", chunks_of([b"a,b\n", b"1,2\n"]))
    path = store.root / "datasets/7/v1/x.csv"
    assert path.read_bytes() == b"a,b\n1,2\n"
    assert stored.storage_uri == path.as_uri()
    assert stored.storage_uri.startswith("file:///")


async def test_staging_is_empty_after_success_and_failure(store: LocalObjectStore) -> None:
    await store.put_stream("ok", chunks_of([b"x" * 5000]))
    with pytest.raises(ObjectTooLarge):
        await store.put_stream("big", chunks_of([b"x" * 5000]), max_bytes=4096)
    with pytest.raises(RuntimeError):
        await store.put_stream("broken", failing_after([b"x" * 3000], RuntimeError("boom")))
    assert os.listdir(store.root / STAGING_DIR) == []
    assert await store.list() == ["ok"]


async def test_oversized_stream_stops_being_consumed(store: LocalObjectStore) -> None:
    consumed = 0

    async def endless() -> object:
        nonlocal consumed
        while True:
            consumed += 1
            yield b"x" * 1000

    with pytest.raises(ObjectTooLarge):
        await store.put_stream("inf", endless(), max_bytes=10_000)
    assert consumed == 11


async def test_staging_dir_is_reserved_and_hidden(store: LocalObjectStore) -> None:
    with pytest.raises(InvalidKey, match="reserved"):
        await store.put_stream(f"{STAGING_DIR}/x", chunks_of([b"x"]))
    (store.root / STAGING_DIR / "leftover.part").write_bytes(b"x")
    assert await store.list() == []


async def test_symlink_out_of_root_is_refused(store: LocalObjectStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "link").symlink_to(outside)
    with pytest.raises(InvalidKey, match="outside the store root"):
        await store.put_stream("link/evil.txt", chunks_of([b"x"]))
    assert list(outside.iterdir()) == []


async def test_key_that_is_a_prefix_or_under_an_object(store: LocalObjectStore) -> None:
    await store.put_stream("a/b", chunks_of([b"x"]))
    with pytest.raises(InvalidKey, match="prefix"):
        await store.put_stream("a", chunks_of([b"y"]))
    with pytest.raises(InvalidKey, match="parent"):
        await store.put_stream("a/b/c", chunks_of([b"y"]))
    assert await store.list() == ["a/b"]


def test_stale_staging_files_are_swept_on_start(tmp_path: Path) -> None:
    staging = tmp_path / STAGING_DIR
    staging.mkdir()
    (staging / "old.part").write_bytes(b"x")
    (staging / "young.part").write_bytes(b"x")
    two_days_ago = time.time() - 2 * 86400
    os.utime(staging / "old.part", (two_days_ago, two_days_ago))
    LocalObjectStore(tmp_path)
    assert sorted(os.listdir(staging)) == ["young.part"]
