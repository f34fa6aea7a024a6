"""Usage & cost (`/console/usage`): cost and tokens over time by team, model or route, the totals per group,
the top spenders, and the same data as CSV. Read-only; every number is the cost API's
(`/observability/usage`, `/observability/top-spenders`), never one the console computed from records.

The window is the last 24 hours, 7 or 30 days up to the end of the current hour (the cost API's own
default end), in hourly or daily UTC buckets. The charts show the `TOP_N` groups that cost most in the
window and the rest summed as one "other" series; the totals table has every group, from the API's
`granularity=total` answer for the same window and grouping, so its numbers are the API's exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from litestar import Response, get

from gateway.console.api import ApiError, error_of
from gateway.console.forms import Form
from gateway.console.render import PAGE_HEADERS
from gateway.console.session import Console

__all__ = ["HANDLERS", "exact_usd"]

GROUPS = {"team": "Team", "model": "Model", "route": "Route"}
WINDOWS = {"24h": ("Last 24 hours", timedelta(hours=24)), "7d": ("Last 7 days", timedelta(days=7)),
           "30d": ("Last 30 days", timedelta(days=30))}
GRANULARITIES = {"hour": "Hourly", "day": "Daily"}
SPENDERS = {"team": "Team", "key_id": "Key", "route": "Route", "model": "Model", "provider": "Provider",
            "variant": "A/B variant"}
TOP_N = 5
SPENDER_LIMIT = 10
NONE_LABEL = "(none)"
_API_FIELDS = {"group_by": "groupBy", "granularity": "granularity", "by": "by", "start": "window", "end": "window"}


@dataclass(frozen=True)
class Choice:
    group_by: str
    window: str
    granularity: str
    by: str
    start: datetime
    end: datetime

    def api_query(self, **more: Any) -> dict[str, Any]:
        return {"start": iso(self.start), "end": iso(self.end), **more}

    def page_query(self) -> dict[str, str]:
        return {"groupBy": self.group_by, "window": self.window, "granularity": self.granularity, "by": self.by}


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def exact_usd(value: Any) -> str:
    """The API's exact decimal cost as money, every digit kept (`$0.0005955`, `$1,234.5`); `—` when unpriced."""
    if value in (None, ""):
        return "—"
    try:
        return "$" + format(Decimal(str(value)), ",f")
    except (InvalidOperation, ValueError):
        return str(value)


def _pick(form: Form, name: str, allowed: dict[str, Any], default: str, message: str) -> str:
    value = str(form.values.get(name) or default)
    if value not in allowed:
        form.errors[name] = message
        value = default
    form.values[name] = value
    return value


def choose(console: Console, *, now: datetime | None = None) -> tuple[Form, Choice]:
    """What the page shows, from its query; an unknown value is an error beside its field and the default."""
    params = console.request.query_params
    form = Form.of({k: params.get(k, "") for k in ("groupBy", "window", "granularity", "by")})
    group_by = _pick(form, "groupBy", GROUPS, "team", "Choose team, model or route")
    window = _pick(form, "window", WINDOWS, "24h", "Choose 24h, 7d or 30d")
    granularity = _pick(form, "granularity", GRANULARITIES, "hour" if window == "24h" else "day",
                        "Choose hour or day")
    by = _pick(form, "by", SPENDERS, "team", "Choose one of the listed dimensions")
    hour = (now or datetime.now(UTC)).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    end = hour + timedelta(hours=1)  # the cost API's own default end: the end of the current hour
    return form, Choice(group_by, window, granularity, by, end - WINDOWS[window][1], end)


def _refused(form: Form, err: ApiError) -> None:
    """A window or grouping the cost API refused: its words beside the field they concern."""
    if err.status not in (400, 422):
        raise err
    placed = False
    for path, message in err.errors.items():
        target = _API_FIELDS.get(path.split(".")[0])
        if target:
            form.errors.setdefault(target, message)
            placed = True
    if not placed:
        form.message = err.message


def _label(value: Any) -> str:
    return NONE_LABEL if value is None else str(value)


def _cost(row: dict[str, Any]) -> Decimal:
    try:
        return Decimal(str(row.get("cost_usd") or 0))
    except InvalidOperation:
        return Decimal(0)


def _plain(amount: Decimal) -> str:
    return format(amount, "f")


def _buckets(choice: Choice) -> list[datetime]:
    step = timedelta(hours=1) if choice.granularity == "hour" else timedelta(days=1)
    at = choice.start.replace(minute=0, second=0, microsecond=0)
    if choice.granularity == "day":
        at = at.replace(hour=0)
    out = []
    while at < choice.end:
        out.append(at)
        at += step
    return out


def _parse_bucket(value: Any) -> int | None:
    try:
        return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


def ranked(rows: list[dict[str, Any]], group_by: str) -> list[dict[str, Any]]:
    """Groups by cost, highest first (unpriced last), then by tokens, then by name."""
    return sorted(rows, key=lambda r: (r.get("cost_usd") is None, -_cost(r), -int(r.get("total_tokens") or 0),
                                       _label(r.get(group_by))))


def charts(choice: Choice, series_rows: list[dict[str, Any]],
           order: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The cost and token line charts (`ui.chart` specs): the top groups by cost, the rest as one "other"."""
    top = order[:TOP_N]
    rest = len(order) - len(top)
    other = f"other ({rest} more)" if rest else None
    xs = [int(b.timestamp()) for b in _buckets(choice)]
    index = {x: i for i, x in enumerate(xs)}
    names = [*top, *([other] if other else [])]
    cost = {n: [Decimal(0)] * len(xs) for n in names}
    tokens = {n: [0] * len(xs) for n in names}
    for row in series_rows:
        at = _parse_bucket(row.get("bucket"))
        if at is None or at not in index:
            continue
        label = _label(row.get(choice.group_by))
        name = label if label in top else other
        if name is None:
            continue
        cost[name][index[at]] += _cost(row)
        tokens[name][index[at]] += int(row.get("total_tokens") or 0)
    x_label = "Hour (UTC)" if choice.granularity == "hour" else "Day (UTC)"
    cost_spec = {"kind": "line", "time": True, "x": xs, "xLabel": x_label,
                 "series": [{"label": n, "values": [_plain(v) for v in cost[n]]} for n in names]}
    token_spec = {"kind": "line", "time": True, "x": xs, "xLabel": x_label,
                  "series": [{"label": n, "values": tokens[n]} for n in names]}
    return cost_spec, token_spec


@get("/usage", name="console-usage")
async def usage(console: Console) -> Response[str]:
    form, choice = choose(console)
    group = choice.group_by
    totals: dict[str, Any] | None = None
    series: dict[str, Any] | None = None
    spenders: dict[str, Any] | None = None
    try:
        totals = await console.api.get("/observability/usage",
                                       choice.api_query(granularity="total", group_by=group))
    except ApiError as err:
        _refused(form, err)
    try:
        series = await console.api.get("/observability/usage",
                                       choice.api_query(granularity=choice.granularity, group_by=group))
    except ApiError as err:
        _refused(form, err)
    try:
        spenders = await console.api.get("/observability/top-spenders",
                                         choice.api_query(by=choice.by, limit=SPENDER_LIMIT))
    except ApiError as err:
        _refused(form, err)
    groups = ranked(list(totals["rows"]), group) if totals else []
    cost_spec = token_spec = None
    if series is not None:
        cost_spec, token_spec = charts(choice, list(series["rows"]), [_label(r.get(group)) for r in groups])
    return console.render("usage/usage.html", {
        "form": form, "choice": choice, "groups": groups, "totals": totals, "spenders": spenders,
        "cost_spec": cost_spec, "token_spec": token_spec, "label": _label, "exact_usd": exact_usd,
        "group_options": list(GROUPS.items()), "window_options": [(k, v[0]) for k, v in WINDOWS.items()],
        "granularity_options": list(GRANULARITIES.items()), "spender_options": list(SPENDERS.items()),
        "start": iso(choice.start), "end": iso(choice.end), "top_n": TOP_N,
        "csv_query": {**choice.page_query(), "start": iso(choice.start), "end": iso(choice.end)},
    })


@get("/usage/export.csv", name="console-usage-export")
async def export_csv(console: Console) -> Response[bytes]:
    """The cost API's CSV of the page's grouping and buckets; `start`/`end` (the page's window) go as given."""
    _, choice = choose(console)
    params = console.request.query_params
    query = {"start": params.get("start") or iso(choice.start), "end": params.get("end") or iso(choice.end),
             "granularity": choice.granularity, "group_by": choice.group_by, "format": "csv"}
    reply = await console.api.raw("GET", "/observability/usage", query=query)
    if reply.status >= 400:
        raise error_of(reply.status, reply.body)
    name = reply.headers.get("content-disposition") or 'attachment; filename="usage.csv"'
    return Response(reply.body, media_type="text/csv; charset=utf-8",
                    headers={**PAGE_HEADERS, "content-disposition": name})


HANDLERS: list[Any] = [usage, export_csv]
