"""HTTP surface of observability: thin handlers over ``CostReports``; every route needs role viewer.

``/observability/*`` is the module's own prefix. ``/governance/observability/cost-aggregate`` keeps the
path existing clients call; the host mounts every module's routes under ``/llm-ops/v1`` without
reserving prefixes, so serving it from here needs nothing from the governance module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from litestar import Controller, Response, get
from litestar.di import Provide
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Schema,
)
from litestar.params import Parameter

from adapters.adminapi import Envelope, FieldError, ModuleContext, Role, SemanticError, ok, requires
from control.observability.export import to_csv
from control.observability.params import (
    GROUP_BY_PATTERN,
    Granularity,
    UsageQuery,
    Window,
    iso,
    parse_filters,
    parse_group_by,
    parse_window,
)
from control.observability.protocol import CostAggregate, CostProfiles, TopSpenders, UsageReport
from control.observability.service import CostReports
from control.observability.services import REPORTS

__all__ = ["CostAggregateController", "ObservabilityController"]

Spender = Literal["team", "key_id", "route", "model", "provider", "variant"]
ResourceType = Literal["gpu", "api", "chat", "completions", "embeddings", "responses", ""]  # params.RESOURCE_TYPES
_TIME = "UTC date (2026-12-01) or RFC 3339 date-time (no offset: UTC)"
# What parse_instant accepts, stated for the document (replacing Litestar's oneOf [string, null]).
_INSTANT: dict[str, Any] = {"oneOf": None, "anyOf": [Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.DATE),
                                                     Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.DATE_TIME)]}
_REFUSES: list[Any] = [SemanticError]  # Litestar types raises= as HTTPException; it reads only status_code
_WINDOW_RULES = ("422 when the window is empty (start not before end) or longer than the configured maximum "
                 "(observability.max_range_days, default 400 days).")


@dataclass
class _UsageOperation(Operation):
    """Declares the CSV answer (``format=csv``) beside the JSON envelope of 200."""

    def __post_init__(self) -> None:
        answer = (self.responses or {}).get("200")
        if isinstance(answer, OpenAPIResponse) and answer.content is not None:
            answer.content["text/csv"] = OpenAPIMediaType(schema=Schema(
                type=OpenAPIType.STRING, description="with format=csv: a header line, then the rows"))


def _reports(ctx: ModuleContext) -> CostReports:
    return ctx.services[REPORTS]


def _window(reports: CostReports, start: str | None, end: str | None) -> Window:
    return parse_window(start, end, max_days=reports.settings.max_range_days, now=datetime.now(UTC))


def _instant(name: str, description: str) -> Any:
    return Parameter(query=name, default=None, max_length=64, schema_extra=_INSTANT, description=description)


def _filter(dim: str) -> Any:
    return Parameter(query=dim, default=None, max_length=200,
                     description=f"only requests whose {dim} is exactly this (empty: requests without one)")


class ObservabilityController(Controller):
    path = "/observability"
    tags = ["observability"]
    dependencies = {"reports": Provide(_reports, sync_to_thread=False)}
    opt = requires(Role.viewer)

    @get("/usage", summary="Usage and cost by hour or day, grouped by any dimensions (JSON or CSV)",
         description=_WINDOW_RULES, raises=_REFUSES, operation_class=_UsageOperation)
    async def usage(
        self,
        reports: CostReports,
        start: str | None = _instant("start", f"{_TIME}; default: 7 days before end"),
        end: str | None = _instant("end", f"{_TIME}, exclusive; default: the end of the current hour"),
        granularity: Granularity = Parameter(query="granularity", default="day"),
        group_by: str | None = Parameter(query="group_by", default=None, max_length=200, pattern=GROUP_BY_PATTERN,
                                         description="comma list of team, key_id, route, model, provider, "
                                                     "variant, endpoint"),
        team: str | None = _filter("team"),
        key_id: str | None = _filter("key_id"),
        route: str | None = _filter("route"),
        model: str | None = _filter("model"),
        provider: str | None = _filter("provider"),
        variant: str | None = _filter("variant"),
        endpoint: str | None = _filter("endpoint"),
        output: Literal["json", "csv"] = Parameter(query="format", default="json"),
    ) -> Envelope[UsageReport]:
        window = _window(reports, start, end)
        filters = parse_filters({"team": team, "key_id": key_id, "route": route, "model": model,
                                 "provider": provider, "variant": variant, "endpoint": endpoint})
        hourly_days = reports.settings.max_hourly_range_days
        if granularity == "hour" and window.end - window.start > timedelta(days=hourly_days):
            raise SemanticError([FieldError("granularity", f"hour covers at most {hourly_days} days "
                                            f"({hourly_days * 24} hourly buckets): use granularity=day, or "
                                            "ask for the window a part at a time")])
        query = UsageQuery(window.start, window.end, granularity, parse_group_by(group_by), filters)
        report = await reports.usage(query)
        if output == "csv":
            header = ["bucket", *query.group_by, *report.totals.__struct_fields__]
            name = f"usage-{iso(query.start)}-{iso(query.end)}.csv".replace(":", "")
            return Response(to_csv(header, report.rows), media_type="text/csv",  # type: ignore[return-value]  # CSV is the one non-envelope answer; Litestar adds the charset
                            headers={"content-disposition": f'attachment; filename="{name}"'})
        return ok(report)

    @get("/top-spenders", summary="Who spent most over a window, with each one's share of the total cost",
         description=_WINDOW_RULES, raises=_REFUSES)
    async def top_spenders(
        self,
        reports: CostReports,
        by: Spender = Parameter(query="by", default="team"),
        start: str | None = _instant("start", _TIME),
        end: str | None = _instant("end", f"{_TIME}, exclusive"),
        limit: int = Parameter(query="limit", default=10, ge=1, le=1000),
    ) -> Envelope[TopSpenders]:
        return ok(await reports.top_spenders(_window(reports, start, end), by, limit))

    @get("/cost-profiles", summary="Per endpoint (route, provider, model): tokens, GPU-hours and cost",
         description=_WINDOW_RULES, raises=_REFUSES)
    async def cost_profiles(
        self,
        reports: CostReports,
        start: str | None = _instant("start", _TIME),
        end: str | None = _instant("end", f"{_TIME}, exclusive"),
    ) -> Envelope[CostProfiles]:
        return ok(await reports.cost_profiles(_window(reports, start, end)))


class CostAggregateController(Controller):
    path = "/governance/observability"
    tags = ["observability"]
    dependencies = {"reports": Provide(_reports, sync_to_thread=False)}
    opt = requires(Role.viewer)

    @get("/cost-aggregate", summary="Totals of GPU-hours, tokens and cost, optionally for one kind of resource",
         description=_WINDOW_RULES.replace("start", "start_date"), raises=_REFUSES)
    async def cost_aggregate(
        self,
        reports: CostReports,
        resource_type: ResourceType | None = Parameter(
            query="resource_type", default=None,
            description="gpu (GPU-hour-priced providers), api (the others), or an endpoint kind: "
                        "chat, completions, embeddings, responses; omitted or empty: everything"),
        start_date: str | None = _instant("start_date", _TIME),
        end_date: str | None = _instant("end_date", f"{_TIME}; a bare date includes that whole day"),
    ) -> Envelope[CostAggregate]:
        kind = resource_type or None
        window = parse_window(start_date, end_date, max_days=reports.settings.max_range_days,
                              now=datetime.now(UTC), names=("start_date", "end_date"), inclusive_end_date=True)
        return ok(await reports.cost_aggregate(window, kind))
