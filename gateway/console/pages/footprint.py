"""A model's whole lineage on its page: the training job that made it, the endpoints and revisions serving it,
the evaluation runs on it, and the traffic and cost of its routes.

Each part is one admin call, as the signed-in key; a part the key may not read, or whose module is not
installed, is left out with a note rather than failing the page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.console.api import ApiError
from gateway.console.session import Console

__all__ = ["Footprint", "model_footprint"]

COST_WINDOW_DAYS = 30


@dataclass
class Footprint:
    endpoints: list[dict[str, Any]] | None = None
    runs: list[dict[str, Any]] | None = None
    usage: list[dict[str, Any]] | None = None  # per route of the model's endpoints, over COST_WINDOW_DAYS
    notes: list[str] = field(default_factory=list)
    window_days: int = COST_WINDOW_DAYS


async def _part(console: Console, footprint: Footprint, what: str, path: str, query: dict[str, Any]) -> Any:
    try:
        return await console.api.get(path, query)
    except ApiError as err:
        if err.status in (403, 404, 503):
            footprint.notes.append(f"{what}: {err.message}")
            return None
        raise


async def model_footprint(console: Console, model_id: str) -> Footprint:
    found = Footprint()
    endpoints = await _part(console, found, "Endpoints", "/serving/endpoints", {"modelId": model_id, "pageSize": 20})
    if endpoints is not None:
        found.endpoints = list(endpoints.get("items", []))
    runs = await _part(console, found, "Evaluation runs", "/evaluation/runs", {"modelId": model_id, "pageSize": 10})
    if runs is not None:
        found.runs = list(runs.get("items", []))
    routes = {e.get("route") for e in found.endpoints or [] if e.get("route")}
    if routes:
        start = (datetime.now(UTC) - timedelta(days=COST_WINDOW_DAYS)).replace(minute=0, second=0, microsecond=0)
        report = await _part(console, found, "Traffic and cost", "/observability/usage",
                             {"group_by": "route", "granularity": "total", "start": start.isoformat()})
        if report is not None:
            found.usage = [row for row in report.get("rows", []) if row.get("route") in routes]
    return found
