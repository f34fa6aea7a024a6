"""``PromptsService``: what the prompts module's handlers, its YAML sync and other parts (the results
endpoint, the supervisor) use, provided in the control plane's registry under ``PROMPTS``.

``templates`` and ``experiments`` hold the CRUD; ``update_runtime``, ``running`` and ``get`` are the
supervisor's seam; ``reconfigure`` takes the gateway YAML's ``prompts:`` section (start-up and every
reload) and, when the database refuses it (down, slow), retries in the background until it is applied
or a newer section replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from adapters.adminapi import Actor, AdminError, ModuleContext
from adapters.store import StoreUnavailable
from control.prompts.experiments import ExperimentService, RuntimeChange
from control.prompts.protocol import Experiment
from control.prompts.publishing import Publisher
from control.prompts.settings import PromptsSettings
from control.prompts.sync import ConfigSync, SyncReport
from control.prompts.templates import TemplateService
from policies.prompts.documents import ExperimentDoc, ExperimentRuntime, PromptsCfg

__all__ = ["PromptsService"]

log = logging.getLogger("llmops.prompts")


class PromptsService:
    def __init__(self, ctx: ModuleContext) -> None:
        self.publisher = Publisher(ctx)
        self.templates = TemplateService(ctx, self.publisher)
        self.experiments = ExperimentService(ctx, self.publisher)
        self._sync = ConfigSync(ctx.store, ctx.audit, self.publisher)
        self._retry: asyncio.Task[None] | None = None
        self._synced: tuple[PromptsCfg, tuple[str, ...]] | None = None  # what this plane's last sync applied

    # -- the supervisor's seam ---------------------------------------------------------------------

    async def update_runtime(self, experiment_id: str, change: RuntimeChange, *, actor: str | Actor, kind: str,
                             message: str, detail: dict[str, Any]) -> ExperimentRuntime | None:
        """See ``ExperimentService.update_runtime``: one transaction, ``None`` when nothing changed."""
        return await self.experiments.update_runtime(experiment_id, change, actor=actor, kind=kind, message=message,
                                                     detail=detail)

    async def running(self) -> list[tuple[ExperimentDoc, ExperimentRuntime]]:
        """Every experiment whose runtime state is ``running``, with its declaration."""
        return await self.experiments.running()

    async def get(self, experiment_id: str) -> Experiment:
        """The experiment (``NotFound`` for an unknown or deleted id)."""
        return await self.experiments.get(experiment_id)

    # -- the gateway YAML --------------------------------------------------------------------------

    async def reconfigure(self, settings: PromptsSettings) -> SyncReport | None:
        """Apply the YAML's section now. ``SemanticError``: refused, nothing changed. A database error is
        logged and retried every ``sync_retry_s`` (``None`` returned): the gateway's reload must not
        depend on the database, and the section is applied once it is back. A reload that leaves the
        section and the routes' template pins as this plane last applied them does not touch the
        database at all (an empty report: nothing changed)."""
        self._cancel_retry()
        wanted = (settings.declared, tuple(settings.route_templates))
        if wanted == self._synced:
            return SyncReport()  # the section and the routes' pins this plane applied last: nothing to do
        before, self.publisher.route_templates = self.publisher.route_templates, wanted[1]
        try:
            report = await self._sync.sync(settings.declared)
        except AdminError:  # refused: the running config (and the routes it pins) stays
            self.publisher.route_templates = before
            raise
        except StoreUnavailable as err:
            log.warning("prompts config not synced (database: %s); retrying every %.0f s",
                        err, settings.sync_retry_s)
            self._retry = asyncio.create_task(self._keep_trying(settings), name="llmops-prompts-sync-retry")
            return None
        self._synced = wanted
        return report

    async def _keep_trying(self, settings: PromptsSettings) -> None:
        while True:
            await asyncio.sleep(settings.sync_retry_s)
            try:
                await self._sync.sync(settings.declared)
            except StoreUnavailable:
                continue
            except AdminError as err:  # the store changed meanwhile (e.g. a route now runs another experiment)
                log.error("prompts config refused on retry, not applied: %s", err.message)
                return
            self._synced = (settings.declared, tuple(settings.route_templates))
            log.info("prompts config synced after a database outage")
            return

    def _cancel_retry(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    async def aclose(self) -> None:
        task, self._retry = self._retry, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
