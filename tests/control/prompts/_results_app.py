"""The prompts module (results endpoint and supervisor included) on an admin test app; starting experiments."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from adapters.adminapi import ControlCfg
from adapters.adminapi.testing import AdminTestApp, admin_test_app
from adapters.store import Store
from control.prompts import PROMPTS, PromptsService, module
from tests.control.prompts._results_support import API, analysis_off
from tests.control.prompts.conftest import Probe


@contextlib.asynccontextmanager
async def results_app(database_url: str, data_dir: Path) -> AsyncIterator[tuple[AdminTestApp, PromptsService, Store]]:
    cfg = ControlCfg(database_url=database_url, data_dir=str(data_dir), change_feed="local",
                     module_settings={"prompts": analysis_off()})
    probe = Probe()
    async with admin_test_app(cfg, modules=[module, probe]) as app:
        assert app.plane.store is not None
        yield app, probe.ctx.services[PROMPTS], app.plane.store


async def start_experiment(app: AdminTestApp, document: dict[str, Any]) -> dict[str, Any]:
    created = await app.client.post(API, json={"document": document})
    assert created.status_code == 201, created.text
    started = await app.client.post(f"{API}/{document['id']}/start")
    assert started.status_code == 200, started.text
    return started.json()["data"]  # type: ignore[no-any-return]
