"""Evaluation in the console: a run started from the form (the API's field errors beside the fields) and watched
until it completes, its metrics as the API holds them, the CSV export through the console; two runs compared
with the recommendation; a reviewer's score from the task page; cancel with confirmation; a viewer sees no
button that changes anything and the server refuses anyway.

The dataset is uploaded through the catalog API; every run's target is the embedded default's route `demo`
(the built-in mock upstream), called by the evaluation worker through the gateway's data plane.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from loadtests.eval_bench import data, upload_dataset
from tests.gateway.console.conftest import shoot, sign_in
from tests.polling import until

ROWS = [{"question": f"[q{i}] What does the double answer first?", "answer": "mock token reply"} for i in range(4)]
ACTIVE = ("waiting", "queued", "running", "cancelling")
TERMINAL = ("succeeded", "failed", "cancelled")
RUN_URL = re.compile(r".*/console/evaluation/runs/(run_[A-Za-z0-9]+)$")


def _body(name: str, dataset_id: str, **over: Any) -> dict[str, Any]:
    return {"name": name, "targets": [{"kind": "route", "id": "demo"}], "dataset": {"datasetId": dataset_id},
            "mapping": {"input": "question", "reference": "answer"}, "concurrency": 4, **over}


def _poll(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """`tests.polling.until` over a blocking check, in a thread of its own (Playwright's loop owns this one)."""
    async def probe() -> Any:
        return await asyncio.to_thread(check)

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, until(probe, timeout_s, what, poll_s=0.3)).result()


def _finished(api: httpx.Client, run_id: str, timeout_s: float = 150) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        run: dict[str, Any] = data(api.get(f"/evaluation/runs/{run_id}"))
        return run if run["status"] in TERMINAL else None

    run: dict[str, Any] = _poll(check, timeout_s, f"run {run_id} to finish")
    assert run["status"] == "succeeded", run
    return run


@dataclass(frozen=True)
class Prepared:
    dataset_id: str
    baseline: str
    candidate: str
    human: str
    reviewer_key: str
    reviewer_name: str


@pytest.fixture(scope="module")
def prepared(api: httpx.Client) -> Prepared:
    """A tiny dataset and, started at once so they run while the first test types: two runs to compare (answers
    of 2 and of 4 tokens) and a human-review run assigned to a fresh viewer key."""
    tag = uuid.uuid4().hex[:8]
    dataset_id = upload_dataset(api, f"console-eval-{tag}", ROWS)
    reviewer_name = f"reviewer-{tag}"
    reviewer = data(api.post("/governance/keys", json={"name": reviewer_name, "teamId": "team_default",
                                                       "roles": ["viewer"]}), 201)
    started = [data(api.post("/evaluation/runs", json=body), 201)["id"] for body in (
        _body(f"base-{tag}", dataset_id, params={"max_tokens": 2}),
        _body(f"cand-{tag}", dataset_id, params={"max_tokens": 4}),
        _body(f"human-{tag}", dataset_id, type="human",
              review={"reviewers": [reviewer_name], "ratersPerItem": 1, "rubric": "Is the answer on topic?"}))]
    return Prepared(dataset_id=dataset_id, baseline=started[0], candidate=started[1], human=started[2],
                    reviewer_key=reviewer["key"], reviewer_name=reviewer_name)


def test_a_developer_starts_a_run_from_the_form_and_sees_it_complete(page: Page, keys: dict[str, str],
                                                                     api: httpx.Client, prepared: Prepared) -> None:
    name = f"form-run-{uuid.uuid4().hex[:8]}"
    sign_in(page, keys["developer"], "/console/evaluation")
    page.get_by_role("link", name="New run").first.click()
    page.get_by_label("Name").fill(name)
    page.locator("#f-targets-0-id").fill("demo")  # labelled "Target *"
    page.locator("#f-dataset-datasetId").select_option(prepared.dataset_id)
    expect(page.locator("#dataset-info")).to_contain_text("question")  # the version's columns, fetched on change
    page.get_by_label("Input column").fill("no_such_column")
    page.get_by_label("Reference column").fill("answer")
    page.get_by_label("Generation parameters").fill('{"max_tokens": 4}')
    page.get_by_role("button", name="Start run").click()
    expect(page.locator("#f-mapping-input-err")).to_be_visible()  # the API's 422, beside the field it names
    expect(page.get_by_label("Name")).to_have_value(name)  # what was typed is kept
    expect(page.locator("#f-dataset-datasetId")).to_have_value(prepared.dataset_id)
    shoot(page, "evaluation-new-run")
    assert not [r for r in data(api.get("/evaluation/runs", params={"pageSize": 200}))["items"] if r["name"] == name]

    page.get_by_label("Input column").fill("question")
    page.get_by_role("button", name="Start run").click()
    page.wait_for_url(RUN_URL)
    match = RUN_URL.match(page.url)
    assert match is not None
    run_id = match.group(1)
    expect(page.locator("#run-status")).to_have_text("succeeded", timeout=150_000)  # the page refreshes itself
    run = data(api.get(f"/evaluation/runs/{run_id}"))
    assert run["status"] == "succeeded" and run["name"] == name and run["targets"][0]["route"] == "demo"
    f1 = run["metrics"]["0"]["token_f1"]
    expect(page.locator("#m-0-token_f1")).to_contain_text(f"{f1['value']:.3f} [{f1['ciLow']:.3f}, {f1['ciHigh']:.3f}]")
    expect(page.locator("#run")).to_contain_text("4/4")
    expect(page.locator("figure.chart-box").first).to_be_visible()
    shoot(page, "evaluation-run")

    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    saved = download.value.path()
    exported = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8"))))
    assert [int(r["index"]) for r in exported] == [0, 1, 2, 3]
    assert [r["input"] for r in exported] == [r["question"] for r in ROWS]
    assert {r["route"] for r in exported} == {"demo"} and all(r["token_f1"] for r in exported)
    href = page.get_by_role("link", name="Export CSV").get_attribute("href") or ""
    answer = page.request.get(href)
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/csv")
    assert answer.headers["content-disposition"] == f'attachment; filename="{run_id}.csv"'
    as_json = page.request.get(page.get_by_role("link", name="Export JSON").get_attribute("href") or "")
    assert as_json.headers["content-type"].startswith("application/json") and len(as_json.json()) == 4

    page.get_by_role("link", name="Runs", exact=True).click()
    row = page.get_by_role("row").filter(has_text=name)
    expect(row).to_contain_text("succeeded")
    expect(row).to_contain_text("4/4")
    shoot(page, "evaluation-runs")


def test_two_runs_compare_side_by_side_with_the_recommendation(page: Page, keys: dict[str, str], api: httpx.Client,
                                                                prepared: Prepared) -> None:
    base, cand = _finished(api, prepared.baseline), _finished(api, prepared.candidate)
    sign_in(page, keys["viewer"], "/console/evaluation?status=succeeded")
    page.get_by_label(f"Compare {cand['name']}").check()
    page.get_by_label(f"Compare {base['name']}").check()
    page.get_by_role("button", name="Compare selected").click()
    page.wait_for_url(re.compile(r".*/console/evaluation/compare\?.*"))

    def matches_the_api(order: list[str]) -> None:
        held = data(api.get("/evaluation/runs/compare", params={"runIds": ",".join(order)}))
        names = {base["id"]: base["name"], cand["id"]: cand["name"]}
        arms = page.locator("#arms")
        expect(arms.get_by_role("row").nth(1)).to_contain_text(f"baseline {names[order[0]]}")
        expect(arms.get_by_role("row").nth(2)).to_contain_text(f"candidate {names[order[1]]}")
        verdict = "Promote the candidate" if held["recommendation"]["promote"] else "Do not promote the candidate"
        expect(page.locator("#recommendation")).to_contain_text(verdict)
        for reason in held["recommendation"]["reasons"]:
            expect(page.locator("#recommendation")).to_contain_text(reason)
        f1 = next(m for m in held["metrics"] if m["metric"] == "token_f1")
        expect(page.locator("#cmp-token_f1 td.diff")).to_contain_text(f"{f1['difference']['value']:.4f}")

    matches_the_api([cand["id"], base["id"]])  # the list is newest first: the candidate was ticked first
    shoot(page, "evaluation-compare")
    page.get_by_role("link", name="Swap baseline and candidate").click()
    matches_the_api([base["id"], cand["id"]])


def test_a_reviewer_scores_an_output_from_the_task_page(page: Page, api: httpx.Client, prepared: Prepared) -> None:
    _finished(api, prepared.human)
    sign_in(page, prepared.reviewer_key, f"/console/evaluation/runs/{prepared.human}")
    page.get_by_role("link", name="Review tasks", exact=True).click()
    expect(page.locator("section.review-task")).to_have_count(4)
    task = page.locator("#task-0-0")
    expect(task).to_contain_text("Is the answer on topic?")
    task.get_by_role("button", name="Submit score").click()  # no score chosen
    expect(page.locator("#score-0-0-err")).to_have_text("Required")
    page.locator("#task-0-0").get_by_label("4", exact=True).check()
    page.locator("#task-0-0").get_by_label("Comment on item 0").fill("on topic, a little short")
    page.locator("#task-0-0").get_by_role("button", name="Submit score").click()
    expect(page.get_by_role("status")).to_contain_text("Saved your score for item 0")
    expect(page.locator("#task-0-0")).to_contain_text("rated")
    shoot(page, "evaluation-review")

    tasks = data(api.get(f"/evaluation/runs/{prepared.human}/human-review/tasks",
                         params={"reviewer": prepared.reviewer_name}))["items"]
    assert [t["done"] for t in tasks] == [True, False, False, False]
    run = data(api.get(f"/evaluation/runs/{prepared.human}"))
    assert run["human"]["ratings"] == 1 and run["human"]["meanScore"]["value"] == 4
    item = data(api.get(f"/evaluation/runs/{prepared.human}/items", params={"pageSize": 1}))["items"][0]
    assert item["scores"]["0"]["human_score"] == 4
    page.get_by_role("link", name="Back to the run").click()
    expect(page.locator("#agreement")).to_contain_text("Ratings")
    expect(page.locator("#agreement")).to_contain_text("4.000")


def test_cancel_asks_first_and_a_viewer_can_neither_cancel_nor_create(page: Page, keys: dict[str, str],
                                                                       api: httpx.Client) -> None:
    tag = uuid.uuid4().hex[:8]
    rows = [{"question": f"long {i}", "answer": "mock token reply"} for i in range(1500)]  # one at a time: a while
    dataset_id = upload_dataset(api, f"console-eval-long-{tag}", rows)
    run_id = data(api.post("/evaluation/runs", json=_body(f"long-{tag}", dataset_id, concurrency=1)), 201)["id"]

    sign_in(page, keys["viewer"], f"/console/evaluation/runs/{run_id}")
    expect(page.get_by_role("heading", name=f"Run long-{tag}")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    expect(page.get_by_role("link", name="New run")).to_have_count(0)
    csrf = page.locator("body").get_attribute("data-csrf") or ""
    forced = page.request.post(f"/console/evaluation/runs/{run_id}/cancel", form={"csrf": csrf}, max_redirects=0)
    assert forced.status == 403 and "Not allowed" in forced.text()
    created = page.request.post("/console/evaluation/runs/new", max_redirects=0, form={
        "csrf": csrf, "name": f"viewer-{tag}", "type": "automated", "targets.0.kind": "route", "targets.0.id": "demo",
        "dataset.datasetId": dataset_id, "mapping.input": "question"})
    assert created.status == 403 and "Not allowed" in created.text()
    assert data(api.get(f"/evaluation/runs/{run_id}"))["status"] in ("queued", "running")
    assert not [r for r in data(api.get("/evaluation/runs", params={"datasetId": dataset_id}))["items"]
                if r["name"] == f"viewer-{tag}"]

    sign_in(page, keys["developer"], f"/console/evaluation/runs/{run_id}")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Cancel run").click()
    expect(page.get_by_role("button", name="Cancel run")).to_be_visible()
    assert data(api.get(f"/evaluation/runs/{run_id}"))["status"] in ("queued", "running")
    messages: list[str] = []

    def accept(dialog: Any) -> None:
        messages.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.get_by_role("button", name="Cancel run").click()
    expect(page.locator("#run-status")).to_have_text(re.compile("cancelling|cancelled"))
    assert messages and f"Cancel run long-{tag}?" in messages[0]
    expect(page.locator("#run-status")).to_have_text("cancelled", timeout=60_000)
    run = data(api.get(f"/evaluation/runs/{run_id}"))
    assert run["status"] == "cancelled" and run["progress"]["done"] < len(rows)
    assert any(e["event"] in ("cancelling", "cancelled") for e in run["timeline"])
    expect(page.locator("#timeline")).to_contain_text("cancelled")
