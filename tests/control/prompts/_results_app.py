"""The prompts module on an admin test app, with the results endpoint and a started experiment helper."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from litestar.types import ControllerRouterHandler

from adapters.adminapi import ControlCfg, ModuleContext
from adapters.adminapi.testing import AdminTestApp, admin_test_app
from adapters.store import Store
from control.prompts import PROMPTS, PromptsModule, PromptsService, module
from control.prompts.analysis import analysis_running
from control.prompts.analysis_settings import AnalysisSettings
from control.prompts.results_routes import ResultsController
from tests.control.prompts._results_support import API, analysis_off
from tests.control.prompts.conftest import Probe


class _WithAnalysis(PromptsModule):
    """The module as it is once ``module.py`` mounts the results and the supervisor (before that lands)."""

    def routes(self) -> Sequence[ControllerRouterHandler]:
        return [*super().routes(), ResultsController]

    @contextlib.asynccontextmanager
    async def _run(self, ctx: ModuleContext) -> AsyncIterator[None]:
        async with super()._run(ctx):
            class _Off:
                analysis = AnalysisSettings(supervisor=False)

            async with analysis_running(ctx, ctx.services[PROMPTS], _Off()):
                yield


def _module() -> PromptsModule:
    return module if ResultsController in module.routes() else _WithAnalysis()


@contextlib.asynccontextmanager
async def results_app(database_url: str, data_dir: Path) -> AsyncIterator[tuple[AdminTestApp, PromptsService, Store]]:
    cfg = ControlCfg(database_url=database_url, data_dir=str(data_dir), change_feed="local",
                     module_settings={"prompts": analysis_off()})
    probe = Probe()
    async with admin_test_app(cfg, modules=[_module(), probe]) as app:
        assert app.plane.store is not None
        yield app, probe.ctx.services[PROMPTS], app.plane.store


async def start_experiment(app: AdminTestApp, document: dict[str, Any]) -> dict[str, Any]:
    created = await app.client.post(API, json={"document": document})
    assert created.status_code == 201, created.text
    started = await app.client.post(f"{API}/{document['id']}/start")
    assert started.status_code == 200, started.text
    return started.json()["data"]  # type: ignore[no-any-return]
