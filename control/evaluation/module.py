"""The evaluation control module: runs through the gateway, metrics with CIs, judging, review, gates.

Start-up decodes ``control.module_settings.evaluation`` (a bad value fails it, naming the path), provides the
run service (``EVALUATION``; ``EVALUATIONS`` for training) and the promotion gate (``PROMOTION_GATE``), then,
unless ``worker: false``, runs the worker (``worker``) until shutdown, when its runs are handed back and the
service key is revoked.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager

from litestar.types import ControllerRouterHandler

from adapters.adminapi import Migration, ModuleContext
from adapters.adminapi.seams import EVALUATIONS, PROMOTION_GATE
from control.evaluation import compare_routes, gate_routes, judge_routes, review_routes
from control.evaluation import routes as runs_routes
from control.evaluation.credential import ServiceCredential
from control.evaluation.gate import GateService
from control.evaluation.runs import RunService
from control.evaluation.services import EVALUATION
from control.evaluation.settings import load_settings
from control.evaluation.tables import EVALUATION_MIGRATIONS
from control.evaluation.worker import Worker

__all__ = ["EvaluationModule"]


class EvaluationModule:
    name = "evaluation"

    def __init__(self) -> None:
        self.worker: Worker | None = None  # while running (tests look at it)

    def routes(self) -> Sequence[ControllerRouterHandler]:
        return [*runs_routes.CONTROLLERS, *compare_routes.CONTROLLERS, *judge_routes.CONTROLLERS,
                *review_routes.CONTROLLERS, *gate_routes.CONTROLLERS]

    def migrations(self) -> Sequence[Migration]:
        return EVALUATION_MIGRATIONS

    def lifespan(self, ctx: ModuleContext) -> AbstractAsyncContextManager[None]:
        return self._run(ctx)

    @contextlib.asynccontextmanager
    async def _run(self, ctx: ModuleContext) -> AsyncIterator[None]:
        settings = load_settings(ctx.settings)
        service = RunService(ctx, settings)
        ctx.provide(EVALUATION, service)
        ctx.provide(EVALUATIONS, service)
        ctx.provide(PROMOTION_GATE, GateService(ctx))
        if not settings.worker:
            yield
            return
        credential = ServiceCredential(ctx, settings.key_ttl_s)
        try:
            worker = Worker(ctx, service, settings, credential)
            service.wake = worker.wake
            self.worker = worker
            async with worker.running():
                yield
        finally:
            self.worker = None
            await credential.aclose()
