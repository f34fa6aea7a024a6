"""HTTP surface of the prompts module: thin handlers over ``PromptsService``.

Reads need role viewer; creating, changing, deleting and the lifecycle actions need operator.
"""

from __future__ import annotations

from litestar import Controller, delete, get, post, put
from litestar.di import Provide
from litestar.params import Parameter

from adapters.adminapi import Actor, Envelope, ModuleContext, Page, PageParams, VersionNumber, ok
from control.prompts.lifecycle import Action
from control.prompts.protocol import (
    Experiment,
    ExperimentCreate,
    ExperimentEvent,
    ExperimentUpdate,
    Source,
    Template,
    TemplateCreate,
    TemplateUpdate,
    TemplateVersion,
)
from control.prompts.service import PromptsService
from control.prompts.services import PROMPTS
from policies.prompts.documents import ExperimentState

__all__ = ["ExperimentsController", "TemplatesController"]

_REASON = Parameter(query="reason", default=None, min_length=1, max_length=500,
                    description="why, for the experiment's events and the audit log")
_SOURCE = Parameter(query="source", default=None, description="api: made through this API; config: the gateway YAML")


def _service(ctx: ModuleContext) -> PromptsService:
    return ctx.services[PROMPTS]


class TemplatesController(Controller):
    path = "/prompts/templates"
    tags = ["prompts"]
    dependencies = {"prompts": Provide(_service, sync_to_thread=False)}

    @get("/", summary="List templates (latest versions)")
    async def list_templates(
        self, prompts: PromptsService, page: PageParams,
        name: str | None = Parameter(query="name", default=None, max_length=64,
                                     description="case-insensitive substring of the name"),
        source: Source | None = _SOURCE,
    ) -> Envelope[Page[Template]]:
        return ok(await prompts.templates.list(page, name=name, source=source))

    @post("/", status_code=201, summary="Create a template (version 1; a deleted name continues its history)")
    async def create_template(self, data: TemplateCreate, prompts: PromptsService, caller: Actor) -> Envelope[Template]:
        return ok(await prompts.templates.create(caller, data), "Template created")

    @get("/{name:str}", summary="Get a template's latest version")
    async def get_template(self, name: str, prompts: PromptsService) -> Envelope[Template]:
        return ok(await prompts.templates.get(name))

    @put("/{name:str}", summary="Replace a template, creating its next version")
    async def update_template(self, name: str, data: TemplateUpdate, prompts: PromptsService,
                              caller: Actor) -> Envelope[Template]:
        template, changed = await prompts.templates.update(caller, name, data)
        return ok(template, f"Template updated to version {template.version}" if changed else "No changes")

    @delete("/{name:str}", status_code=200, summary="Delete a template (its versions stay readable)")
    async def delete_template(self, name: str, prompts: PromptsService, caller: Actor) -> Envelope[Template]:
        return ok(await prompts.templates.delete(caller, name), "Template deleted")

    @get("/{name:str}/versions", summary="List a template's versions, newest first")
    async def list_versions(self, name: str, prompts: PromptsService,
                            page: PageParams) -> Envelope[Page[TemplateVersion]]:
        return ok(await prompts.templates.versions(name, page))

    @get("/{name:str}/versions/{version:int}", summary="Get one version of a template")
    async def get_version(self, name: str, version: VersionNumber,
                          prompts: PromptsService) -> Envelope[TemplateVersion]:
        return ok(await prompts.templates.version(name, version))


class ExperimentsController(Controller):
    path = "/prompts/experiments"
    tags = ["prompts"]
    dependencies = {"prompts": Provide(_service, sync_to_thread=False)}

    @get("/", summary="List experiments")
    async def list_experiments(
        self, prompts: PromptsService, page: PageParams,
        state_filter: ExperimentState | None = Parameter(query="state", default=None),
        route: str | None = Parameter(query="route", default=None, max_length=200,
                                      description="experiments on this route (exact name)"),
        source: Source | None = _SOURCE,
    ) -> Envelope[Page[Experiment]]:
        return ok(await prompts.experiments.list(page, state=state_filter, route=route, source=source))

    @post("/", status_code=201, summary="Create an experiment (state draft)")
    async def create_experiment(self, data: ExperimentCreate, prompts: PromptsService,
                                caller: Actor) -> Envelope[Experiment]:
        return ok(await prompts.experiments.create(caller, data), "Experiment created")

    @get("/{experimentId:str}", summary="Get an experiment: declaration, runtime state, revision, source")
    async def get_experiment(self, experimentId: str, prompts: PromptsService) -> Envelope[Experiment]:
        return ok(await prompts.experiments.get(experimentId))

    @put("/{experimentId:str}", summary="Replace an experiment's declaration (next revision; runtime kept)")
    async def update_experiment(self, experimentId: str, data: ExperimentUpdate, prompts: PromptsService,
                                caller: Actor) -> Envelope[Experiment]:
        experiment, changed = await prompts.experiments.update(caller, experimentId, data)
        return ok(experiment, f"Experiment updated to revision {experiment.revision}" if changed else "No changes")

    @delete("/{experimentId:str}", status_code=200, summary="Delete an experiment that is not running")
    async def delete_experiment(self, experimentId: str, prompts: PromptsService,
                                caller: Actor) -> Envelope[Experiment]:
        return ok(await prompts.experiments.delete(caller, experimentId), "Experiment deleted")

    @get("/{experimentId:str}/events", summary="An experiment's history, newest first")
    async def list_events(self, experimentId: str, prompts: PromptsService,
                          page: PageParams) -> Envelope[Page[ExperimentEvent]]:
        return ok(await prompts.experiments.events(experimentId, page))

    @post("/{experimentId:str}/start", status_code=200,
          summary="Start (or restart) an experiment: clears a rollback and a declared winner")
    async def start_experiment(self, experimentId: str, prompts: PromptsService, caller: Actor,
                    reason: str | None = _REASON) -> Envelope[Experiment]:
        return await _act(prompts, caller, experimentId, "start", reason)

    @post("/{experimentId:str}/pause", status_code=200, summary="Pause a running experiment")
    async def pause_experiment(self, experimentId: str, prompts: PromptsService, caller: Actor,
                    reason: str | None = _REASON) -> Envelope[Experiment]:
        return await _act(prompts, caller, experimentId, "pause", reason)

    @post("/{experimentId:str}/stop", status_code=200, summary="Stop a running or paused experiment")
    async def stop_experiment(self, experimentId: str, prompts: PromptsService, caller: Actor,
                   reason: str | None = _REASON) -> Envelope[Experiment]:
        return await _act(prompts, caller, experimentId, "stop", reason)

    @post("/{experimentId:str}/rollback", status_code=200,
          summary="Send all of the experiment's traffic to its control variant, on every replica within seconds")
    async def rollback_experiment(self, experimentId: str, prompts: PromptsService, caller: Actor,
                       reason: str | None = _REASON) -> Envelope[Experiment]:
        return await _act(prompts, caller, experimentId, "rollback", reason)


_DONE = {"start": "Experiment started", "pause": "Experiment paused", "stop": "Experiment stopped",
         "rollback": "Experiment rolled back: all traffic to the control variant"}


async def _act(prompts: PromptsService, caller: Actor, experiment_id: str, action: Action,
               reason: str | None) -> Envelope[Experiment]:
    experiment, changed = await prompts.experiments.act(caller, experiment_id, action, reason)
    return ok(experiment, _DONE[action] if changed else "No changes")
