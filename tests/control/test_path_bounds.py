"""Path integers are bounded once (``VersionNumber``): 2**63 is a 400 on SQLite too, not an overflow 500."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.adminapi import MAX_VERSION, ControlCfg
from adapters.adminapi.testing import AdminTestApp, admin_test_app
from control.catalog import CatalogModule
from control.governance import module as governance

API = "/llm-ops/v1"
HUGE = 2**63


@pytest.fixture
async def plane(database_url: str, tmp_path: Path) -> AsyncIterator[AdminTestApp]:
    cfg = ControlCfg(database_url=database_url, data_dir=str(tmp_path), change_feed="local")
    async with admin_test_app(cfg, modules=[CatalogModule(), governance]) as app:
        yield app


@pytest.mark.parametrize("path", [
    f"governance/policies/pol_x/versions/{HUGE}",
    f"catalog/models/mdl_x/versions/{HUGE}",
    f"catalog/models/mdl_x/versions/1/diff/{HUGE}",
    f"catalog/models/mdl_x/versions/{HUGE}/diff/1",
    f"catalog/datasets/ds_x/versions/{HUGE}/compare/1",
    f"catalog/datasets/ds_x/versions/1/compare/{MAX_VERSION + 1}",
])
async def test_out_of_range_path_integers_are_a_400(plane: AdminTestApp, path: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        resp = await plane.client.get(f"{API}/{path}")
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["status"] == "fail" and f"<= {MAX_VERSION}" in body["data"]["errors"][0]["message"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_in_range_version_of_a_missing_resource_is_a_404(plane: AdminTestApp) -> None:
    assert (await plane.client.get(f"{API}/governance/policies/pol_x/versions/{MAX_VERSION}")).status_code == 404
