"""A catalog admin app per test, on SQLite and on PostgreSQL (``database_url`` is parametrized)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.adminapi import ControlCfg
from adapters.adminapi.testing import AdminTestApp, admin_test_app
from control.catalog import CatalogModule

MAX_UPLOAD_BYTES = 256 * 1024


@pytest.fixture
async def catalog(database_url: str, tmp_path: Path) -> AsyncIterator[AdminTestApp]:
    cfg = ControlCfg(database_url=database_url, data_dir=str(tmp_path / "data"), change_feed="local",
                     max_upload_bytes=MAX_UPLOAD_BYTES, module_settings={"catalog": {"preview_rows": 5}})
    async with admin_test_app(cfg, modules=[CatalogModule()]) as app:
        yield app
