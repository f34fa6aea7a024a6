"""Query parameters of the cost API, checked once into typed queries; bad input is a 400 naming the parameter.

Times are UTC. A bare date (``2026-12-01``) is that day's midnight; a date-time is RFC 3339 and may
carry ``Z`` or an offset; one without is taken as UTC. Windows are half-open, ``[start, end)``, and select whole
hours: an hour's rollup counts when the hour *starts* inside the window.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal

import msgspec

from adapters.adminapi import FieldError, SemanticError, ValidationFailed
from adapters.dataplane import ROLLUP_DIMENSIONS

__all__ = [
    "DIMENSIONS",
    "GROUP_BY_PATTERN",
    "RESOURCE_TYPES",
    "SPENDER_DIMENSIONS",
    "Granularity",
    "UsageQuery",
    "Window",
    "iso",
    "parse_filters",
    "parse_group_by",
    "parse_instant",
    "parse_window",
]

Granularity = Literal["hour", "day", "total"]
DIMENSIONS: tuple[str, ...] = ROLLUP_DIMENSIONS  # team, key_id, route, model, provider, variant, endpoint
SPENDER_DIMENSIONS = ("team", "key_id", "route", "model", "provider", "variant")
RESOURCE_TYPES = ("gpu", "api", "chat", "completions", "embeddings", "responses")
"""``cost-aggregate``'s ``resource_type``: ``gpu`` = GPU-hour-priced providers, ``api`` = the others
(priced per token, or unpriced); an endpoint kind = requests to that OpenAI endpoint."""
DEFAULT_DAYS = 7


def dimension_list_pattern(allowed: tuple[str, ...]) -> str:
    """A comma list of ``allowed`` names, or nothing, as a regular expression for the OpenAPI document."""
    one = "(" + "|".join(allowed) + ")"
    return f"^({one}(,{one})*)?$"


GROUP_BY_PATTERN = dimension_list_pattern(DIMENSIONS)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime


@dataclass(frozen=True)
class UsageQuery:
    """One report over the rollups: the window, the bucket size, the dimensions to group by and the filters
    (dimension -> exact value; ``""`` matches requests without that dimension)."""

    start: datetime
    end: datetime
    granularity: Granularity = "day"
    group_by: tuple[str, ...] = ()
    filters: Mapping[str, str] = field(default_factory=dict)
    resource_type: str | None = None


def iso(at: datetime) -> str:
    """``2026-12-01T00:00:00Z``: the API's one time format (zero-padded years: ``0001-…`` too)."""
    return at.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_MIN = datetime.min.replace(tzinfo=UTC)
_MAX = datetime.max.replace(tzinfo=UTC)


def _as_utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        return at.replace(tzinfo=UTC)
    try:
        return at.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 lies before datetime.min in UTC: clamp, it is still valid
        return _MIN if at.year == 1 else _MAX


def parse_instant(name: str, value: str) -> tuple[datetime, bool]:
    """The UTC instant ``value`` names, and whether it was a bare date. Raises ``ValidationFailed``."""
    text = value.strip()
    try:
        if _DATE.fullmatch(text):  # not date.fromisoformat's other shapes (2026-W48-1, 20261201)
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC), True
        at = msgspec.convert(text, datetime)  # RFC 3339, as the OpenAPI document states (a space for T is fine)
    except (ValueError, msgspec.ValidationError):
        message = f"not a date (2026-12-01) or RFC 3339 date-time: {value[:40]!r}"
        raise ValidationFailed([FieldError(name, message)]) from None
    return _as_utc(at), False


def _shift(at: datetime, delta: timedelta) -> datetime:
    try:
        return at + delta
    except OverflowError:
        return _MAX if delta > timedelta(0) else _MIN


def _next_hour(now: datetime) -> datetime:
    hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return hour + timedelta(hours=1)


def parse_window(
    start: str | None, end: str | None, *, max_days: int, now: datetime,
    names: tuple[str, str] = ("start", "end"), inclusive_end_date: bool = False,
) -> Window:
    """``[start, end)``; by default the last ``DEFAULT_DAYS`` days up to the end of the current hour.

    ``inclusive_end_date``: a bare-date ``end`` covers that whole day (``end_date`` of cost-aggregate).
    A malformed time is a 400 (``ValidationFailed``); an empty or too long window is a 422
    (``SemanticError``): each value matches the document, but together they are refused.
    """
    errors: list[FieldError] = []
    begin_at = finish_at = None
    for name, value in zip(names, (start, end), strict=True):
        if value is None:
            continue
        try:
            at, is_date = parse_instant(name, value)
        except ValidationFailed as err:
            errors += err.errors
            continue
        if name == names[0]:
            begin_at = at
        else:
            finish_at = _shift(at, timedelta(days=1)) if is_date and inclusive_end_date else at
    if errors:
        raise ValidationFailed(errors)
    if finish_at is None:
        finish_at = _next_hour(now)
    if begin_at is None:
        begin_at = _shift(finish_at, -timedelta(days=DEFAULT_DAYS))
    if begin_at >= finish_at:
        raise SemanticError([FieldError(names[1], f"must be after {names[0]} ({iso(begin_at)})")])
    if finish_at - begin_at > timedelta(days=max_days):
        raise SemanticError([FieldError(names[0], f"the window may cover at most {max_days} days")])
    return Window(begin_at, finish_at)


def parse_group_by(value: str | None, *, name: str = "group_by",
                   allowed: tuple[str, ...] = DIMENSIONS) -> tuple[str, ...]:
    """A comma list of dimensions (empty: none); the document states the same as a pattern (``GROUP_BY_PATTERN``)."""
    if value is None or not value.strip():
        return ()
    dims = tuple(dict.fromkeys(d.strip() for d in value.split(",")))  # a repeated dimension counts once
    unknown = [d for d in dims if d not in allowed]
    if unknown:
        raise ValidationFailed([FieldError(name, f"unknown dimension {unknown[0][:40]!r}; "
                                                 f"one of {', '.join(allowed)}")])
    return dims


def parse_filters(values: Mapping[str, str | None]) -> dict[str, str]:
    """The dimension filters a request set (a present-but-empty value matches requests without it)."""
    return {dim: value for dim, value in values.items() if value is not None}
