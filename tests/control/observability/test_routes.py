"""The cost API over HTTP on both databases, against known rollup rows (tests/control/observability/_data.py)."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

import pytest

from adapters.adminapi.testing import AdminTestApp
from adapters.dataplane import ROLLUP_DIMENSIONS
from tests.control.observability._data import OUTSIDE, ROWS, WINDOW, insert_rollups, sums

API = "/llm-ops/v1/observability"
AGGREGATE = "/llm-ops/v1/governance/observability/cost-aggregate"
METRICS = ["requests", "errors", "prompt_tokens", "completion_tokens", "cached_read_tokens", "cache_write_tokens",
           "reasoning_tokens", "total_tokens", "cost_usd", "unpriced_requests", "estimated_requests", "gpu_hours"]


@pytest.fixture
async def loaded(obs: AdminTestApp) -> AdminTestApp:
    assert obs.plane.store is not None
    await insert_rollups(obs.plane.store, ROWS + OUTSIDE)
    return obs


async def get(app: AdminTestApp, url: str) -> dict[str, Any]:
    resp = await app.client.get(url)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "success"
    return body["data"]


def counters(row: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in row.items() if k in METRICS and k not in ("cost_usd", "gpu_hours")}


async def test_totals_by_team_with_gpu_hours_allocated_exactly(loaded: AdminTestApp) -> None:
    data = await get(loaded, f"{API}/usage?{WINDOW}&granularity=total&group_by=team")
    assert (data["start"], data["end"], data["granularity"], data["group_by"]) == (
        "2026-11-30T00:00:00Z", "2026-12-02T00:00:00Z", "total", ["team"])
    rows = {r["team"]: r for r in data["rows"]}
    assert [r["team"] for r in data["rows"]] == [None, "a", "b", "c"]  # '' (no team) sorts first, shown as null
    assert all(r["bucket"] is None and list(r)[2:] == METRICS for r in data["rows"])
    # a: 0.012345678 + 0.0003 (token priced) + a third of vLLM's 00:00 hour (with the odd nano) + all of 05:00
    # GPU-hours: a third of each vLLM provider-hour (the odd micro-hour to a) times its 2 GPUs
    assert rows["a"]["cost_usd"] == "1.345979012" and rows["a"]["gpu_hours"] == 2.666668
    assert rows["b"]["cost_usd"] == "0.334333333" and rows["b"]["gpu_hours"] == 0.666666
    assert rows["c"]["cost_usd"] == "0.333333333" and rows["c"]["gpu_hours"] == 0.666666
    assert rows[None]["cost_usd"] is None and rows[None]["unpriced_requests"] == 4  # unpriced: null, never "0"
    assert data["totals"]["cost_usd"] == "2.013645678" and data["totals"]["gpu_hours"] == 4.0
    assert sum(Decimal(r["cost_usd"] or 0) for r in data["rows"]) == Decimal(data["totals"]["cost_usd"])
    assert counters(data["totals"]) == sums(ROWS)  # the rows outside the window are not counted
    for team in ("a", "b", "c"):
        assert counters(rows[team]) == sums([r for r in ROWS if r.get("team") == team])


@pytest.mark.parametrize("dim", ROLLUP_DIMENSIONS)
async def test_every_dimension_groups_and_sums_to_the_totals(loaded: AdminTestApp, dim: str) -> None:
    data = await get(loaded, f"{API}/usage?{WINDOW}&granularity=total&group_by={dim}")
    values = sorted({r.get(dim, "") for r in ROWS})
    assert [r[dim] or "" for r in data["rows"]] == values
    for row in data["rows"]:
        assert counters(row) == sums([r for r in ROWS if r.get(dim, "") == (row[dim] or "")])
    assert sum(Decimal(r["cost_usd"] or 0) for r in data["rows"]) == Decimal("2.013645678")
    assert sum(Decimal(str(r["gpu_hours"])) for r in data["rows"]) == 4


async def test_day_and_hour_buckets(loaded: AdminTestApp) -> None:
    days = await get(loaded, f"{API}/usage?{WINDOW}")  # granularity day is the default
    assert [(r["bucket"], r["requests"], r["cost_usd"]) for r in days["rows"]] == [
        ("2026-11-30T00:00:00Z", 18, "0.013645678"), ("2026-12-01T00:00:00Z", 9, "2")]
    hours = await get(loaded, f"{API}/usage?{WINDOW}&granularity=hour&group_by=provider")
    assert [(r["bucket"], r["provider"], r["cost_usd"]) for r in hours["rows"]] == [
        ("2026-11-30T22:00:00Z", "openai", "0.013345678"),
        ("2026-11-30T23:00:00Z", "openai", "0.0003"),
        ("2026-12-01T00:00:00Z", "ollama", None),
        ("2026-12-01T00:00:00Z", "vllm", "1"),
        ("2026-12-01T05:00:00Z", "vllm", "1"),
    ]
    by_day_team = await get(loaded, f"{API}/usage?{WINDOW}&granularity=day&group_by=team,endpoint")
    assert [(r["bucket"][:10], r["team"], r["endpoint"]) for r in by_day_team["rows"]] == [
        ("2026-11-30", "a", "chat"), ("2026-11-30", "a", "embeddings"), ("2026-11-30", "b", "chat"),
        ("2026-12-01", None, "chat"), ("2026-12-01", "a", "chat"), ("2026-12-01", "b", "completions"),
        ("2026-12-01", "c", "responses")]
    assert by_day_team["totals"] == days["totals"]


@pytest.mark.parametrize(("query", "expected"), [
    ("team=b", {"requests": 6, "cost_usd": "0.334333333", "gpu_hours": 0.666666}),  # b's third, not the hour
    ("provider=vllm", {"requests": 5, "cost_usd": "2", "gpu_hours": 4.0}),
    ("variant=b", {"requests": 6, "cost_usd": "0.334333333", "gpu_hours": 0.666666}),
    ("endpoint=embeddings", {"requests": 3, "cost_usd": "0.0003", "gpu_hours": 0.0}),
    # each rollup row's part is fixed: a filter shows the same nano-dollars a grouping does
    ("route=local&key_id=k1", {"requests": 3, "cost_usd": "1.333333334", "gpu_hours": 2.666668}),
    ("model=mystery", {"requests": 4, "cost_usd": None, "gpu_hours": 0.0}),
    ("team=", {"requests": 4, "cost_usd": None, "gpu_hours": 0.0}),  # empty: requests without a team
    ("team=nobody", {"requests": 0, "cost_usd": None, "gpu_hours": 0.0}),
])
async def test_filters(loaded: AdminTestApp, query: str, expected: dict[str, Any]) -> None:
    data = await get(loaded, f"{API}/usage?{WINDOW}&granularity=total&{query}")
    assert {k: data["totals"][k] for k in expected} == expected
    assert len(data["rows"]) == (1 if expected["requests"] else 0)


async def test_csv_export_has_the_json_rows(loaded: AdminTestApp) -> None:
    url = f"{API}/usage?{WINDOW}&granularity=day&group_by=team,model"
    resp = await loaded.client.get(url + "&format=csv")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/csv; charset=utf-8"
    assert resp.headers["content-disposition"].startswith("attachment; filename=\"usage-")
    lines = list(csv.reader(io.StringIO(resp.text)))
    assert lines[0] == ["bucket", "team", "model", *METRICS]
    expected = [[("" if v is None else str(v)) for v in r.values()] for r in (await get(loaded, url))["rows"]]
    assert lines[1:] == expected and len(expected) == 7


async def test_csv_cells_cannot_start_a_formula(obs: AdminTestApp) -> None:
    assert obs.plane.store is not None
    await insert_rollups(obs.plane.store, [{**ROWS[1], "team": "=HYPERLINK(\"x\")"}])
    resp = await obs.client.get(f"{API}/usage?{WINDOW}&granularity=total&group_by=team&format=csv")
    assert list(csv.reader(io.StringIO(resp.text)))[1][1] == "'=HYPERLINK(\"x\")"


async def test_top_spenders(loaded: AdminTestApp) -> None:
    data = await get(loaded, f"{API}/top-spenders?by=team&{WINDOW}")
    assert [(r["team"], r["cost_usd"]) for r in data["rows"]] == [
        ("a", "1.345979012"), ("b", "0.334333333"), ("c", "0.333333333"), (None, None)]  # unpriced last
    assert data["rows"][0]["share"] == round(1.345979012 / 2.013645678, 6) and data["rows"][3]["share"] == 0
    assert "bucket" not in data["rows"][0] and data["by"] == "team"
    top = await get(loaded, f"{API}/top-spenders?by=model&{WINDOW}&limit=2")
    assert [r["model"] for r in top["rows"]] == ["llama", "gpt-4o"] and top["limit"] == 2
    assert top["totals"]["cost_usd"] == "2.013645678"  # totals over everything, not just the top 2


async def test_top_spenders_break_cost_ties_by_tokens_then_name(obs: AdminTestApp) -> None:
    assert obs.plane.store is not None
    half = {**ROWS[1], "cost_usd": Decimal("0.5")}
    await insert_rollups(obs.plane.store, [
        {**half, "team": "x", "prompt_tokens": 10}, {**half, "team": "y", "prompt_tokens": 20},
        {**half, "team": "w", "prompt_tokens": 10}, {**ROWS[3], "team": "big-but-unpriced", "prompt_tokens": 10**9}])
    data = await get(obs, f"{API}/top-spenders?by=team&{WINDOW}")
    assert [(r["team"], r["share"]) for r in data["rows"]] == [
        ("y", 0.333333), ("w", 0.333333), ("x", 0.333333), ("big-but-unpriced", 0)]


async def test_cost_profiles_per_endpoint(loaded: AdminTestApp) -> None:
    data = await get(loaded, f"{API}/cost-profiles?{WINDOW}")
    got = [(r["route"], r["provider"], r["model"], r["total_tokens"], r["gpu_hours"], r["cost_usd"])
           for r in data["rows"]]
    assert got == [("chat", "ollama", "mystery", 80, 0.0, None),
                   ("chat", "openai", "gpt-4o", 1650, 0.0, "0.013345678"),
                   ("embed", "openai", "text-emb", 300, 0.0, "0.0003"),
                   ("local", "vllm", "llama", 300, 4.0, "2")]


@pytest.mark.parametrize(("resource_type", "requests", "cost", "gpu_hours"), [
    (None, 27, "2.013645678", 4.0),
    ("", 27, "2.013645678", 4.0),
    ("gpu", 5, "2", 4.0),
    ("api", 22, "0.013645678", 0.0),
    ("chat", 22, "1.346679012", 2.666668),
    ("completions", 1, "0.333333333", 0.666666),
    ("embeddings", 3, "0.0003", 0.0),
    ("responses", 1, "0.333333333", 0.666666),
])
async def test_cost_aggregate_per_resource_type(loaded: AdminTestApp, resource_type: str | None, requests: int,
                                                cost: str, gpu_hours: float) -> None:
    kind = "" if resource_type is None else f"&resource_type={resource_type}"
    data = await get(loaded, f"{AGGREGATE}?start_date=2026-11-30&end_date=2026-12-01{kind}")
    assert (data["requests"], data["cost_usd"], data["gpu_hours"]) == (requests, cost, gpu_hours)
    assert data["resource_type"] == (resource_type or None)
    assert (data["start_date"], data["end_date"]) == ("2026-11-30T00:00:00Z", "2026-12-02T00:00:00Z")  # whole day


async def test_cost_aggregate_end_datetime_is_exclusive(loaded: AdminTestApp) -> None:
    data = await get(loaded, f"{AGGREGATE}?start_date=2026-11-30&end_date=2026-12-01T00:00:00Z")
    assert (data["requests"], data["cost_usd"], data["total_tokens"]) == (18, "0.013645678", 1950)


async def test_an_empty_window_reports_zero_requests_and_null_cost(obs: AdminTestApp) -> None:
    data = await get(obs, f"{API}/usage")  # the default window: the last 7 days
    assert data["rows"] == [] and data["totals"]["requests"] == 0 and data["totals"]["cost_usd"] is None
    assert data["granularity"] == "day" and data["end"].endswith(":00:00Z")


@pytest.mark.parametrize(("url", "field"), [
    (f"{API}/usage?start=yesterday", "start"),
    (f"{API}/usage?start=2026-13-01", "start"),
    (f"{API}/usage?end=2026-12-01T25:00", "end"),
    (f"{API}/usage?group_by=team,colour", "group_by"),
    (f"{API}/usage?granularity=week", "granularity"),
    (f"{API}/usage?format=xml", "format"),
    (f"{API}/top-spenders?limit=0", "limit"),
    (f"{API}/top-spenders?limit=1001", "limit"),
    (f"{API}/top-spenders?by=endpoint", "by"),
    (f"{API}/cost-profiles?end=soon", "end"),
    (f"{AGGREGATE}?resource_type=tpu", "resource_type"),
    (f"{AGGREGATE}?start_date=1.12.2026", "start_date"),
])
async def test_bad_input_is_a_400_naming_the_parameter(obs: AdminTestApp, url: str, field: str) -> None:
    resp = await obs.client.get(url)
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["status"] == "fail" and [e["field"] for e in body["data"]["errors"]] == [field]


@pytest.mark.parametrize(("url", "field"), [
    (f"{API}/usage?start=2026-12-02&end=2026-12-01", "end"),
    (f"{API}/usage?start=2026-12-01&end=2026-12-01", "end"),
    (f"{API}/usage?start=2020-01-01&end=2026-12-01", "start"),  # longer than 400 days
    (f"{API}/usage?start=2026-11-01&end=2026-11-08T00:00:01Z&granularity=hour", "granularity"),  # over 7 days
    (f"{API}/usage?start=2026-11-01&end=2026-12-01&granularity=hour&format=csv", "granularity"),
    (f"{API}/top-spenders?start=9999-12-31", "end"),
    (f"{AGGREGATE}?start_date=2026-12-01&end_date=2026-11-01", "end_date"),
    (f"{AGGREGATE}?start_date=0001-01-01T00:00:00%2B01:00", "start_date"),  # before datetime.min in UTC: clamped
])
async def test_a_window_that_is_empty_or_too_long_is_a_422(obs: AdminTestApp, url: str, field: str) -> None:
    """Each value matches the document, so the refusal is a 422 (docs/admin-api.md, "400 or 422")."""
    resp = await obs.client.get(url)
    assert resp.status_code == 422, resp.text
    assert [e["field"] for e in resp.json()["data"]["errors"]] == [field]


async def test_hourly_reports_cover_up_to_seven_days(obs: AdminTestApp) -> None:
    data = await get(obs, f"{API}/usage?start=2026-11-01&end=2026-11-08&granularity=hour")
    assert data["rows"] == [] and data["totals"]["requests"] == 0


async def test_edge_times_and_repeated_dimensions_are_accepted(loaded: AdminTestApp) -> None:
    data = await get(loaded, f"{API}/usage?start=2026-11-30T00:00:00.000Z&end=2026-12-02T00:00:00.000Z"
                             "&granularity=total&group_by=team,team")
    assert data["group_by"] == ["team"] and data["totals"]["requests"] == 27
    assert (await get(loaded, f"{AGGREGATE}?start_date=9999-12-01&end_date=9999-12-31"))["end_date"] == \
        "9999-12-31T23:59:59.999999Z"  # the day after the last representable one: clamped, not a 500


async def test_a_viewer_may_read_and_nobody_without_a_key(loaded: AdminTestApp) -> None:
    created = await loaded.client.post("/llm-ops/v1/admin/keys", json={"name": "viewer", "role": "viewer"})
    viewer = {"authorization": f"Bearer {created.json()['data']['key']}"}
    for url in (f"{API}/usage?{WINDOW}", f"{API}/top-spenders?{WINDOW}", f"{API}/cost-profiles?{WINDOW}",
                f"{AGGREGATE}?start_date=2026-11-30"):
        assert (await loaded.client.get(url, headers=viewer)).status_code == 200, url
        assert (await loaded.client.get(url, headers={"authorization": ""})).status_code == 401, url
