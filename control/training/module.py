"""``TrainingModule``: routes, migrations, the job service and, in its lifespan, the supervisor.

Start-up reads every ``TRAINING_*`` variable (``adapters.training.settings``; a bad value fails start-up naming
it), builds the runtime ``TRAINING_RUNTIME`` names (``runtimes.make_runtime``; tests hand in their own),
provides ``TRAINING`` (the job service) and runs the supervisor until shutdown, when its leases are given back
and the runtime is closed; the attempts keep running (Kubernetes keeps them, the local runtime's outlive this
process) and are adopted by the next supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager

from litestar.types import ControllerRouterHandler

from adapters.adminapi import Migration, ModuleContext
from adapters.training.base import TrainingRuntime
from adapters.training.settings import TrainingSettings, load_training_settings
from control.training import io_routes, routes
from control.training.runtimes import api_base_url, make_runtime
from control.training.service import JobService
from control.training.services import TRAINING
from control.training.supervisor import Supervisor
from control.training.tables import TRAINING_MIGRATIONS
from control.training.tracking import mlflow_routes
from control.training.tracking import routes as tracking_routes

__all__ = ["TrainingModule"]


class TrainingModule:
    name = "training"

    def __init__(self, *, settings: TrainingSettings | None = None, runtime: TrainingRuntime | None = None,
                 environ: Mapping[str, str] | None = None, api_base_url: str | None = None,
                 background: bool = True) -> None:
        """``settings``: use these instead of the environment (``environ``, default ``os.environ``);
        ``runtime``: drive this one (closed at shutdown) instead of building ``TRAINING_RUNTIME``'s;
        ``api_base_url``: the ``/llm-ops/v1`` URL trainers call (see ``runtimes.api_base_url``);
        ``background=False``: no supervisor task (tests drive ``supervisor.sync_once()`` themselves)."""
        self._settings = settings
        self._runtime = runtime
        self._environ = environ
        self._api_base_url = api_base_url
        self._background = background
        self.supervisor: Supervisor | None = None  # while running

    def routes(self) -> Sequence[ControllerRouterHandler]:
        return [*routes.CONTROLLERS, *io_routes.CONTROLLERS, *tracking_routes.CONTROLLERS,
                *mlflow_routes.CONTROLLERS]

    def migrations(self) -> Sequence[Migration]:
        return TRAINING_MIGRATIONS

    def lifespan(self, ctx: ModuleContext) -> AbstractAsyncContextManager[None]:
        return self._run(ctx)

    @contextlib.asynccontextmanager
    async def _run(self, ctx: ModuleContext) -> AsyncIterator[None]:
        settings = self._settings or load_training_settings(self._environ)  # SettingsError names the variable
        runtime = self._runtime
        if runtime is None and settings.runtime == "kubernetes":
            # off the event loop (the gateway shares it): the Kubernetes client's import and config take seconds
            runtime = await asyncio.to_thread(make_runtime, settings, ctx)
        elif runtime is None:
            runtime = make_runtime(settings, ctx)
        try:
            url = api_base_url(ctx, settings, runtime.name, self._api_base_url)
            service = JobService(ctx, settings, runtime)
            supervisor = Supervisor(ctx, settings, runtime, url)
            service.wake = supervisor.wake
            ctx.provide(TRAINING, service)
            self.supervisor = supervisor
            if self._background:
                async with supervisor.running():
                    yield
            else:
                try:
                    yield
                finally:
                    await supervisor.give_back()
        finally:
            self.supervisor = None
            await runtime.aclose()
