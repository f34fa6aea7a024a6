"""The evaluation control module: runs through the gateway, metrics with CIs, judging, review, gates.

Start-up decodes ``control.module_settings.evaluation`` (a bad value fails it, naming the path), provides the
run service (``EVALUATION``; ``EVALUATIONS`` for training) and the promotion gate (``PROMOTION_GATE``), then,
unless ``worker: false``, runs the worker (``worker``) until shutdown, when its runs are handed back and the
service key is revoked.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager

from litestar.types import ControllerRouterHandler

from adapters.adminapi import Migration, ModuleContext
from adapters.adminapi.seams import EVALUATIONS, PROMOTION_GATE
from control.evaluation.credential import ServiceCredential
from control.evaluation.routes import CONTROLLERS
from control.evaluation.runs import RunService
from control.evaluation.services import EVALUATION
from control.evaluation.settings import load_settings
from control.evaluation.tables import EVALUATION_MIGRATIONS
from control.evaluation.worker import Worker

__all__ = ["EvaluationModule"]

_PARTS = ("compare_routes", "judge_routes", "review_routes", "gate_routes")  # each lists its CONTROLLERS


def _controllers() -> list[ControllerRouterHandler]:
    found: list[ControllerRouterHandler] = list(CONTROLLERS)
    for part in _PARTS:
        try:
            found += importlib.import_module(f"control.evaluation.{part}").CONTROLLERS
        except ModuleNotFoundError as err:
            if err.name != f"control.evaluation.{part}":
                raise
    return found


class EvaluationModule:
    name = "evaluation"

    def __init__(self) -> None:
        self.worker: Worker | None = None  # while running (tests look at it)

    def routes(self) -> Sequence[ControllerRouterHandler]:
        return _controllers()

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
        try:
            gate = importlib.import_module("control.evaluation.gate")
            ctx.provide(PROMOTION_GATE, gate.GateService(ctx))
        except ModuleNotFoundError as err:
            if err.name != "control.evaluation.gate":
                raise
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
