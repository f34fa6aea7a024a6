"""The prompts control module: versioned templates and A/B experiments, from the admin API or the YAML.

At start-up it syncs the gateway YAML's ``prompts:`` section (``control.module_settings.prompts``, filled by
the gateway), then publishes the ``templates`` and ``experiments`` snapshots if the store has none yet;
``reconfigure`` syncs the section again on every reload (the control plane calls it before the reloaded
config goes live; a refusal rejects the reload).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager

import msgspec
from litestar.types import ControllerRouterHandler

from adapters.adminapi import ControlCfg, FieldError, Migration, ModuleContext, SemanticError
from control.prompts.analysis import analysis_running
from control.prompts.results_routes import ResultsController
from control.prompts.routes import ExperimentsController, TemplatesController
from control.prompts.service import PromptsService
from control.prompts.services import PROMPTS
from control.prompts.settings import PromptsSettings
from control.prompts.tables import PROMPTS_MIGRATIONS

__all__ = ["PromptsModule"]


def _settings(cfg: ControlCfg) -> PromptsSettings:
    """``module_settings.prompts`` decoded; a bad value is a 422-style refusal naming its path."""
    try:
        return msgspec.convert(cfg.module_settings.get("prompts", {}), PromptsSettings)
    except msgspec.ValidationError as err:
        message, _, path = str(err).partition(" - at `$")
        field = "control.module_settings.prompts" + path.rstrip("`")
        unknown = re.search(r"unknown field `([^`]*)`", message)
        if unknown:  # msgspec names the enclosing object; point at the field itself
            field += f".{unknown.group(1)}"
        raise SemanticError([FieldError(field=field, message=message)], f"prompts: {field}: {message}") from None


class PromptsModule:
    name = "prompts"

    def routes(self) -> Sequence[ControllerRouterHandler]:
        return [TemplatesController, ExperimentsController, ResultsController]

    def migrations(self) -> Sequence[Migration]:
        return PROMPTS_MIGRATIONS

    def lifespan(self, ctx: ModuleContext) -> AbstractAsyncContextManager[None]:
        return self._run(ctx)

    async def reconfigure(self, ctx: ModuleContext, cfg: ControlCfg) -> None:
        """The gateway reloaded its YAML: sync its ``prompts:`` section (``SemanticError``: refused)."""
        await ctx.services[PROMPTS].reconfigure(_settings(cfg))

    @contextlib.asynccontextmanager
    async def _run(self, ctx: ModuleContext) -> AsyncIterator[None]:
        settings = _settings(ctx.settings)  # a typo in the config fails start-up here
        service = PromptsService(ctx)
        ctx.provide(PROMPTS, service)
        try:
            await service.reconfigure(settings)
            await service.publisher.publish_if_missing()
            async with analysis_running(ctx, service, settings):  # the results service and the supervisor
                yield
        finally:
            await service.aclose()
