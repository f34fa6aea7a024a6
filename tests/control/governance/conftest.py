from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.adminapi import ControlCfg
from adapters.adminapi.testing import AdminTestApp, admin_test_app
from control.governance import module


@pytest.fixture
async def gov(database_url: str, tmp_path: Path) -> AsyncIterator[AdminTestApp]:
    """The governance module alone, on a fresh database (SQLite, then PostgreSQL)."""
    cfg = ControlCfg(database_url=database_url, data_dir=str(tmp_path), change_feed="local")
    async with admin_test_app(cfg, modules=[module]) as app:
        yield app
