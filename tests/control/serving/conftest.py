"""The serving tests' default app: catalog + serving on each database, a FakeRuntime, passes driven by the test.

A test module that needs another runtime defines its own ``app`` fixture, which overrides this one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.control.serving.serving_support import ServingApp, serving_app


@pytest.fixture
async def app(database_url: str, tmp_path: Path) -> AsyncIterator[ServingApp]:
    async with serving_app(database_url, tmp_path / "data") as running:
        yield running
