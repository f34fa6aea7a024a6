"""Training in the console: submit a job from the form (fields follow the job type; the API's field errors beside
the fields), watch it run to success with its loss chart, timeline and logs, cancel a long one with confirmation;
a viewer sees jobs but no submit or cancel, and the server refuses both anyway.

The jobs run for real on the embedded local runtime with the numpy reference trainer: a from-scratch job needs
only a ready dataset version and an architecture, so it is the cheapest job there is.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.gateway.console.conftest import shoot, sign_in

ARCH = {"contextLength": 8, "embeddingDim": 16, "hiddenDim": 64}
TERMINAL = ("succeeded", "failed", "cancelled")


def _data(answer: httpx.Response, status: int = 200) -> Any:
    assert answer.status_code == status, answer.text
    return answer.json()["data"]


@pytest.fixture(scope="module")
def dataset(api: httpx.Client) -> dict[str, str]:
    """A ready JSONL dataset (version 1) of short, regular lines a byte-level model learns fast."""
    name = f"cats-{uuid.uuid4().hex[:8]}"
    made = _data(api.post("/catalog/datasets", json={"name": name, "ownerTeam": "ml", "format": "jsonl"}), 201)
    colours = ["red", "green", "blue", "black", "white"]
    rows = [{"prompt": f"The {colours[i % 5]} cat number {i} says", "completion": f" meow {i % 7}."}
            for i in range(120)]
    body = "".join(json.dumps(r) + "\n" for r in rows).encode()
    version = _data(api.post(f"/catalog/datasets/{made['id']}/upload",
                             files={"file": (f"{name}.jsonl", body, "application/x-ndjson")}), 201)
    assert version["status"] == "ready", version
    return {"id": made["id"], "name": name}


def _long_job(api: httpx.Client, dataset: dict[str, str], prefix: str) -> dict[str, Any]:
    """A from-scratch job that would run for hours: something to cancel."""
    job: dict[str, Any] = _data(api.post("/training/jobs", json={
        "name": f"{prefix}-{uuid.uuid4().hex[:8]}", "jobType": "from_scratch", "architecture": ARCH,
        "dataset": {"datasetId": dataset["id"]}, "hyperparameters": {"steps": 1_000_000, "sleepPerStep": 0.05},
        "evaluateOnSuccess": False}), 201)
    return job


def _status_badge(page: Page) -> Any:
    return page.locator("dl.facts > div").filter(has=page.locator("dt", has_text="Status")).locator(".badge")


def _jobs_named(api: httpx.Client, name: str) -> list[dict[str, Any]]:
    items = _data(api.get("/training/jobs", params={"pageSize": 200}))["items"]
    return [j for j in items if j["name"] == name]


def test_a_developer_submits_a_from_scratch_job_and_watches_it_succeed(
        page: Page, keys: dict[str, str], api: httpx.Client, dataset: dict[str, str]) -> None:
    name = f"tiny-{uuid.uuid4().hex[:8]}"
    sign_in(page, keys["developer"], "/console/training")
    page.get_by_role("link", name="Submit a job").click()
    expect(page.get_by_role("heading", name="Submit a training job")).to_be_visible()
    page.get_by_role("textbox", name="Name", exact=True).fill(name)
    page.get_by_label("Job type").select_option("from_scratch")
    expect(page.get_by_label("Base model")).to_be_hidden()  # a from-scratch job starts from no model
    page.get_by_role("combobox", name="Dataset").select_option(dataset["id"])
    version = page.get_by_label("Version")
    expect(version.locator("option[value='1']")).to_have_count(1)  # htmx fetched this dataset's versions
    version.select_option("1")
    page.get_by_label("Context length").fill("8")
    page.get_by_label("Embedding size").fill("16")
    page.get_by_label("Hidden size").fill("64")
    page.get_by_label("Steps").fill("150")
    page.get_by_label("Learning rate").fill("0.003")
    page.get_by_label("Batch size").fill("64")
    page.get_by_label("Other hyperparameters").fill("logEvery=10\nseed=1")
    page.get_by_label("Environment").fill("GREETING=hello")
    shoot(page, "training-form")
    page.get_by_role("button", name="Submit job").click()

    page.wait_for_url(re.compile(r"/console/training/jobs/job_[^/]+$"))
    job_id = page.url.rsplit("/", 1)[-1]
    held = _data(api.get(f"/training/jobs/{job_id}"))
    assert (held["name"], held["jobType"], held["baseModelId"]) == (name, "from_scratch", None)
    assert held["dataset"] == {"datasetId": dataset["id"], "version": 1}
    assert held["architecture"] == ARCH
    assert held["hyperparameters"] == {"steps": 150, "learningRate": 0.003, "batchSize": 64, "logEvery": 10, "seed": 1}
    assert held["env"] == {"GREETING": "hello"} and held["resources"]["nodes"] == 1

    expect(_status_badge(page)).to_have_text("succeeded", timeout=120_000)  # htmx refreshes the page every 3 s
    done = _data(api.get(f"/training/jobs/{job_id}"))
    assert done["status"] == "succeeded" and done["resultModelId"]
    output = page.locator("dl.facts > div").filter(has=page.locator("dt", has_text="Output model")).get_by_role("link")
    expect(output).to_have_attribute("href", f"/console/catalog/models/{done['resultModelId']}")
    expect(page.locator("#timeline")).to_contain_text("succeeded")
    expect(page.get_by_role("row").filter(has_text="succeeded").first).to_be_visible()
    expect(page.locator("#job-logs")).to_contain_text("step 150/150")

    chart = page.locator("figure").filter(has=page.locator("#loss-train_loss"))
    chart.get_by_text("Data", exact=True).click()
    rows = chart.locator("details tbody tr")  # the data table (uPlot's legend is a table too)
    expect(rows.first).to_be_visible()
    steps = [int(t) for t in rows.locator("td:nth-child(1)").all_inner_texts()]
    losses = [float(t.replace(",", "")) for t in rows.locator("td:nth-child(2)").all_inner_texts()]
    assert len(losses) >= 10 and steps == sorted(steps), (steps, losses)
    assert losses[-1] < losses[0] * 0.9, losses  # decreasing, by and large
    expect(page.locator("#loss-train_loss canvas").first).to_be_visible()  # uPlot drew it
    shoot(page, "training-job")

    page.get_by_role("link", name="Back to jobs").click()
    page.get_by_label("Status").select_option("succeeded")
    page.get_by_role("button", name="Filter").click()
    row = page.get_by_role("row").filter(has_text=name)
    expect(row).to_contain_text("succeeded")
    expect(row).to_contain_text("from_scratch")
    expect(page.locator("#jobs")).not_to_have_attribute("hx-trigger", "every 3s")  # nothing active: no polling
    shoot(page, "training-jobs")
    assert page.problems.all() == []  # type: ignore[attr-defined]


def test_the_form_follows_the_job_type_and_shows_the_apis_field_errors(
        page: Page, keys: dict[str, str], api: httpx.Client, dataset: dict[str, str]) -> None:
    name = f"no-base-{uuid.uuid4().hex[:8]}"
    sign_in(page, keys["developer"], "/console/training/new")
    expect(page.get_by_label("Base model")).to_be_visible()  # a fine-tune by default
    expect(page.get_by_label("Context length")).to_be_hidden()
    expect(page.get_by_label("Nodes", exact=True)).to_be_hidden()
    page.get_by_label("Job type").select_option("distributed")
    expect(page.get_by_label("Nodes", exact=True)).to_be_visible()
    expect(page.get_by_label("Context length")).to_be_visible()
    page.get_by_label("Job type").select_option("finetune")
    expect(page.get_by_label("Context length")).to_be_hidden()

    page.get_by_role("textbox", name="Name", exact=True).fill(name)
    page.get_by_role("combobox", name="Dataset").select_option(dataset["id"])
    page.get_by_label("Environment").fill("HF_TOKEN=abc")
    page.get_by_role("button", name="Submit job").click()  # no base model: the API refuses, beside the field
    expect(page.locator("#f-baseModelId-err")).to_contain_text("base model")
    expect(page.locator("#f-env-err")).to_contain_text("secret")  # env.HF_TOKEN lands beside Environment
    expect(page.get_by_role("textbox", name="Name", exact=True)).to_have_value(name)  # what was typed is kept
    expect(page.get_by_label("Base model")).to_be_visible()
    shoot(page, "training-form-errors")

    page.get_by_label("Environment").fill("no equals sign")
    page.get_by_role("button", name="Submit job").click()  # checked before the API is asked
    expect(page.locator("#f-env-err")).to_contain_text("Line 1 is not key=value")
    assert _jobs_named(api, name) == []


def test_a_developer_cancels_a_running_job_after_confirming(
        page: Page, keys: dict[str, str], api: httpx.Client, dataset: dict[str, str]) -> None:
    job = _long_job(api, dataset, "long")
    sign_in(page, keys["developer"], f"/console/training/jobs/{job['id']}")
    expect(page.get_by_role("heading", name=f"Job {job['name']}")).to_be_visible()
    expect(_status_badge(page)).to_have_text("running", timeout=60_000)
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Cancel job").click()
    expect(_status_badge(page)).to_have_text("running")
    assert _data(api.get(f"/training/jobs/{job['id']}"))["status"] == "running"

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel job").click()
    expect(_status_badge(page)).to_have_text("cancelled", timeout=60_000)
    expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
    expect(page.locator("#timeline")).to_contain_text("cancel")
    held = _data(api.get(f"/training/jobs/{job['id']}"))
    assert held["status"] == "cancelled" and held["cancelRequested"], held


def test_a_viewer_sees_jobs_but_cannot_submit_or_cancel(
        page: Page, keys: dict[str, str], api: httpx.Client, dataset: dict[str, str]) -> None:
    job = _long_job(api, dataset, "viewed")
    try:
        sign_in(page, keys["viewer"], "/console/training")
        expect(page.get_by_role("heading", name="Training jobs")).to_be_visible()
        expect(page.get_by_role("link", name="Submit a job")).to_have_count(0)
        expect(page.locator("#jobs")).to_have_attribute("hx-trigger", "every 3s")  # a job is active: live list
        page.get_by_role("link", name=job["name"]).click()
        expect(page.get_by_role("heading", name=f"Job {job['name']}")).to_be_visible()
        expect(page.get_by_role("heading", name="Timeline")).to_be_visible()
        expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
        expect(page.get_by_role("heading", name="Logs")).to_have_count(0)  # logs need developer
        shoot(page, "training-job-viewer")

        csrf = page.locator("body").get_attribute("data-csrf") or ""
        forced = page.request.post(f"/console/training/jobs/{job['id']}/cancel", form={"csrf": csrf},
                                   max_redirects=0)
        assert forced.status == 403 and "Not allowed" in forced.text()
        assert _data(api.get(f"/training/jobs/{job['id']}"))["status"] not in TERMINAL
        name = f"forced-{uuid.uuid4().hex[:8]}"
        forced = page.request.post("/console/training/new", max_redirects=0, form={
            "csrf": csrf, "name": name, "jobType": "from_scratch", "dataset.datasetId": dataset["id"],
            "hyperparameters.steps": "5"})
        assert forced.status == 403 and "Not allowed" in forced.text()
        assert _jobs_named(api, name) == []
        page.goto("/console/training/new")
        expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    finally:
        _data(api.post(f"/training/jobs/{job['id']}/cancel"))
