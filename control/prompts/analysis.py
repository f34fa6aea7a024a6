"""The results service and the supervisor, started with the prompts module (its lifespan enters
``analysis_running``); settings from ``module_settings.prompts.analysis`` (``AnalysisSettings``), read at
start-up."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Protocol

from adapters.adminapi import ModuleContext
from control.prompts.analysis_settings import AnalysisSettings
from control.prompts.results import RESULTS, ExperimentReader, ResultsService
from control.prompts.supervisor import RuntimeRegistry, Supervisor

__all__ = ["ExperimentsSeam", "analysis_running"]


class ExperimentsSeam(ExperimentReader, RuntimeRegistry, Protocol):
    """``get``, ``running`` and ``update_runtime``: what ``control.prompts.service.PromptsService`` offers."""


@contextlib.asynccontextmanager
async def analysis_running(ctx: ModuleContext, experiments: ExperimentsSeam, settings: object) -> AsyncIterator[None]:
    """Provide ``RESULTS`` and run the supervisor (unless ``analysis.supervisor`` is false) while the block runs.
    ``settings``: the module's settings; its ``analysis`` field when it has one, else the defaults."""
    cfg = getattr(settings, "analysis", None)
    cfg = cfg if isinstance(cfg, AnalysisSettings) else AnalysisSettings()
    ctx.provide(RESULTS, ResultsService(ctx.store, experiments, cap=cfg.results_sample_cap, draws=cfg.draws,
                                        timeout_s=cfg.read_timeout_s))
    if not cfg.supervisor:
        yield
        return
    supervisor = Supervisor(ctx.store, experiments, interval_s=cfg.interval_s, sample_cap=cfg.supervisor_sample_cap,
                            draws=cfg.draws, min_weight_change=cfg.min_weight_change,
                            read_timeout_s=cfg.read_timeout_s)
    async with supervisor.running():
        yield
