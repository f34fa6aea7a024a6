"""``TrainingModule``: routes, migrations and the supervisor's lifespan (skeleton; the jobs work fills it in)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager

from litestar.types import ControllerRouterHandler

from adapters.adminapi import Migration, ModuleContext
from control.training import io_routes, routes
from control.training.tables import TRAINING_MIGRATIONS
from control.training.tracking import mlflow_routes
from control.training.tracking import routes as tracking_routes

__all__ = ["TrainingModule"]


class TrainingModule:
    name = "training"

    def routes(self) -> Sequence[ControllerRouterHandler]:
        return [*routes.CONTROLLERS, *io_routes.CONTROLLERS, *tracking_routes.CONTROLLERS,
                *mlflow_routes.CONTROLLERS]

    def migrations(self) -> Sequence[Migration]:
        return TRAINING_MIGRATIONS

    def lifespan(self, ctx: ModuleContext) -> AbstractAsyncContextManager[None]:
        return self._run(ctx)

    @contextlib.asynccontextmanager
    async def _run(self, ctx: ModuleContext) -> AsyncIterator[None]:
        yield
