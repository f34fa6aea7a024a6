"""``GET /llm-ops/v1/prompts/experiments/{experimentId}/results`` (role viewer): thin over ``ResultsService``."""

from __future__ import annotations

from litestar import Controller, get
from litestar.di import Provide
from litestar.openapi.spec import Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.params import Parameter

from adapters.adminapi import Envelope, ModuleContext, ok
from adapters.adminapi.audit import parse_instant
from control.prompts.results import RESULTS, ResultsService
from control.prompts.results_wire import ExperimentResults

__all__ = ["ResultsController"]

# What parse_instant accepts, stated exactly (as the audit log's since/until): an RFC 3339 date-time, Unix
# seconds in datetime's years 1-9999, or null.
_INSTANT = {"oneOf": None, "anyOf": [
    Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.DATE_TIME),
    Schema(type=OpenAPIType.NUMBER, minimum=-62135596800, maximum=253402300799, description="Unix seconds"),
    Schema(type=OpenAPIType.NULL),
]}


def _service(ctx: ModuleContext) -> ResultsService:
    return ctx.services[RESULTS]


class ResultsController(Controller):
    path = "/prompts/experiments"
    tags = ["prompts"]
    dependencies = {"results": Provide(_service, sync_to_thread=False)}

    @get("/{experimentId:str}/results", summary="An experiment's results: per variant, against control, guardrails",
         description="Per variant: requests, error rate, latency p50/p95, time to first token, tokens, cost per "
                     "request, feedback mean and rate (fallbacks counted apart, in no other number); each variant "
                     "minus control with its confidence interval, p-value and test; the requests still needed to "
                     "detect the minimum effect; guardrail status; the runtime (weights, stopped variants, "
                     "winner, P(best) when adaptive). The window starts at the run's start unless `since` says.")
    async def get_results(
        self, experimentId: str, results: ResultsService,
        since: str | None = Parameter(query="since", default=None, schema_extra=_INSTANT,
                                      description="window start: RFC 3339 date-time (UTC if no offset) or Unix "
                                                  "seconds; default the experiment's (re)start"),
    ) -> Envelope[ExperimentResults]:
        return ok(await results.results(experimentId, since=parse_instant(since, "since")))
