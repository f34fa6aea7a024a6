"""Observability: the cost API (usage and cost by team, key, route, model, provider, variant, endpoint and
hour or day; top spenders; CSV; cost profiles; cost aggregate), read from the hourly usage rollups."""

from control.observability.daily import refresh_days, refresh_dirty
from control.observability.module import ObservabilityModule
from control.observability.params import UsageQuery, Window
from control.observability.reports import Report, query_usage
from control.observability.rollups import rebuild_rollups
from control.observability.service import CostReports
from control.observability.settings import ObservabilitySettings

module = ObservabilityModule()

__all__ = [
    "CostReports",
    "ObservabilityModule",
    "ObservabilitySettings",
    "Report",
    "UsageQuery",
    "Window",
    "module",
    "query_usage",
    "rebuild_rollups",
    "refresh_days",
    "refresh_dirty",
]
