"""The job-API test double, one per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.testdoubles.training_api import TrainingApiDouble, start_training_api


@pytest.fixture
async def api() -> AsyncIterator[TrainingApiDouble]:
    async with await start_training_api() as double:
        yield double
