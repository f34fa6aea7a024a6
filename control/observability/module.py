"""The observability control module: the cost API over the gateway's hourly usage rollups.

It reads ``usage_rollups`` (``adapters.dataplane``), which the gateway's usage writer keeps in the same
transaction as the records they sum, and keeps a daily summary of it (``tables``, refreshed by
``daily.DailyRefresher`` in the background) so month-long reports read ~24x fewer rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager

from litestar.types import ControllerRouterHandler

from adapters.adminapi import Migration, ModuleContext
from control.observability.daily import DailyRefresher
from control.observability.routes import CostAggregateController, ObservabilityController
from control.observability.service import CostReports
from control.observability.services import REPORTS
from control.observability.settings import ObservabilitySettings
from control.observability.tables import OBSERVABILITY_MIGRATIONS

__all__ = ["ObservabilityModule"]


class ObservabilityModule:
    name = "observability"

    def routes(self) -> Sequence[ControllerRouterHandler]:
        return [ObservabilityController, CostAggregateController]

    def migrations(self) -> Sequence[Migration]:
        return OBSERVABILITY_MIGRATIONS

    def lifespan(self, ctx: ModuleContext) -> AbstractAsyncContextManager[None]:
        return self._run(ctx)

    @contextlib.asynccontextmanager
    async def _run(self, ctx: ModuleContext) -> AsyncIterator[None]:
        settings = ctx.module_settings(ObservabilitySettings)  # a typo in the config fails start-up here
        ctx.provide(REPORTS, CostReports(ctx.store, settings))
        refresher = DailyRefresher(ctx.store, interval_s=settings.refresh_interval_s, grace_s=settings.refresh_grace_s)
        async with refresher.running():
            yield
