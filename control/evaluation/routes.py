"""HTTP surface of evaluation runs: thin handlers over ``RunService`` (paths in ``protocol``).

Reads need viewer; creating and cancelling runs developer. The export is the one answer outside the
envelope: the items streamed as CSV or JSON (a bad ``format`` is still a 400 envelope, an unknown run a 404
envelope: both are decided before the first byte).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Controller, get, post
from litestar.di import Provide
from litestar.params import Parameter
from litestar.response import Stream

from adapters.adminapi import (
    Actor,
    Conflict,
    Envelope,
    ModuleContext,
    NotFound,
    Page,
    PageParams,
    Role,
    SemanticError,
    ok,
    requires,
)
from adapters.adminapi.audit import _INSTANT_SCHEMA as INSTANT_SCHEMA  # the audit log's from/to, same rules
from adapters.adminapi.audit import parse_instant
from control.evaluation.export import export_csv, export_json
from control.evaluation.protocol import Item, Run, RunCreate, RunStatus, RunSummary, RunType
from control.evaluation.runs import RunService
from control.evaluation.services import EVALUATION

__all__ = ["CONTROLLERS", "RunsController"]

RunId = Annotated[str, Parameter(min_length=1, max_length=40, description="the run's id (run_…)")]
_WRITES: list[Any] = [Conflict, NotFound, SemanticError]
_READS: list[Any] = [NotFound]
_CANCELS: list[Any] = [Conflict, NotFound]


def _service(ctx: ModuleContext) -> RunService:
    return ctx.services[EVALUATION]


class RunsController(Controller):
    path = "/evaluation/runs"
    tags = ["evaluation"]
    dependencies = {"runs": Provide(_service, sync_to_thread=False)}

    @post("/", status_code=201, opt=requires(Role.developer), raises=_WRITES,
          summary="Start an evaluation run (queued; a worker generates, scores and finishes it)",
          description="422 names each field at fault: a dataset version that is unknown or not ready, a mapped "
                      "column it lacks, a target no route serves, a type without its judge or review "
                      "settings, a pairwise judge without two targets, a reference metric without a reference.")
    async def create_run(self, data: RunCreate, runs: RunService, caller: Actor) -> Envelope[Run]:
        return ok(await runs.create(caller, data), "Run queued")

    @get("/", summary="List runs, newest first", description="Filters combine with AND; from/to bound createdAt.")
    async def list_runs(
        self, runs: RunService, page: PageParams,
        model_id: str | None = Parameter(query="modelId", default=None, max_length=100),
        dataset_id: str | None = Parameter(query="datasetId", default=None, max_length=100),
        run_type: RunType | None = Parameter(query="type", default=None),
        status: RunStatus | None = Parameter(query="status", default=None),
        since: str | None = Parameter(query="from", default=None, schema_extra=INSTANT_SCHEMA,
                                      description="created at or after: ISO 8601 or Unix seconds"),
        until: str | None = Parameter(query="to", default=None, schema_extra=INSTANT_SCHEMA,
                                      description="created before: ISO 8601 or Unix seconds"),
    ) -> Envelope[Page[RunSummary]]:
        return ok(await runs.list(page, model_id=model_id, dataset_id=dataset_id, run_type=run_type, status=status,
                                  since=parse_instant(since, "from"), until=parse_instant(until, "to")))

    @get("/{runId:str}", raises=_READS, summary="Get a run: progress, metrics with CIs, samples, timeline")
    async def get_run(self, runId: RunId, runs: RunService) -> Envelope[Run]:
        return ok(await runs.get(runId))

    @get("/{runId:str}/items", raises=_READS, summary="A run's items in dataset order, every target's output")
    async def list_items(self, runId: RunId, runs: RunService, page: PageParams) -> Envelope[Page[Item]]:
        return ok(await runs.items(runId, page))

    @get("/{runId:str}/export", raises=_READS, summary="Every item of the run, streamed as CSV or JSON",
         description="Not enveloped: CSV with a header (one row per item and target, one column per metric) or "
                     "one JSON array of the same records.")
    async def export_run(self, runId: RunId, runs: RunService,
                         output: Literal["csv", "json"] = Parameter(query="format", default="csv")) -> Stream:
        routes, metrics = await runs.export_info(runId)
        name = f"{runId}.{output}"
        headers = {"content-disposition": f'attachment; filename="{name}"'}
        if output == "csv":
            return Stream(export_csv(runs.store, runId, routes, metrics), media_type="text/csv",
                          headers=headers)
        return Stream(export_json(runs.store, runId, routes), media_type="application/json", headers=headers)

    @post("/{runId:str}/cancel", status_code=200, opt=requires(Role.developer), raises=_CANCELS,
          summary="Cancel a run: queued ones at once; running ones stop starting items, then finish as cancelled")
    async def cancel_run(self, runId: RunId, runs: RunService, caller: Actor) -> Envelope[Run]:
        run, message = await runs.cancel(caller, runId)
        return ok(run, message)


CONTROLLERS = [RunsController]
