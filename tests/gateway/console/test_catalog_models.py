"""Catalog models in the console: register (external and self-hosted, with the API's field errors beside the
fields), the lifecycle with an approval, edit → version 2 and its diff, a file upload with progress, delete
refused while a fine-tune depends on the model (in words, with a link) and then allowed; a viewer sees no
actions and the server refuses them anyway."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from playwright.sync_api import FilePayload, Page, expect

from tests.gateway.console.conftest import shoot, sign_in

OPENAI = {"kind": "openai", "baseUrl": "https://api.openai.com/v1", "model": "gpt-4o-mini",
          "apiKeyRef": "env:OPENAI_API_KEY"}


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _register(api: httpx.Client, **body: Any) -> dict[str, Any]:
    answer = api.post("/catalog/models", json={"ownerTeam": "ml", **body})
    assert answer.status_code == 201, answer.text
    return answer.json()["data"]


def _external(api: httpx.Client, name: str) -> dict[str, Any]:
    return _register(api, name=name, type="external", provider=OPENAI)


def _held(api: httpx.Client, model_id: str) -> dict[str, Any]:
    answer = api.get(f"/catalog/models/{model_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def test_a_developer_registers_an_external_model_from_the_form(page: Page, keys: dict[str, str],
                                                                api: httpx.Client) -> None:
    name = _name("ext")
    sign_in(page, keys["developer"], "/console/catalog/models")
    page.get_by_role("link", name="Register a model").click()
    expect(page.get_by_role("heading", name="Register a model")).to_be_visible()
    expect(page.get_by_label("Format")).to_be_visible()  # base is the default type
    expect(page.get_by_label("Base URL")).to_be_hidden()
    page.get_by_role("textbox", name="Name", exact=True).fill(name)
    page.get_by_role("combobox", name="Type", exact=True).select_option("external")
    expect(page.get_by_label("Format")).to_be_hidden()  # the self-hosted fieldset goes away
    page.get_by_label("Owner team").fill("search")
    page.get_by_role("combobox", name="Provider", exact=True).select_option("ollama")
    expect(page.get_by_label("API key reference")).to_be_hidden()  # Ollama takes no key
    page.get_by_role("combobox", name="Provider", exact=True).select_option("openai")
    page.get_by_label("Base URL").fill("https://api.openai.com/v1")
    page.get_by_label("Provider model name").fill("gpt-4o-mini")
    page.get_by_label("API key reference").fill("secret://search/sk-live-0123456789abcdef")  # looks like a key
    shoot(page, "models-create")
    page.get_by_role("button", name="Register model").click()
    expect(page.locator("#f-provider-apiKeyRef-err")).to_contain_text("never the key itself")
    expect(page.get_by_role("textbox", name="Name", exact=True)).to_have_value(name)  # what was typed is kept
    expect(page.get_by_label("Provider model name")).to_have_value("gpt-4o-mini")
    assert api.get("/catalog/models", params={"name": name}).json()["data"]["total"] == 0

    page.get_by_label("API key reference").fill("env:OPENAI_API_KEY")
    page.get_by_role("button", name="Register model").click()
    expect(page.get_by_role("heading", name=name)).to_be_visible()
    expect(page.locator("#facts")).to_contain_text("env:OPENAI_API_KEY")
    held = api.get("/catalog/models", params={"name": name}).json()["data"]["items"]
    assert len(held) == 1
    assert held[0]["type"] == "external" and held[0]["status"] == "draft" and held[0]["ownerTeam"] == "search"
    assert held[0]["provider"] == OPENAI and held[0]["format"] is None
    expect(page.get_by_role("button", name="Submit for review")).to_have_count(0)  # developers cannot
    shoot(page, "models-detail-external")


def test_registering_a_self_hosted_model_shows_the_apis_field_errors(page: Page, keys: dict[str, str],
                                                                     api: httpx.Client) -> None:
    parent = _register(api, name=_name("parent"), type="base", format="gguf")
    name = _name("ft")
    sign_in(page, keys["developer"], "/console/catalog/models/new")
    page.get_by_role("combobox", name="Type", exact=True).select_option("fine-tuned")
    expect(page.get_by_label("Parent model")).to_be_visible()
    expect(page.get_by_label("Base URL")).to_be_hidden()
    page.get_by_role("textbox", name="Name", exact=True).fill("not a valid name!")
    page.get_by_label("Owner team").fill("ml")
    page.get_by_label("Format").select_option("gguf")
    page.get_by_label("Parent model").fill("mdl_doesnotexist")
    page.get_by_label("Tags").fill("support, v1")
    page.get_by_role("button", name="Register model").click()
    expect(page.locator("#f-name-err")).to_be_visible()  # the schema's refusal (400), beside the name
    page.get_by_role("textbox", name="Name", exact=True).fill(name)
    page.get_by_role("button", name="Register model").click()
    expect(page.locator("#f-parentModelId-err")).to_contain_text("no model")  # the meaning's refusal (422)
    expect(page.get_by_label("Parent model")).to_have_attribute("aria-invalid", "true")
    assert api.get("/catalog/models", params={"name": name}).json()["data"]["total"] == 0

    page.get_by_label("Parent model").fill(parent["id"])
    page.get_by_role("button", name="Register model").click()
    expect(page.get_by_role("heading", name=name)).to_be_visible()
    lineage = page.locator("#lineage")
    expect(lineage.get_by_role("link", name=parent["name"])).to_be_visible()
    held = api.get("/catalog/models", params={"name": name}).json()["data"]["items"][0]
    assert (held["type"], held["format"], held["parentModelId"], held["tags"]) == \
        ("fine-tuned", "gguf", parent["id"], ["support", "v1"])
    assert held["provider"] is None


def test_an_operator_moves_a_model_through_review_with_an_approval(page: Page, keys: dict[str, str],
                                                                    api: httpx.Client) -> None:
    model = _external(api, _name("review"))
    sign_in(page, keys["operator"], f"/console/catalog/models/{model['id']}")
    expect(page.get_by_role("button", name="Mark approved")).to_have_count(0)  # not a transition from draft
    page.get_by_label("Note (kept in the audit log)").fill("ready for review")
    page.get_by_role("button", name="Submit for review").click()
    expect(page.get_by_role("button", name="Mark approved")).to_be_visible()
    assert _held(api, model["id"])["status"] == "under_review"

    page.get_by_role("button", name="Mark approved").click()  # no decision yet: the API says so
    expect(page.locator("#status [role=alert]")).to_contain_text("no decision has been recorded")
    assert _held(api, model["id"])["status"] == "under_review"

    page.get_by_label("Decision").select_option("approve")
    page.get_by_label("Comment").fill("meets the eval bar")
    page.get_by_role("button", name="Record decision").click()
    expect(page.locator("#approvals").get_by_role("row").filter(has_text="meets the eval bar")).to_be_visible()
    decisions = api.get(f"/catalog/models/{model['id']}/approvals").json()["data"]["items"]
    assert [(d["decision"], d["note"], d["approver"]) for d in decisions] == \
        [("approve", "meets the eval bar", "console-operator")]

    page.get_by_role("button", name="Mark approved").click()
    expect(page.get_by_role("button", name="Deprecate")).to_be_visible()
    assert _held(api, model["id"])["status"] == "approved"
    expect(page.get_by_role("button", name="Record decision")).to_have_count(0)  # only while under review
    shoot(page, "models-detail")


def test_editing_creates_version_2_and_the_diff_shows_the_change(page: Page, keys: dict[str, str],
                                                                 api: httpx.Client) -> None:
    model = _external(api, _name("edit"))
    sign_in(page, keys["developer"], f"/console/catalog/models/{model['id']}")
    page.get_by_role("link", name="Edit definition").click()
    expect(page.get_by_label("Base URL")).to_have_value("https://api.openai.com/v1")
    expect(page.get_by_label("Format")).to_have_count(0)  # an external model stays external
    page.get_by_label("Base URL").fill("https://eu.api.openai.com/v1")
    page.get_by_label("Description").fill("EU region")
    page.get_by_role("button", name="Save as version 2").click()
    expect(page.locator("#facts")).to_contain_text("eu.api.openai.com")
    held = _held(api, model["id"])
    assert held["version"] == 2 and held["provider"]["baseUrl"] == "https://eu.api.openai.com/v1"

    page.get_by_role("link", name="Compare versions").click()
    expect(page.get_by_role("heading", name="Changes from version 1 to 2")).to_be_visible()
    row = page.get_by_role("row").filter(has_text="provider.baseUrl")
    expect(row).to_contain_text("changed")
    expect(row.locator("del")).to_have_text("https://api.openai.com/v1")
    expect(row.locator("ins")).to_have_text("https://eu.api.openai.com/v1")
    expect(page.get_by_role("row").filter(has_text="description")).to_contain_text("EU region")
    shoot(page, "models-diff")
    page.get_by_role("link", name="Definition of version 1").click()
    expect(page.locator("pre.json")).to_contain_text('"baseUrl": "https://api.openai.com/v1"')
    assert page.problems.all() == []  # type: ignore[attr-defined]  # no CSP or script errors, no failed request


def test_a_file_upload_shows_progress_and_the_api_lists_the_file(page: Page, keys: dict[str, str],
                                                                 api: httpx.Client) -> None:
    model = _register(api, name=_name("weights"), type="base", format="gguf")
    sign_in(page, keys["developer"], f"/console/catalog/models/{model['id']}")
    form = page.locator("form[data-upload]")
    form.get_by_label("File to upload").set_input_files(
        files=FilePayload(name="fake.gguf", mimeType="application/octet-stream", buffer=b"<html>not weights"))
    form.get_by_role("button", name="Upload", exact=True).click()
    expect(form.locator("[data-upload-status]")).to_contain_text("GGUF magic")  # the API's refusal, in words
    assert api.get(f"/catalog/models/{model['id']}/files").json()["data"]["files"] == []

    payload = b"GGUF" + bytes(range(256)) * 64
    form.get_by_label("File to upload").set_input_files(
        files=FilePayload(name="tiny.gguf", mimeType="application/octet-stream", buffer=payload))
    form.get_by_role("button", name="Upload", exact=True).click()
    expect(page.get_by_role("status").filter(has_text="Uploaded tiny.gguf.")).to_be_visible()
    expect(page.locator("#files").get_by_role("row").filter(has_text="tiny.gguf")).to_be_visible()
    expect(page.locator("#files")).to_contain_text("complete")
    files = api.get(f"/catalog/models/{model['id']}/files").json()["data"]
    assert [(f["filename"], f["sizeBytes"]) for f in files["files"]] == [("tiny.gguf", len(payload))]
    assert files["complete"] is True
    shoot(page, "models-detail-files")


def test_delete_is_refused_while_a_fine_tune_depends_on_it_then_allowed(page: Page, keys: dict[str, str],
                                                                        api: httpx.Client) -> None:
    parent = _register(api, name=_name("root"), type="base", format="gguf")
    child = _register(api, name=_name("child"), type="fine-tuned", format="gguf", parentModelId=parent["id"])
    sign_in(page, keys["operator"], f"/console/catalog/models/{parent['id']}")
    expect(page.locator("#lineage").get_by_role("link", name=child["name"])).to_be_visible()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete model").click()
    refused = page.locator("#delete-refused")
    expect(refused).to_contain_text("cannot be deleted yet")
    expect(refused).to_contain_text(f"still used by model {child['id']}")
    assert _held(api, parent["id"])["name"] == parent["name"]

    refused.get_by_role("link", name=child["id"]).click()
    expect(page.get_by_role("heading", name=child["name"])).to_be_visible()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete model").click()
    expect(page.get_by_role("heading", name="Models")).to_be_visible()
    assert api.get(f"/catalog/models/{child['id']}").status_code == 404

    page.goto(f"/console/catalog/models/{parent['id']}")
    page.once("dialog", lambda dialog: dialog.dismiss())  # dismissed: nothing happens
    page.get_by_role("button", name="Delete model").click()
    expect(page.get_by_role("heading", name=parent["name"])).to_be_visible()
    assert api.get(f"/catalog/models/{parent['id']}").status_code == 200
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete model").click()
    expect(page.get_by_role("heading", name="Models")).to_be_visible()
    assert api.get(f"/catalog/models/{parent['id']}").status_code == 404


def test_the_list_filters_and_pages_on_the_server(page: Page, keys: dict[str, str], api: httpx.Client) -> None:
    tag = uuid.uuid4().hex[:8]
    _external(api, f"list-{tag}-ext")
    for n in range(25):  # one more than a page of 25 with the external one
        _register(api, name=f"list-{tag}-base-{n:02d}", type="base", format="onnx")
    sign_in(page, keys["viewer"], f"/console/catalog/models?name=list-{tag}")
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(25)
    expect(page.get_by_role("navigation", name="Pages")).to_contain_text("26 in all · page 1 of 2")
    page.get_by_role("link", name="Next →").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(f"list-{tag}-ext")  # newest first: the external one came first
    page.get_by_label("Type").select_option("external")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(f"list-{tag}-ext")
    expect(rows.first).to_contain_text("draft")
    page.get_by_label("Status").select_option("approved")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("cell", name="No models match.")).to_be_visible()
    page.goto(f"/console/catalog/models?name=list-{tag}&type=weird")  # a value the API refuses, in words
    expect(page.get_by_role("alert")).to_be_visible()
    page.goto(f"/console/catalog/models?name=list-{tag}-base-0")
    expect(rows).to_have_count(10)
    shoot(page, "models-list")


def test_a_viewer_sees_no_actions_and_the_server_refuses_them(page: Page, keys: dict[str, str],
                                                             api: httpx.Client) -> None:
    model = _register(api, name=_name("viewed"), type="base", format="gguf")
    sign_in(page, keys["viewer"], "/console/catalog/models")
    expect(page.get_by_role("link", name="Register a model")).to_have_count(0)
    page.goto(f"/console/catalog/models/{model['id']}")
    expect(page.get_by_role("heading", name=model["name"])).to_be_visible()
    for button in ("Delete model", "Submit for review", "Upload", "Record decision"):
        expect(page.get_by_role("button", name=button, exact=True)).to_have_count(0)
    expect(page.get_by_role("link", name="Edit definition")).to_have_count(0)
    csrf = page.locator("body").get_attribute("data-csrf") or ""
    for path, form in ((f"/console/catalog/models/{model['id']}/delete", {}),
                       (f"/console/catalog/models/{model['id']}/status", {"status": "under_review"}),
                       ("/console/catalog/models/new", {"name": _name("sneaky"), "type": "base", "ownerTeam": "ml",
                                                        "format": "gguf"})):
        forced = page.request.post(path, form={"csrf": csrf, **form}, max_redirects=0)
        assert forced.status == 403 and "Not allowed" in forced.text(), (path, forced.status)
    forced_upload = page.request.post(f"/console/catalog/models/{model['id']}/upload?filename=x.gguf",
                                      data=b"GGUF0000", headers={"x-csrf-token": csrf,
                                                                 "content-type": "application/octet-stream"})
    assert forced_upload.status == 403 and forced_upload.json()["message"]
    held = _held(api, model["id"])
    assert held["status"] == "draft"
    assert api.get(f"/catalog/models/{model['id']}/files").json()["data"]["files"] == []
