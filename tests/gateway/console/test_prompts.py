"""Prompts and experiments in the console: a template created, broken, fixed and edited into version 2 from the
forms; an experiment on route `demo` created, started, fed real chat traffic, read with its confidence intervals,
rolled back, paused and stopped from its page; refusals in words; a viewer sees no buttons and is refused anyway."""

from __future__ import annotations

import asyncio
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from playwright.sync_api import Page, expect

from tests.gateway.console.conftest import Server, shoot, sign_in
from tests.polling import until

T = "/prompts/templates"
E = "/prompts/experiments"


def _template(name: str, content: str) -> dict[str, Any]:
    return {"name": name, "messages": [{"role": "system", "content": content}],
            "variables": [{"name": "product", "default": "llmops"}]}


def _accept(page: Page) -> None:
    page.once("dialog", lambda dialog: dialog.accept())


def test_an_operator_creates_a_template_sees_its_jinja_error_and_edits_it_into_version_2(
        page: Page, keys: dict[str, str], api: httpx.Client) -> None:
    name = f"support-{uuid.uuid4().hex[:8]}"
    sign_in(page, keys["operator"], "/console/prompts")
    expect(page.get_by_role("heading", name="Prompt templates")).to_be_visible()
    page.get_by_role("link", name="Create a template").click()
    page.get_by_label("Name").fill(name)
    page.get_by_label("Description").fill("Support assistant")
    page.get_by_label("Message 1 text").fill("You help {{ product  users.")  # a Jinja syntax error
    page.get_by_label("Variables (JSON)").fill('[{"name": "product", "default": "llmops"}]')
    page.get_by_role("button", name="Create template").click()
    error = page.locator("#f-messages-0-content-err")
    expect(error).to_be_visible()  # beside the text it concerns, in the API's words
    expect(error).not_to_be_empty()
    expect(page.get_by_label("Message 1 text")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Name")).to_have_value(name)  # what was typed is kept
    shoot(page, "prompts-template-form")
    assert api.get(f"{T}/{name}").status_code == 404  # nothing stored

    page.get_by_label("Message 1 text").fill("You help {{ product }} users.")
    page.get_by_role("button", name="Create template").click()
    expect(page.get_by_role("heading", name=f"Template {name}")).to_be_visible()
    expect(page.get_by_role("status")).to_have_text("Created.")
    held = api.get(f"{T}/{name}").json()["data"]
    assert held["version"] == 1 and held["source"] == "api" and held["document"]["description"] == "Support assistant"
    assert held["document"]["messages"] == [{"role": "system", "content": "You help {{ product }} users."}]
    assert held["document"]["variables"][0]["default"] == "llmops"

    page.get_by_role("link", name="Edit (saves version 2)").click()
    expect(page.get_by_label("Message 1 text")).to_have_value("You help {{ product }} users.")
    page.get_by_label("Message 1 text").fill("You help {{ product }} users. Be brief.")
    page.get_by_label("Message 2 role").select_option("user")
    page.get_by_label("Message 2 text").fill("Hello from {{ product }}")
    page.get_by_role("button", name="Save version 2").click()
    expect(page.get_by_role("status")).to_have_text("Saved as a new version.")
    versions = page.get_by_role("table").filter(has_text="Created")
    expect(versions.get_by_role("link", name="Version 2")).to_be_visible()
    expect(versions.get_by_role("link", name="Version 1")).to_be_visible()
    expect(page.get_by_label("Message 2 (user)")).to_have_text("Hello from {{ product }}")
    held = api.get(f"{T}/{name}").json()["data"]
    assert held["version"] == 2 and [m["role"] for m in held["document"]["messages"]] == ["system", "user"]
    listed = api.get(f"{T}/{name}/versions").json()["data"]
    assert [v["version"] for v in listed["items"]] == [2, 1]
    shoot(page, "prompts-template")

    page.get_by_role("link", name="Version 1").click()
    expect(page.get_by_role("heading", name=f"{name} · version 1")).to_be_visible()
    expect(page.get_by_label("Message 1 (system)")).to_have_text("You help {{ product }} users.")
    expect(page.get_by_text("the latest is version 2")).to_be_visible()
    shoot(page, "prompts-template-version")

    page.goto(f"/console/prompts?name={name}")
    row = page.get_by_role("row").filter(has_text=name)
    expect(row.get_by_role("cell").nth(1)).to_have_text("2")
    shoot(page, "prompts-templates")
    row.get_by_role("link", name=name).click()
    _accept(page)
    page.get_by_role("button", name="Delete template").click()
    expect(page.get_by_role("heading", name="Prompt templates")).to_be_visible()
    assert api.get(f"{T}/{name}").status_code == 404
    assert api.get(f"{T}/{name}/versions").json()["data"]["total"] == 2  # the history stays readable
    problems = page.problems.all()  # type: ignore[attr-defined]
    assert not [p for p in problems if "/console/prompts/new" not in p or "422" not in p], problems  # the refusal only


def _send_traffic(server: Server, count: int) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for i in range(count):
            words = " ".join(["word"] * (1 + (i * 7) % 23))  # prompt sizes vary, so cost per request does too
            answer = client.post("/v1/chat/completions", json={
                "model": "demo", "messages": [{"role": "user", "content": f"Question {i}: {words}"}]})
            assert answer.status_code == 200, answer.text


def _results_with_data(api: httpx.Client, experiment_id: str, server: Server, at_least: int) -> dict[str, Any]:
    """Chat traffic on `demo` until both variants have `at_least` requests in the results (the gateway obeys a
    start within about a second, and usage records land after a flush)."""
    def probe() -> dict[str, Any] | None:
        _send_traffic(server, 12)
        data: dict[str, Any] = api.get(f"{E}/{experiment_id}/results").json()["data"]
        counts = [v["requests"] for v in data["variants"]]
        return data if len(counts) == 2 and min(counts) >= at_least else None

    async def enough() -> dict[str, Any] | None:
        return await asyncio.to_thread(probe)

    # in a thread of its own: Playwright's sync API keeps an event loop running in this one
    waiting = until(enough, timeout_s=40, what="requests in both variants", poll_s=0.1)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, waiting).result()


def test_an_experiment_on_demo_runs_from_its_page_and_shows_results_with_intervals(
        page: Page, server: Server, keys: dict[str, str], api: httpx.Client) -> None:
    suffix = uuid.uuid4().hex[:8]
    plain, brief = f"plain-{suffix}", f"brief-{suffix}"
    for name, text in ((plain, "You help {{ product }} users."),
                       (brief, "You help {{ product }} users. Answer in as few words as you can, politely.")):
        assert api.post(T, json={"document": _template(name, text)}).status_code == 201
    experiment_id = f"tone-{suffix}"
    sign_in(page, keys["operator"], "/console/experiments")
    page.get_by_role("link", name="Create an experiment").click()
    expect(page.get_by_label("Variants (JSON)")).to_contain_text('"control"')  # an example to start from
    page.get_by_label("Experiment id").fill(experiment_id)
    page.get_by_label("Title").fill("Briefer answers")
    page.get_by_label("Route").fill("demo")
    page.get_by_label("Variants (JSON)").fill(
        f'[{{"name": "control", "template": "{plain}@1"}}, {{"name": "brief", "template": "{brief}@7"}}]')
    page.get_by_label("Metric").select_option("cost_per_request_usd")
    page.get_by_label("Guardrails (JSON)").fill('[{"metric": "error_rate", "max": 0.5, "min_requests": 5}]')
    page.get_by_role("button", name="Create experiment").click()  # version 7 does not exist: refused beside it
    expect(page.locator("#f-variants-err")).to_contain_text("variants[1].template")
    shoot(page, "experiments-form")
    assert api.get(f"{E}/{experiment_id}").status_code == 404

    page.get_by_label("Variants (JSON)").fill(
        f'[{{"name": "control", "template": "{plain}@1"}}, {{"name": "brief", "template": "{brief}"}}]')
    page.get_by_role("button", name="Create experiment").click()
    expect(page.get_by_role("heading", name=f"Experiment {experiment_id}: Briefer answers")).to_be_visible()
    held = api.get(f"{E}/{experiment_id}").json()["data"]
    assert held["state"] == "draft" and held["route"] == "demo" and held["document"]["metric"] == "cost_per_request_usd"
    assert [v["template"] for v in held["document"]["variants"]] == [f"{plain}@1", brief]
    try:
        page.get_by_label("Reason (optional)").fill("console test")
        _accept(page)
        page.get_by_role("button", name="Start").click()
        expect(page.get_by_role("status")).to_have_text("Experiment started.")
        expect(page.locator("p", has_text="State:").locator(".badge").first).to_have_text("running")
        assert api.get(f"{E}/{experiment_id}").json()["data"]["state"] == "running"
        events = api.get(f"{E}/{experiment_id}/events").json()["data"]["items"]
        assert events[0]["kind"] == "started" and events[0]["detail"]["reason"] == "console test"

        results = _results_with_data(api, experiment_id, server, at_least=8)
        page.get_by_role("link", name="Results").click()
        expect(page.get_by_role("heading", name=f"Experiment {experiment_id}: results")).to_be_visible()
        expect(page.locator("#metric-chart canvas")).to_be_visible()  # uPlot drew the bars
        variants = page.get_by_role("table").filter(has_text="Fallbacks")
        expect(variants.get_by_role("row").filter(has_text="control")).to_have_count(1)
        expect(variants.get_by_role("row").filter(has_text="brief")).to_have_count(1)
        compared = page.get_by_role("table", name="brief against control")
        cost = compared.get_by_role("row").filter(has_text="cost_per_request_usd")
        expect(cost.locator(".interval")).to_have_text(re.compile(r"^\[-?[\d.,]+, -?[\d.,]+\]$"))
        expect(compared.get_by_role("row").filter(has_text="prompt_tokens").locator(".interval")).to_be_visible()
        api_cost = next(c for c in results["comparisons"] if c["metric"] == "cost_per_request_usd")
        assert api_cost["ciLow"] is not None and api_cost["ciLow"] <= api_cost["diff"] <= api_cost["ciHigh"]
        expect(page.get_by_role("row").filter(has_text="error_rate").filter(has_text="not evaluated").or_(
            page.get_by_role("row").filter(has_text="error_rate").filter(has_text="ok")).first).to_be_visible()
        shoot(page, "experiments-results")

        page.get_by_role("link", name="Overview").click()
        _accept(page)
        page.get_by_role("button", name="Roll back").click()
        expect(page.get_by_role("status")).to_contain_text("Rolled back")
        assert api.get(f"{E}/{experiment_id}").json()["data"]["runtime"]["rolled_back"] is True
        _accept(page)
        page.get_by_role("button", name="Pause").click()
        expect(page.get_by_role("status")).to_have_text("Experiment paused.")
        assert api.get(f"{E}/{experiment_id}").json()["data"]["state"] == "paused"
        expect(page.get_by_role("button", name="Resume")).to_be_visible()
        _accept(page)
        page.get_by_role("button", name="Stop").click()
        expect(page.get_by_role("status")).to_have_text("Experiment stopped.")
        assert api.get(f"{E}/{experiment_id}").json()["data"]["state"] == "stopped"
        history = page.get_by_role("table").filter(has_text="Message")
        for kind in ("created", "started", "rolled_back", "paused", "stopped"):
            expect(history.get_by_role("cell", name=kind, exact=True)).to_be_visible()
        shoot(page, "experiments-detail")
    finally:
        if api.get(f"{E}/{experiment_id}").json()["data"]["state"] in ("running", "paused"):
            api.post(f"{E}/{experiment_id}/stop")  # route demo free for the next run of this test

    page.get_by_role("link", name="← Experiments").click()
    row = page.get_by_role("row").filter(has_text=experiment_id)
    expect(row.get_by_text("stopped")).to_be_visible()
    shoot(page, "experiments-list")
    # a template a live experiment names cannot be deleted: the refusal is shown in words, with the experiment
    page.goto(f"/console/prompts/t/{brief}")
    _accept(page)
    page.get_by_role("button", name="Delete template").click()
    expect(page.get_by_role("alert")).to_contain_text(f"is used by experiment(s) {experiment_id}")
    assert api.get(f"{T}/{brief}").status_code == 200


def test_a_refused_action_is_said_on_the_page_and_the_declaration_is_edited_then_deleted(
        page: Page, keys: dict[str, str], api: httpx.Client) -> None:
    experiment_id = f"other-{uuid.uuid4().hex[:8]}"
    document = {"id": experiment_id, "route": f"route-{experiment_id}", "variants": [{"name": "a"}, {"name": "b"}]}
    assert api.post(E, json={"document": document}).status_code == 201
    sign_in(page, keys["operator"], f"/console/experiments/e/{experiment_id}")
    api.post(f"{E}/{experiment_id}/start")  # someone else started it meanwhile: the page still offers Start
    _accept(page)
    page.get_by_role("button", name="Start").click()
    expect(page.get_by_role("alert")).to_contain_text("Cannot start an experiment that is running")
    _accept(page)
    page.get_by_role("button", name="Stop").click()  # the refusal page shows the experiment as it is now
    expect(page.get_by_role("status")).to_have_text("Experiment stopped.")
    assert api.get(f"{E}/{experiment_id}").json()["data"]["state"] == "stopped"

    page.get_by_role("link", name="Edit the declaration").click()  # the next revision; the state is kept
    page.get_by_label("Title").fill("Renamed")
    page.get_by_label("Allocation").fill("2")  # out of range: the API's words beside the field
    page.get_by_role("button", name="Save revision 2").click()
    expect(page.locator("#f-allocation-err")).to_be_visible()
    page.get_by_label("Allocation").fill("0.5")
    page.get_by_role("button", name="Save revision 2").click()
    expect(page.get_by_role("status")).to_have_text("Saved as a new revision.")
    held = api.get(f"{E}/{experiment_id}").json()["data"]
    assert held["revision"] == 2 and held["document"]["name"] == "Renamed" and held["document"]["allocation"] == 0.5
    assert held["state"] == "stopped"
    _accept(page)
    page.get_by_role("button", name="Delete experiment").click()
    expect(page.get_by_role("heading", name="Experiments")).to_be_visible()
    assert api.get(f"{E}/{experiment_id}").status_code == 404


def test_a_viewer_sees_no_buttons_and_forced_posts_are_refused(page: Page, keys: dict[str, str],
                                                               api: httpx.Client) -> None:
    suffix = uuid.uuid4().hex[:8]
    name, experiment_id = f"viewed-{suffix}", f"viewed-{suffix}"
    assert api.post(T, json={"document": _template(name, "Hi {{ product }}")}).status_code == 201
    document = {"id": experiment_id, "route": f"route-{suffix}", "variants": [{"name": "a"}, {"name": "b"}]}
    assert api.post(E, json={"document": document}).status_code == 201
    sign_in(page, keys["viewer"], "/console/prompts")
    expect(page.get_by_role("link", name=name)).to_be_visible()
    expect(page.get_by_role("link", name="Create a template")).to_have_count(0)
    page.goto(f"/console/prompts/t/{name}")
    expect(page.get_by_role("heading", name=f"Template {name}")).to_be_visible()
    expect(page.get_by_role("link", name=re.compile("^Edit"))).to_have_count(0)
    expect(page.get_by_role("button")).to_have_text(["Sign out"])  # no Delete
    page.goto("/console/experiments")
    expect(page.get_by_role("link", name=experiment_id)).to_be_visible()
    expect(page.get_by_role("link", name="Create an experiment")).to_have_count(0)
    page.goto(f"/console/experiments/e/{experiment_id}")
    expect(page.get_by_role("heading", name=f"Experiment {experiment_id}")).to_be_visible()
    expect(page.get_by_role("button")).to_have_text(["Sign out"])  # no Start, Delete, ...
    expect(page.get_by_role("link", name="Edit the declaration")).to_have_count(0)
    page.get_by_role("link", name="Results").click()
    expect(page.get_by_text("Not computed yet")).to_be_visible()  # a draft has no data
    assert not page.problems.all()  # type: ignore[attr-defined]

    csrf = page.locator("body").get_attribute("data-csrf") or ""
    forced = [
        page.request.post(f"/console/experiments/e/{experiment_id}/act/start", form={"csrf": csrf}, max_redirects=0),
        page.request.post(f"/console/experiments/e/{experiment_id}/delete", form={"csrf": csrf}, max_redirects=0),
        page.request.post(f"/console/prompts/t/{name}/delete", form={"csrf": csrf}, max_redirects=0),
        page.request.post(f"/console/prompts/t/{name}/edit", max_redirects=0, form={
            "csrf": csrf, "messages.0.role": "system", "messages.0.content": "changed"}),
        page.request.post("/console/prompts/new", max_redirects=0, form={
            "csrf": csrf, "name": f"x-{suffix}", "messages.0.role": "system", "messages.0.content": "x"}),
    ]
    for answer in forced:
        assert answer.status == 403 and "Not allowed" in answer.text(), (answer.url, answer.status)
    assert api.get(f"{E}/{experiment_id}").json()["data"]["state"] == "draft"
    assert api.get(f"{T}/{name}").json()["data"]["version"] == 1
    assert api.get(f"{T}/x-{suffix}").status_code == 404
