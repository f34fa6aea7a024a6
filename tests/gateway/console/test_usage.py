"""Usage & cost: the totals table is the cost API's numbers for the same window and grouping; charts with data
tables, regrouping by model, the top spenders and the CSV export; a viewer sees it all."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from playwright.sync_api import Page, expect

from tests.gateway.console.conftest import Server, shoot, sign_in
from tests.polling import until


def poll(check: Callable[[], Any], what: str, timeout_s: float = 20.0) -> Any:
    """`tests.polling.until` over a plain function, on its own thread (Playwright's sync API owns this one's loop)."""
    async def attempt() -> Any:
        return check()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, until(attempt, timeout_s, what, poll_s=0.1)).result()


def money(value: str | None) -> str:
    return "—" if value is None else "$" + format(Decimal(value), ",f")


def key_requests(api: httpx.Client, key_id: str) -> int:
    data = api.get("/observability/usage", params={"key_id": key_id, "granularity": "total"}).json()["data"]
    return int(data["totals"]["requests"])


def send_traffic(server: Server, api: httpx.Client, key: str, count: int) -> None:
    """`count` priced requests on `demo` with `key`, then wait until the cost API counts them."""
    key_id = "key_" + key.split("_")[1]
    before = key_requests(api, key_id)
    for i in range(count):
        answer = httpx.post(server.url + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                            json={"model": "demo", "messages": [{"role": "user", "content": f"usage {i}"}]}, timeout=10)
        assert answer.status_code == 200, answer.text
    poll(lambda: key_requests(api, key_id) >= before + count, "the requests in the cost API")


def window_of(page: Page) -> dict[str, str]:
    """The page's window, from its CSV link (the same start and end the tables were read for)."""
    href = page.get_by_role("link", name="Download as CSV").get_attribute("href") or ""
    query = parse_qs(urlsplit(href).query)
    return {"start": query["start"][0], "end": query["end"][0]}


def assert_totals_match(page: Page, api: httpx.Client, group_by: str) -> list[dict[str, Any]]:
    data = api.get("/observability/usage", params={**window_of(page), "group_by": group_by,
                                                   "granularity": "total"}).json()["data"]
    table = page.locator("#usage-totals")
    expect(table.locator("tbody tr")).to_have_count(len(data["rows"]))
    for row in [*data["rows"], {**data["totals"], group_by: "all"}]:
        name = "(none)" if row[group_by] is None else row[group_by]
        cells = table.locator(f'tr[data-group="{name}"]')
        expect(cells.locator("[data-col=requests]")).to_have_text(f"{row['requests']:,}")
        expect(cells.locator("[data-col=total_tokens]")).to_have_text(f"{row['total_tokens']:,}")
        expect(cells.locator("[data-col=prompt_tokens]")).to_have_text(f"{row['prompt_tokens']:,}")
        expect(cells.locator("[data-col=cost_usd]")).to_have_text(money(row["cost_usd"]))
        expect(cells.locator("[data-col=unpriced_requests]")).to_have_text(f"{row['unpriced_requests']:,}")
    return list(data["rows"])


def test_a_viewer_sees_the_cost_apis_totals_charts_top_spenders_and_csv(
        page: Page, server: Server, api: httpx.Client, keys: dict[str, str]) -> None:
    send_traffic(server, api, keys["inference"], 3)
    team = api.get("/governance/teams/team_default").json()["data"]["name"]

    sign_in(page, keys["viewer"], "/console/usage")
    page.goto("/console/usage?groupBy=team&window=24h")
    expect(page.get_by_role("heading", name="Usage & cost")).to_be_visible()
    rows = assert_totals_match(page, api, "team")
    mine = next(r for r in rows if r["team"] == team)
    assert mine["requests"] >= 3 and Decimal(mine["cost_usd"]) > 0

    cost_chart = page.locator("figure", has=page.locator("#usage-cost"))
    expect(page.locator("#usage-cost canvas")).to_have_count(1)  # drawn by uPlot
    expect(cost_chart.locator("details tbody tr")).to_have_count(24)  # hourly buckets of the last 24 hours
    expect(cost_chart.locator("thead th").filter(has_text=team)).to_have_count(1)
    expect(page.locator("figure", has=page.locator("#usage-tokens")).locator("details tbody tr")).to_have_count(24)

    spenders = page.locator("#usage-spenders")
    expect(spenders.locator(f'tr[data-group="{team}"]')).to_be_visible()
    expect(spenders.locator(f'tr[data-group="{team}"] [data-col=share]')).to_have_text(
        re.compile(r"^\d+\.\d%$"))
    shoot(page, "usage")
    assert page.problems.all() == []  # type: ignore[attr-defined]

    csv = page.request.get(page.get_by_role("link", name="Download as CSV").get_attribute("href") or "")
    assert csv.status == 200 and csv.headers["content-type"].startswith("text/csv")
    assert "attachment" in csv.headers["content-disposition"]
    lines = csv.text().splitlines()
    assert lines[0].startswith("bucket,team,requests,") and any(f",{team}," in line for line in lines[1:])

    page.get_by_label("Group by").select_option("model")
    page.get_by_label("Window").select_option("7d")
    page.get_by_label("Buckets").select_option("day")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("heading", name="Totals by model")).to_be_visible()
    expect(page.locator('#usage-totals tr[data-group="mock-model"]')).to_be_visible()
    assert_totals_match(page, api, "model")
    days = page.locator("figure", has=page.locator("#usage-cost")).locator("details tbody tr").count()
    assert days in (7, 8), days  # the UTC days the 7 days up to the end of this hour touch


def test_an_hourly_series_over_30_days_is_refused_beside_the_buckets_field(page: Page, keys: dict[str, str]) -> None:
    sign_in(page, keys["viewer"], "/console/usage")
    page.goto("/console/usage?groupBy=route&window=30d&granularity=hour&by=model")
    expect(page.locator("#f-granularity-err")).to_contain_text("7 days")
    expect(page.get_by_role("heading", name="Totals by route")).to_be_visible()  # the totals still show
    expect(page.get_by_role("heading", name="Top spenders by model")).to_be_visible()
    expect(page.locator("#usage-cost")).to_have_count(0)
    page.goto(f"/console/usage?groupBy=nope&window=1y&q={uuid.uuid4().hex}")
    expect(page.locator("#f-groupBy-err")).to_be_visible()
    expect(page.locator("#f-window-err")).to_be_visible()
    expect(page.get_by_role("heading", name="Totals by team")).to_be_visible()  # fell back to the defaults
