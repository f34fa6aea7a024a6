"""`/dashboard` in headless Chromium against the real gateway, control plane and cost API.

Known rows go into `usage_rollups` (what the usage writer maintains); the page must draw exactly them:
one series per team with one point per bucket, the exact totals, names shown as text. A screenshot is
saved under `$LLMOPS_TEST_ARTIFACTS` (default `artifacts/` at the repository root) for a human to look at.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from playwright.async_api import ConsoleMessage, Page, async_playwright
from playwright.async_api import TimeoutError as PlaywrightTimeout
from sqlalchemy import insert

from adapters.adminapi.testing import serve_asgi
from adapters.dataplane import usage_rollups
from adapters.store import Store
from gateway.app import create_app
from gateway.config import decode_config
from gateway.dashboard import dashboard_handlers

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (./dev test installs it; Playwright never downloads one)")
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
KEY = "dashboard-test-admin-key"
HOSTILE = "<img src=x onerror=alert(1)>"
REPO = Path(__file__).resolve().parents[3]


def _artifacts() -> Path:
    path = Path(os.environ.get("LLMOPS_TEST_ARTIFACTS") or REPO / "artifacts") / "dashboard"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _row(hour: datetime, team: str, model: str, route: str, prompt: int, completion: int, cost: str,
         *, requests: int = 1, unpriced: int = 0) -> dict[str, Any]:
    return {"hour": hour, "team": team, "key_id": "", "route": route, "model": model, "provider": "p",
            "variant": "", "endpoint": "chat", "requests": requests, "errors": 0, "unpriced_requests": unpriced,
            "estimated_requests": 0, "prompt_tokens": prompt, "completion_tokens": completion,
            "cached_read_tokens": 0, "cache_write_tokens": 0, "reasoning_tokens": 0, "cost_usd": Decimal(cost),
            "gpu_usd_per_hour": Decimal(0), "latency_s_sum": 0.1 * requests}


def _rows(h0: datetime) -> list[dict[str, Any]]:
    """`h0` is the current UTC hour. All within the last 24 h but the one 50 h back (7-day view only)."""
    hour = lambda n: h0 - timedelta(hours=n)  # noqa: E731
    return [
        _row(hour(1), "alpha", "gpt-4o", "chat", 1000, 200, "0.001234"),
        _row(hour(5), "alpha", "llama", "chat", 300, 50, "0.5"),
        _row(hour(2), "beta", "gpt-4o", "demo", 2000, 400, "1.25", requests=3),
        _row(hour(4), "beta", "mystery", "demo", 100, 20, "0", requests=2, unpriced=2),  # no price: cost null
        _row(hour(3), HOSTILE, "llama", "demo", 10, 5, "0.000001"),
        _row(hour(50), "alpha", "gpt-4o", "chat", 5000, 0, "2"),
    ]


@pytest.fixture
async def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[str, Store]]:
    """The gateway on a loopback port with the control plane on SQLite: (base URL, its store)."""
    monkeypatch.setenv("LLMOPS_ADMIN_KEY", KEY)
    monkeypatch.delenv("LLMOPS_DATABASE_URL", raising=False)  # SQLite in data_dir
    # Metering off: the rollups hold exactly the rows the test inserts, not the page's own requests too.
    cfg = {"server": {"log_level": "warning"}, "metering": {"enabled": False},
           "control": {"data_dir": str(tmp_path), "modules": ["observability"]},
           "providers": [{"name": "mock", "kind": "openai", "base_url": "builtin:mock"}],
           "routes": [{"name": "demo", "targets": [{"provider": "mock", "model": "m"}]}]}
    app = create_app(decode_config(cfg))
    async with serve_asgi(app, lifespan="on") as url:
        yield url, app.state.control_plane.store


async def _series(page: Page, chart: str) -> dict[str, dict[str, str]]:
    """{series name: {bucket ISO: data-value}} as drawn in `chart`'s SVG."""
    return await page.eval_on_selector_all(f"#{chart} svg g.series", """groups => Object.fromEntries(groups.map(g =>
        [g.getAttribute("data-name"), Object.fromEntries([...g.querySelectorAll(".point")].map(p =>
            [p.getAttribute("data-bucket"), p.getAttribute("data-value")]))]))""")


async def _loaded(page: Page, kind: str = "ok") -> str:
    """The status line once the page reports `kind`; on a timeout, what it said instead."""
    try:
        await page.wait_for_selector(f"#status[data-kind={kind}]", timeout=10_000)
    except PlaywrightTimeout:
        status = await page.eval_on_selector("#status", "s => [s.dataset.kind, s.textContent]")
        raise AssertionError(f"the page did not reach {kind!r}; its status: {status}") from None
    return await page.text_content("#status") or ""


async def test_dashboard_draws_the_rollups_it_is_sent(gateway: tuple[str, Store]) -> None:
    url, store = gateway
    h0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    iso = lambda n: (h0 - timedelta(hours=n)).strftime("%Y-%m-%dT%H:00:00.000Z")  # noqa: E731
    errors: list[str] = []
    dialogs: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            errors.append(msg.text)

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", on_console)
            page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
            page.on("dialog", lambda d: dialogs.append(d.message))
            await page.goto(url + "/dashboard")
            assert "Paste an admin API key" in await _loaded(page, "info")  # no key yet: nothing fetched

            # A wrong key: a clear 401 message, and the key is not kept.
            await page.fill("#key", "not-the-key")
            await page.click("#key-form button[type=submit]")
            assert "rejected this key (401)" in await _loaded(page, "error")
            assert await page.evaluate("sessionStorage.length") == 0
            assert errors and all("401" in e for e in errors)  # only the browser's own "failed to load" lines
            errors.clear()

            # The right key, no usage yet.
            await page.fill("#key", KEY)
            await page.click("#key-form button[type=submit]")
            assert "No usage recorded" in await _loaded(page, "empty")
            assert await page.evaluate("Object.values(sessionStorage)") == [KEY]  # this tab only

            async with store.begin() as conn:
                await conn.execute(insert(usage_rollups), _rows(h0))
            await page.click("#refresh")
            await _loaded(page)

            # Totals: exact money and tokens of the last 24 h (the row 50 h back is outside).
            totals = {k: await page.text_content(f"[data-stat={k}] .value")
                      for k in ("cost_usd", "total_tokens", "requests", "unpriced_requests")}
            assert totals == {"cost_usd": "$1.751235", "total_tokens": "4,085", "requests": "8",
                              "unpriced_requests": "2"}

            # One series per team, 24 hourly points each, the values where the rows are and 0 elsewhere.
            cost = await _series(page, "cost-chart")
            tokens = await _series(page, "tokens-chart")
            assert set(cost) == set(tokens) == {"alpha", "beta", HOSTILE}
            assert all(len(points) == 24 for points in [*cost.values(), *tokens.values()])
            assert {b: v for b, v in cost["alpha"].items() if v != "0"} == {iso(1): "0.001234", iso(5): "0.5"}
            assert {b: v for b, v in cost["beta"].items() if v != "0"} == {iso(2): "1.25"}  # unpriced hour: 0
            assert {b: v for b, v in tokens["beta"].items() if v != "0"} == {iso(2): "2400", iso(4): "120"}
            assert {b: v for b, v in tokens[HOSTILE].items() if v != "0"} == {iso(3): "15"}
            assert await page.get_attribute("#cost-chart svg", "data-kind") == "bars"
            tip = await page.text_content(f'#cost-chart g.series[data-name="beta"] [data-bucket="{iso(2)}"] title')
            assert tip is not None and "$1.25" in tip and "3 requests" in tip

            # The hostile name is text everywhere: in the legend and the table, never markup.
            assert HOSTILE in await page.inner_text("#cost-legend")
            top = await page.eval_on_selector_all("#top tbody tr",
                                                  "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
            assert [r[1:3] for r in top] == [["beta", "$1.25"], ["alpha", "$0.501234"], [HOSTILE, "$0.000001"]]
            assert await page.locator("img").count() == 0 and dialogs == []

            shot = _artifacts() / "dashboard-24h-by-team.png"
            await page.screenshot(path=str(shot), full_page=True)
            print(f"dashboard screenshot: {shot}")

            # By model and by route: the same window, other series.
            await page.click("[data-dim=model]")
            await _loaded(page)
            assert set(await _series(page, "tokens-chart")) == {"gpt-4o", "llama", "mystery"}
            await page.click("[data-dim=route]")
            await _loaded(page)
            assert set(await _series(page, "cost-chart")) == {"chat", "demo"}
            assert page.url.endswith("/dashboard#range=24h&granularity=hour&by=route")  # bookmarkable

            # Seven days by day: seven points per series, and the older row now counts.
            await page.select_option("#range", "7d")
            await _loaded(page)
            assert await page.text_content("[data-stat=cost_usd] .value") == "$3.751235"
            assert all(len(points) == 7 for points in (await _series(page, "cost-chart")).values())
            await page.screenshot(path=str(_artifacts() / "dashboard-7d-by-route.png"), full_page=True)

            # A bookmarked view: thirty days by model.
            await page.evaluate("location.hash = '#range=30d&granularity=day&by=model'")
            await page.wait_for_selector("[data-dim=model][aria-pressed=true]")
            await _loaded(page)
            assert await page.input_value("#range") == "30d"
            drawn = await _series(page, "cost-chart")
            assert set(drawn) == {"gpt-4o", "llama", "mystery"} and all(len(p) == 30 for p in drawn.values())
            assert await page.is_disabled("#granularity option[value=hour]")  # the API serves hours a week at a time

            # A hand-made bookmark asking thirty days by hour gets days (the cost API would refuse 720 hours).
            await page.evaluate("location.hash = '#range=30d&granularity=hour&by=team'")
            await page.wait_for_selector("[data-dim=team][aria-pressed=true]")
            await _loaded(page)
            assert await page.input_value("#granularity") == "day"
            assert all(len(p) == 30 for p in (await _series(page, "cost-chart")).values())
            assert errors == [] and dialogs == []
        finally:
            await browser.close()



async def test_money_stays_exact_and_many_series_fold_into_other() -> None:
    """The page's own arithmetic (series.js), run in the browser: decimal strings add as integers, never floats."""
    async with serve_asgi(Litestar(route_handlers=dashboard_handlers())) as url, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await browser.new_page()
            await page.goto(url + "/dashboard")
            got = await page.evaluate("""async () => {
                const m = await import("/dashboard/series.js");
                const buckets = [Date.UTC(2026, 11, 1, 0), Date.UTC(2026, 11, 1, 1)];
                const rows = Array.from({length: 10}, (_, n) => ({bucket: "2026-12-01T01:00:00Z", team: `t${n}`,
                    cost_usd: String((n + 1) / 100), total_tokens: 10 * (n + 1), requests: 1, unpriced_requests: 0}));
                rows.push({bucket: "2026-12-01T00:00:00Z", team: null, cost_usd: null, total_tokens: 7,
                           requests: 2, unpriced_requests: 2});
                const series = m.pivot(rows, "team", buckets);
                return {
                    sum: m.formatUsd(m.parseUsd("0.1") + m.parseUsd("0.2")),
                    big: m.formatUsd(m.parseUsd("1234567.000000001")),
                    plain: ["2.50", "0", "-0.5"].map(v => m.plainUsd(m.parseUsd(v))),
                    ints: [m.formatInt(1234567), m.formatInt(0), m.formatInt(-1000)],
                    names: series.map(s => s.other ? `other:${s.members}` : s.name),
                    other: [m.plainUsd(series[7].totalCost), series[7].tokens],
                    none: [m.displayName(null), m.displayName("")],
                    window: m.windowFor("7d", "day", Date.UTC(2026, 11, 1, 13, 5)).buckets.length,
                    edge: m.windowFor("24h", "hour", Date.UTC(2026, 11, 1, 13)).start === Date.UTC(2026, 10, 30, 14),
                };
            }""")
            assert got == {
                "sum": "$0.30", "big": "$1,234,567.000000001", "plain": ["2.5", "0", "-0.5"],
                "ints": ["1,234,567", "0", "-1,000"],
                # largest cost first; the 3 smallest priced teams and the unpriced one (no team) fold into "other"
                "names": ["t9", "t8", "t7", "t6", "t5", "t4", "t3", "other:4"],
                "other": ["0.06", [7, 60]], "none": ["(none)", "(none)"], "window": 7, "edge": True,
            }
        finally:
            await browser.close()
