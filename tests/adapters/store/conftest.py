from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.store import SqlStore, open_store


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    """A store on a fresh database (SQLite file, then PostgreSQL) with only the in-process feed."""
    s = open_store(database_url, feed_mode="local")
    yield s
    await s.aclose()
