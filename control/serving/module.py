"""The serving control module: catalog models as endpoints, with revisions, canaries, rollback and routes.

Start-up reads every ``SERVING_*`` variable (``adapters.serving.settings``; a bad value fails start-up naming
it), provides ``SERVING`` (its handlers') and ``ENDPOINTS`` (the endpoint directory other modules read),
builds the runtime ``SERVING_RUNTIME`` names (``runtimes.make_runtime``; tests hand in their own
factory), publishes the ``endpoints`` snapshot when its content differs from the published one, and runs the
reconciler until shutdown, when the runtime is closed (the local runtime stops its servers; Kubernetes
keeps running what it runs).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager

from litestar.types import ControllerRouterHandler

from adapters.adminapi import Migration, ModuleContext
from adapters.serving.settings import ServingSettings, load_serving_settings
from control.serving.directory import EndpointDirectory
from control.serving.publishing import lock, publish_if_changed
from control.serving.reconciler import Reconciler
from control.serving.routes import EndpointsController
from control.serving.runtimes import Ownership, RuntimeFactory, make_runtime
from control.serving.service import EndpointService
from control.serving.services import ENDPOINTS, SERVING
from control.serving.tables import SERVING_MIGRATIONS

__all__ = ["ServingModule"]


class ServingModule:
    name = "serving"

    def __init__(self, *, settings: ServingSettings | None = None, environ: Mapping[str, str] | None = None,
                 runtime_factory: RuntimeFactory = make_runtime, background: bool = True) -> None:
        """``settings``: use these instead of the environment (``environ``, default ``os.environ``);
        ``background=False``: no reconciler task (tests drive ``reconciler.pass_once()`` themselves)."""
        self._settings = settings
        self._environ = environ
        self._factory = runtime_factory
        self._background = background
        self.reconciler: Reconciler | None = None  # while running (tests drive passes through it)

    def routes(self) -> Sequence[ControllerRouterHandler]:
        return [EndpointsController]

    def migrations(self) -> Sequence[Migration]:
        return SERVING_MIGRATIONS

    def lifespan(self, ctx: ModuleContext) -> AbstractAsyncContextManager[None]:
        return self._run(ctx)

    @contextlib.asynccontextmanager
    async def _run(self, ctx: ModuleContext) -> AsyncIterator[None]:
        settings = self._settings or load_serving_settings(self._environ)  # SettingsError names the variable
        if self._factory is make_runtime and settings.runtime == "kubernetes":
            # off the event loop (the gateway shares it): the client's import and kubeconfig load take seconds
            runtime = await asyncio.to_thread(make_runtime, settings, ctx)
        else:
            runtime = self._factory(settings, ctx)
        owner = Ownership(runtime.name, ctx.data_dir / "serving" / "runtime.lock")
        try:
            service = EndpointService(ctx, settings, runtime, owner)
            async with ctx.store.begin() as conn:  # the first snapshot, or one the code now builds differently
                await lock(conn)
                await publish_if_changed(ctx, conn)
            reconciler = Reconciler(service)
            service.wake = reconciler.wake
            ctx.provide(SERVING, service)
            ctx.provide(ENDPOINTS, EndpointDirectory())
            self.reconciler = reconciler
            if self._background:
                async with reconciler.running():
                    yield
            else:
                yield
        finally:
            self.reconciler = None
            await runtime.aclose()
            owner.release()
