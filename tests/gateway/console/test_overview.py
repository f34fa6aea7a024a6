"""The overview: the sections, this gateway's upstreams with their circuit state, and the admin's config reload."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from tests.gateway.console.conftest import shoot, sign_in


def test_an_admin_sees_the_upstreams_and_reloads_the_config(page: Page, keys: dict[str, str],
                                                            api: httpx.Client) -> None:
    sign_in(page, keys["admin"])
    upstreams = page.locator("table[aria-labelledby=upstreams-h]")
    expect(upstreams.get_by_role("row").filter(has_text="mock")).to_have_count(1)
    suggested = page.eval_on_selector_all("#gateway-routes option", "els => els.map(e => e.value)")
    assert {"demo", "second"} <= set(suggested)  # route fields suggest the gateway's routes (plus endpoints')
    shoot(page, "overview")
    before = api.get("/audit/logs", params={"action": "gateway.reload"}).json()["data"]["total"]
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Reload the configuration").click()
    expect(page.get_by_text("Configuration reloaded.")).to_be_visible()
    assert api.get("/audit/logs", params={"action": "gateway.reload"}).json()["data"]["total"] == before + 1


def test_below_admin_there_is_no_reload_and_a_forced_one_is_refused(page: Page, keys: dict[str, str]) -> None:
    sign_in(page, keys["operator"])
    expect(page.get_by_role("heading", name="This gateway's upstreams")).to_be_visible()
    expect(page.get_by_role("button", name="Reload the configuration")).to_have_count(0)
    csrf = page.locator("body").get_attribute("data-csrf") or ""
    forced = page.request.post("/console/gateway/reload", form={"csrf": csrf}, max_redirects=0)
    assert forced.status == 403
