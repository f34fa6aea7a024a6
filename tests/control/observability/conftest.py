from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.adminapi import ControlCfg
from adapters.adminapi.testing import AdminTestApp, admin_test_app
from control.observability import module


@pytest.fixture
async def obs(database_url: str, tmp_path: Path) -> AsyncIterator[AdminTestApp]:
    """The observability module alone, on a fresh database (SQLite, then PostgreSQL); vLLM has 2 GPUs. No
    background refresh: a test that wants the daily summary builds it (``refresh_days``)."""
    cfg = ControlCfg(database_url=database_url, data_dir=str(tmp_path), change_feed="local",
                     module_settings={"observability": {"gpus": {"vllm": 2}, "refresh_interval_s": 0}})
    async with admin_test_app(cfg, modules=[module]) as app:
        yield app
