"""Catalog datasets in the console: register (the API's field errors beside the fields), upload versions through
the streaming proxy (drag-and-drop form, progress), the preview, the validation / PII / quality reports, compare
two versions, the list's PII filter; a viewer sees no register or upload and the server refuses both anyway."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from litestar.exceptions import InternalServerException
from playwright.sync_api import Page, expect

from gateway.console.uploads import _framed
from tests.gateway.console.conftest import shoot, sign_in

TEAM = "console-qa"
# An upload answers once the file is analysed in the catalog's worker processes (spawned on first use): allow
# for a slow start on a busy machine.
ANALYSED_MS = 60_000


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _register(api: httpx.Client, prefix: str, **body: Any) -> dict[str, Any]:
    answer = api.post("/catalog/datasets", json={"name": f"{prefix}-{uuid.uuid4().hex[:8]}", "ownerTeam": TEAM, **body})
    assert answer.status_code == 201, answer.text
    return answer.json()["data"]


def _versions(api: httpx.Client, dataset_id: str) -> list[dict[str, Any]]:
    answer = api.get(f"/catalog/datasets/{dataset_id}/versions")
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]["items"]


def _upload_in_page(page: Page, filename: str, content: bytes) -> None:
    page.get_by_label("Drop a file here, or choose one").set_input_files(
        {"name": filename, "mimeType": "application/x-ndjson", "buffer": content})
    page.get_by_role("button", name="Upload").click()


def test_a_developer_registers_uploads_previews_and_compares(page: Page, keys: dict[str, str],
                                                             api: httpx.Client) -> None:
    name = f"qa-{uuid.uuid4().hex[:8]}"
    sign_in(page, keys["developer"], "/console/catalog/datasets")
    page.get_by_role("link", name="Register a dataset").click()
    page.get_by_label("Name").fill(name)
    page.get_by_label("Owner team").fill(TEAM)
    page.get_by_label("File format").select_option("jsonl")
    page.get_by_label("Expected schema").fill("question: string\nanswer: sparkles")
    page.get_by_role("button", name="Register dataset").click()  # an unknown type: the API refuses, beside the field
    expect(page.locator("#f-schema-err")).to_contain_text("sparkles")
    expect(page.get_by_label("Name")).to_have_value(name)
    shoot(page, "datasets-new")
    page.get_by_label("Expected schema").fill("question: string\nanswer: text")
    page.get_by_role("button", name="Register dataset").click()
    expect(page.get_by_role("heading", name=name)).to_be_visible()
    expect(page.locator(".notice")).to_contain_text("upload its first file")
    held = api.get("/catalog/datasets", params={"name": name}).json()["data"]["items"]
    assert len(held) == 1 and held[0]["schema"] == {"question": "string", "answer": "string"}
    assert held[0]["format"] == "jsonl" and held[0]["latestVersion"] is None
    dataset_id = held[0]["id"]

    long_answer = "forty-two " * 40
    first = _jsonl([{"question": "What is 2+2?", "answer": "4"},
                    {"question": "<b>bold</b> & co", "answer": long_answer},
                    {"question": "Capital of France?", "answer": None}])
    _upload_in_page(page, "rows.jsonl", first)
    uploaded = page.get_by_text(f"Uploaded rows.jsonl ({len(first)} B): version 1 is ready.")
    expect(uploaded).to_be_visible(timeout=ANALYSED_MS)
    assert re.search(r"\?version=1&uploaded=1$", page.url)
    versions = _versions(api, dataset_id)
    assert [(v["version"], v["status"], v["rowCount"], v["sizeBytes"]) for v in versions] == [
        (1, "ready", 3, len(first))]

    preview = page.get_by_role("table", name="Preview rows")
    expect(preview.get_by_role("columnheader")).to_have_text(["question", "answer"])
    expect(preview.get_by_role("row")).to_have_count(4)
    expect(preview.get_by_role("cell", name="What is 2+2?")).to_be_visible()
    expect(preview.get_by_role("cell", name="<b>bold</b> & co", exact=True)).to_be_visible()  # escaped, not markup
    cut = preview.locator("td[title]")
    expect(cut).to_have_count(1)
    assert cut.get_attribute("title") == long_answer and (cut.text_content() or "").endswith("…")
    assert len(cut.text_content() or "") < len(long_answer)
    expect(page.get_by_role("table", name="Column statistics")).to_contain_text("question")
    expect(page.get_by_role("heading", name=re.compile("Report of version 1"))).to_be_visible()
    shoot(page, "datasets-detail")

    second = _jsonl([{"question": "What is 2+2?", "answer": "4", "score": 0.5},
                     {"question": "Largest planet?", "answer": "Jupiter", "score": 1.0},
                     {"question": "Capital of France?", "answer": "Paris", "score": 0.75},
                     {"question": "Ocean?", "answer": "Pacific", "score": 0.25}])
    _upload_in_page(page, "rows-v2.jsonl", second)
    expect(page.get_by_text("version 2 is ready.")).to_be_visible(timeout=ANALYSED_MS)
    assert [v["version"] for v in _versions(api, dataset_id)] == [2, 1]
    expect(page.get_by_label("Compare version")).to_have_value("1")
    expect(page.get_by_label("with version")).to_have_value("2")
    page.get_by_role("button", name="Compare").click()
    expect(page.get_by_role("heading", name="Version 1 → version 2")).to_be_visible()
    expect(page.get_by_text("3 → 4: +1 row (+33.3%)")).to_be_visible()
    expect(page.get_by_role("listitem").filter(has_text="added")).to_contain_text("score")
    expect(page.get_by_role("table", name="Statistics that changed")).to_contain_text("share empty")
    diff = api.get(f"/catalog/datasets/{dataset_id}/versions/1/compare/2").json()["data"]
    assert [c["name"] for c in diff["schema"]["added"]] == ["score"] and diff["rowCount"]["delta"] == 1
    shoot(page, "datasets-compare")
    page.get_by_label("To version").select_option("1")  # the same version twice: said beside the field
    page.get_by_role("button", name="Compare").click()
    expect(page.locator("#f-to-err")).to_have_text("Choose a different version from the first")
    problems = page.problems  # type: ignore[attr-defined]
    unexpected = [m for m in problems.console if "status of 422" not in m]  # the refused form, on purpose
    assert not unexpected and not problems.page_errors and not problems.failed
    assert problems.http == [f"POST {page.url.split('/console')[0]}/console/catalog/datasets/new: 422"]


def test_pii_in_a_row_is_reported_and_the_list_filter_finds_it(page: Page, keys: dict[str, str],
                                                                api: httpx.Client) -> None:
    risky = _register(api, "contacts", description="Support chats with contact details")
    clean = _register(api, "clean")
    answer = api.post(f"/catalog/datasets/{clean['id']}/upload",
                      files={"file": ("clean.jsonl", _jsonl([{"text": "hello"}, {"text": "bye"}]))})
    assert answer.status_code == 201, answer.text
    sign_in(page, keys["developer"], f"/console/catalog/datasets/{risky['id']}")
    _upload_in_page(page, "chats.jsonl", _jsonl([{"id": 1, "text": "mail me at alice@example.com"},
                                                 {"id": 2, "text": "or call +1 415 555 0100"},
                                                 {"id": 3, "text": "thanks"}]))
    expect(page.get_by_text("version 1 is ready.")).to_be_visible(timeout=ANALYSED_MS)
    findings = page.get_by_role("table", name="PII findings")
    expect(findings.get_by_role("row").filter(has_text="email")).to_contain_text("text")
    expect(findings.get_by_role("row").filter(has_text="phone")).to_contain_text("text")
    expect(page.get_by_role("table", name="Preview rows")).not_to_contain_text("alice@example.com")  # masked
    expect(page.get_by_role("table", name="Preview rows")).to_contain_text("a***@e***.com")
    report = api.get(f"/catalog/datasets/{risky['id']}/validation").json()["data"]
    assert {f["rule"] for f in report["pii"]["findings"]} == {"email", "phone"}

    page.get_by_role("link", name="← Datasets").click()
    page.get_by_label("PII").select_option("detected")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"piiStatus=detected"))
    row = page.get_by_role("row").filter(has_text=risky["name"])
    expect(row).to_contain_text("PII detected")
    expect(page.get_by_role("row").filter(has_text=clean["name"])).to_have_count(0)
    shoot(page, "datasets-list")
    page.get_by_label("PII").select_option("clean")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("row").filter(has_text=clean["name"])).to_contain_text("no PII found")
    expect(page.get_by_role("row").filter(has_text=risky["name"])).to_have_count(0)
    page.get_by_label("Quality at least").fill("101")  # out of range: the API's refusal beside the field
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#f-minQuality-err")).to_be_visible()


def test_a_file_with_invalid_json_lines_shows_its_errors_in_words(page: Page, keys: dict[str, str],
                                                                   api: httpx.Client) -> None:
    made = _register(api, "broken", format="jsonl")
    bad = b'{"question": "ok", "answer": "fine"}\n{"question": "no closing brace"\n'
    sign_in(page, keys["developer"], f"/console/catalog/datasets/{made['id']}")
    _upload_in_page(page, "bad.jsonl", bad)
    status = page.locator("[data-upload-status]")
    expect(status).to_contain_text("Version 1 is invalid", timeout=ANALYSED_MS)
    expect(status).to_contain_text("line 2")
    expect(status).to_have_class(re.compile("error"))
    expect(page.locator("progress")).to_have_js_property("value", len(bad))  # the whole file went
    versions = _versions(api, made["id"])
    assert [(v["version"], v["status"]) for v in versions] == [(1, "invalid")]
    assert api.get(f"/catalog/datasets/{made['id']}").json()["data"]["latestVersion"] is None

    _upload_in_page(page, "notes.txt", b"plain text")  # not a dataset format: the API's refusal, in words
    expect(status).to_contain_text("'.txt' is not a dataset format")
    assert len(_versions(api, made["id"])) == 1

    page.reload()
    errors = page.get_by_role("table", name="Validation errors")
    expect(errors).to_contain_text("line 2")
    expect(errors.get_by_role("cell", name="invalid_json")).to_be_visible()
    expect(page.get_by_role("row").filter(has_text="bad.jsonl")).to_contain_text("invalid")
    expect(page.get_by_text("No ready version to preview yet.")).to_be_visible()
    shoot(page, "datasets-invalid")


def test_a_viewer_sees_no_register_or_upload_and_the_server_refuses_both(page: Page, keys: dict[str, str],
                                                                         api: httpx.Client) -> None:
    made = _register(api, "viewer-sees")
    answer = api.post(f"/catalog/datasets/{made['id']}/upload",
                      files={"file": ("rows.jsonl", _jsonl([{"q": "a"}, {"q": "b"}]))})
    assert answer.status_code == 201, answer.text
    sign_in(page, keys["viewer"], "/console/catalog/datasets")
    expect(page.get_by_role("link", name=made["name"])).to_be_visible()
    expect(page.get_by_role("link", name="Register a dataset")).to_have_count(0)
    page.get_by_role("link", name=made["name"]).click()
    expect(page.get_by_role("table", name="Preview rows")).to_be_visible()
    expect(page.get_by_role("button", name="Upload")).to_have_count(0)
    expect(page.locator("form[data-upload]")).to_have_count(0)

    csrf = page.locator("body").get_attribute("data-csrf") or ""
    name = f"forced-{uuid.uuid4().hex[:8]}"
    forced = page.request.post("/console/catalog/datasets/new", form={"csrf": csrf, "name": name, "ownerTeam": TEAM},
                               max_redirects=0)
    assert forced.status == 403 and "Not allowed" in forced.text()
    assert api.get("/catalog/datasets", params={"name": name}).json()["data"]["total"] == 0
    upload = page.request.post(f"/console/catalog/datasets/{made['id']}/upload?filename=more.jsonl",
                               headers={"x-csrf-token": csrf, "content-type": "application/x-ndjson"},
                               data=_jsonl([{"q": "c"}]))
    assert upload.status == 403 and upload.json()["message"]
    assert len(_versions(api, made["id"])) == 1


def test_an_upload_cut_short_leaves_its_part_unclosed_so_the_api_keeps_nothing() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"first chunk"
        raise InternalServerException("client disconnected prematurely")  # as Litestar's request.stream() does

    async def sent() -> list[bytes]:
        return [chunk async for chunk in _framed(b"<head>", body(), b"<tail>")]

    with ThreadPoolExecutor(1) as pool:  # a loop of its own: Playwright's runs on this thread
        assert pool.submit(asyncio.run, sent()).result() == [b"<head>", b"first chunk"]
