"""Catalog models: list, register, detail (metadata, lifecycle, approvals, versions and their diff, files,
lineage), edit, file upload and delete (`/console/catalog/models/...`).

Every action is the admin API's (`/catalog/models`), called as the signed-in key: registering, editing and
uploading need developer; status changes, approval decisions and deleting need operator. The page shows each
button only to the role that may use it, and the API refuses anyway.

Uploads go through `POST /console/catalog/models/{id}/upload`: the browser sends the file as the raw request
body (console.js `form[data-upload]`, for its progress events); this handler wraps that stream, without
buffering it, in the one-part `multipart/form-data` body the API's upload endpoint reads.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlencode

from litestar import Response, get, post
from litestar.exceptions import NotFoundException

from gateway.console.api import ApiError
from gateway.console.forms import Form
from gateway.console.pages.common import filtered_list
from gateway.console.pages.footprint import model_footprint
from gateway.console.session import Console
from gateway.console.uploads import forward_file, json_answer

__all__ = ["HANDLERS"]

BASE = "/console/catalog/models"
TYPES = ("base", "fine-tuned", "external")
STATUSES = ("draft", "under_review", "approved", "deprecated", "retired")
FORMATS = ("safetensors", "pytorch", "gguf", "onnx")
PROVIDERS = (("openai", "OpenAI"), ("ollama", "Ollama"), ("vllm", "vLLM"))
# The API's lifecycle (control/catalog/models/lifecycle.py): target -> button label, per current status.
TRANSITIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "draft": (("under_review", "Submit for review"),),
    "under_review": (("approved", "Mark approved"), ("draft", "Back to draft")),
    "approved": (("deprecated", "Deprecate"),),
    "deprecated": (("approved", "Reinstate"), ("retired", "Retire")),
    "retired": (),
}
EDITABLE = ("draft", "under_review")
UPLOADABLE = ("draft",)
# Extensions the API takes per format (for the file picker's hint; the API decides).
_SIDE = (".json", ".model", ".txt", ".tiktoken", ".md")
ACCEPT = {"safetensors": (".safetensors", *_SIDE), "pytorch": (".bin", ".pt", ".pth", *_SIDE),
          "gguf": (".gguf", *_SIDE), "onnx": (".onnx", ".onnx_data", *_SIDE)}
_FILTERS = ("name", "type", "status", "ownerTeam")
_FIELDS = ("name", "type", "ownerTeam", "description", "format", "parentModelId", "trainingDatasets", "tags",
           "labels", "provider", "provider.kind", "provider.baseUrl", "provider.model", "provider.apiKeyRef",
           "provider.organization", "expectedVersion")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
_BAD_NAME = re.compile(r'["\\\x00-\x1f\x7f]')
_BAD_TYPE = re.compile(r"[\x00-\x1f\x7f]")


def _checked(model_id: str) -> str:
    """A model id as it may appear in an API path (anything else cannot be a model: 404)."""
    if not _ID.match(model_id):
        raise NotFoundException(f"No model {model_id!r}")
    return model_id


# ---- list -------------------------------------------------------------------------------------------------


@get("/catalog/models", name="console-models")
async def models_list(console: Console) -> Response[str]:
    listing, form = await filtered_list(console, "/catalog/models", _FILTERS)
    return console.render("models/list.html", {"listing": listing, "form": form, "types": TYPES,
                                               "statuses": STATUSES})


# ---- register and edit ------------------------------------------------------------------------------------


async def _parents(console: Console, exclude: str = "") -> list[tuple[str, str]]:
    """Models that can be a fine-tune's parent (live base and fine-tuned ones), for the field's suggestions."""
    found: list[tuple[str, str]] = []
    for kind in ("base", "fine-tuned"):
        listing = await console.api.list("/catalog/models", {"type": kind, "pageSize": 200})
        found += [(m["id"], f"{m['name']} ({kind})") for m in listing.items if m["id"] != exclude]
    return found


def _form_page(console: Console, form: Form, parents: list[tuple[str, str]], *, model: dict[str, Any] | None = None,
               status: int = 200) -> Response[str]:
    return console.render("models/form.html", {
        "form": form, "model": model, "parents": parents, "types": TYPES, "formats": FORMATS,
        "providers": PROVIDERS}, status=status)


def _values_of(model: dict[str, Any]) -> dict[str, Any]:
    """A model as the form shows it (for editing)."""
    provider = model.get("provider") or {}
    return {
        "name": model["name"], "type": model["type"], "ownerTeam": model["ownerTeam"],
        "description": model.get("description") or "", "format": model.get("format") or "",
        "parentModelId": model.get("parentModelId") or "",
        "trainingDatasets": ", ".join(f"{d['datasetId']}:{d['version']}" for d in model.get("trainingDatasets", [])),
        "tags": ", ".join(model.get("tags", [])),
        "labels": "\n".join(f"{k}={v}" for k, v in (model.get("labels") or {}).items()),
        "provider.kind": provider.get("kind", "openai"), "provider.baseUrl": provider.get("baseUrl", ""),
        "provider.model": provider.get("model", ""), "provider.apiKeyRef": provider.get("apiKeyRef") or "",
        "provider.organization": provider.get("organization") or "", "expectedVersion": model["version"],
    }


def _datasets(form: Form) -> list[dict[str, Any]]:
    refs: list[dict[str, Any]] = []
    for word in form.words("trainingDatasets"):
        dataset_id, _, version = word.rpartition(":")
        if not dataset_id or not version.strip().isdigit():
            form.errors["trainingDatasets"] = f"{word!r} is not datasetId:version (e.g. ds_01ab…:3)"
            return []
        refs.append({"datasetId": dataset_id.strip(), "version": int(version)})
    return refs


def _labels(form: Form) -> dict[str, str]:
    labels: dict[str, str] = {}
    for line in str(form.get("labels")).splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            form.errors["labels"] = f"{line.strip()!r} is not key=value"
            return {}
        labels[key.strip()] = value.strip()
    return labels


def _definition(form: Form, model_type: str | None) -> dict[str, Any]:
    """The API body from the form: only the fields of the chosen type (the other fieldset is ignored)."""
    body: dict[str, Any] = {
        "name": form.text("name", required=True, max_chars=100), "type": model_type,
        "ownerTeam": form.text("ownerTeam", required=True, max_chars=64),
        "description": form.text("description", max_chars=4000) or "",
        "tags": form.words("tags"), "labels": _labels(form),
    }
    if model_type not in TYPES:
        form.errors["type"] = "Choose base, fine-tuned or external"
    elif model_type == "external":
        kind = form.text("provider.kind", required=True)
        provider: dict[str, Any] = {"kind": kind, "baseUrl": form.text("provider.baseUrl", required=True),
                                    "model": form.text("provider.model", required=True)}
        ref = form.text("provider.apiKeyRef", max_chars=250)
        if kind == "openai":
            if ref is None:
                form.errors["provider.apiKeyRef"] = "Required for OpenAI: where the key lives (env:VAR or secret://name)"
            provider["apiKeyRef"] = ref
            if organization := form.text("provider.organization", max_chars=100):
                provider["organization"] = organization
        elif kind == "vllm" and ref:
            provider["apiKeyRef"] = ref
        elif kind not in {k for k, _ in PROVIDERS}:
            form.errors["provider.kind"] = "Choose OpenAI, Ollama or vLLM"
        body["provider"] = provider
    else:
        body["format"] = form.text("format", required=True)
        if model_type == "fine-tuned":
            body["parentModelId"] = form.text("parentModelId", required=True, max_chars=40)
        body["trainingDatasets"] = _datasets(form)
    return body


@get("/catalog/models/new", name="console-model-new")
async def new_model(console: Console) -> Response[str]:
    form = Form.of({"type": console.request.query_params.get("type", "base"), "ownerTeam": "",
                    "provider.kind": "openai"})
    return _form_page(console, form, await _parents(console))


@post("/catalog/models/new", name="console-model-create", status_code=200)
async def create_model(console: Console) -> Response[str]:
    form = await Form.read(console.request)
    body = _definition(form, form.text("type", required=True))
    if form.ok:
        try:
            created = await console.api.send("POST", "/catalog/models", body)
        except ApiError as err:
            if err.status in (401, 403):
                raise
            form.fail(err, _FIELDS)
        else:
            return console.redirect(f"{BASE}/{created['id']}")
    return _form_page(console, form, await _parents(console), status=422)


@get("/catalog/models/{model_id:str}/edit", name="console-model-edit")
async def edit_model(console: Console, model_id: str) -> Response[str]:
    model = await console.api.get(f"/catalog/models/{_checked(model_id)}")
    return _form_page(console, Form.of(_values_of(model)), await _parents(console, model_id), model=model)


@post("/catalog/models/{model_id:str}/edit", name="console-model-update", status_code=200)
async def update_model(console: Console, model_id: str) -> Response[str]:
    """A PUT of the whole definition: the API makes it the next version (or nothing, when nothing changed)."""
    model = await console.api.get(f"/catalog/models/{_checked(model_id)}")
    form = await Form.read(console.request)
    form.values["type"] = model["type"]  # the type never changes
    body = _definition(form, model["type"])
    if (expected := form.integer("expectedVersion", minimum=1)) is not None:
        body["expectedVersion"] = expected
    if form.ok:
        try:
            await console.api.send("PUT", f"/catalog/models/{model_id}", body)
        except ApiError as err:
            if err.status in (401, 403):
                raise
            form.fail(err, _FIELDS)
        else:
            return console.redirect(f"{BASE}/{model_id}")
    return _form_page(console, form, await _parents(console, model_id), model=model, status=422)


# ---- detail -----------------------------------------------------------------------------------------------


async def _detail(console: Console, model_id: str, *, status: int = 200, **extra: Any) -> Response[str]:
    path = f"/catalog/models/{_checked(model_id)}"
    model = await console.api.get(path)
    files = await console.api.get(f"{path}/files")
    approvals = await console.api.list(f"{path}/approvals", {"pageSize": 20})
    versions = await console.api.list(f"{path}/versions", {"pageSize": 50})
    lineage = await console.api.get(f"{path}/lineage")
    footprint = await model_footprint(console, model_id)
    current = next((v for v in versions.items if v["version"] == model["version"]), None)
    fmt = model.get("format")
    return console.render("models/detail.html", {
        "model": model, "files": files, "approvals": approvals, "versions": versions, "lineage": lineage,
        "footprint": footprint,
        "definition": current["definition"] if current else None,
        "transitions": TRANSITIONS.get(model["status"], ()), "editable": model["status"] in EDITABLE,
        "uploadable": bool(fmt) and model["status"] in UPLOADABLE,
        "accept": ",".join(ACCEPT.get(fmt or "", ())),
        "uploaded": console.request.query_params.get("uploaded", ""),
        "approval_form": extra.pop("approval_form", None) or Form.of({"decision": "approve"}),
        "status_error": None, "delete_error": None, "dependents": [], **extra,
    }, status=status)


@get("/catalog/models/{model_id:str}", name="console-model")
async def model_detail(console: Console, model_id: str) -> Response[str]:
    return await _detail(console, model_id)


@post("/catalog/models/{model_id:str}/status", name="console-model-status", status_code=200)
async def change_status(console: Console, model_id: str) -> Response[str]:
    form = await Form.read(console.request)
    body = {"status": form.text("status", required=True), "note": form.text("note", max_chars=2000) or ""}
    try:
        await console.api.send("PATCH", f"/catalog/models/{_checked(model_id)}/status", body)
    except ApiError as err:
        if err.status not in (400, 409, 422):
            raise
        return await _detail(console, model_id, status=err.status, status_error=err.message)
    return console.redirect(f"{BASE}/{model_id}")


@post("/catalog/models/{model_id:str}/approvals", name="console-model-approve", status_code=200)
async def add_approval(console: Console, model_id: str) -> Response[str]:
    form = await Form.read(console.request)
    body = {"decision": form.text("decision", required=True), "note": form.text("note", max_chars=2000) or ""}
    if form.ok:
        try:
            await console.api.send("POST", f"/catalog/models/{_checked(model_id)}/approvals", body)
        except ApiError as err:
            if err.status not in (400, 409, 422):
                raise
            form.fail(err, ["decision", "note"])
        else:
            return console.redirect(f"{BASE}/{model_id}#approvals")
    return await _detail(console, model_id, status=409 if form.message else 422, approval_form=form)


@post("/catalog/models/{model_id:str}/delete", name="console-model-delete", status_code=200)
async def delete_model(console: Console, model_id: str) -> Response[str]:
    """Refused (409) while something depends on the model: the page then says what, with links."""
    try:
        await console.api.send("DELETE", f"/catalog/models/{_checked(model_id)}")
    except ApiError as err:
        if err.status != 409:
            raise
        data = err.data if isinstance(err.data, dict) else {}
        dependents = [d for d in data.get("dependents", []) if isinstance(d, dict)]
        return await _detail(console, model_id, status=409, delete_error=err.message, dependents=dependents)
    return console.redirect(BASE)


# ---- versions ---------------------------------------------------------------------------------------------


def _shown(value: Any) -> str | None:
    """A definition value as text: strings as they are, the rest as JSON; absent is None."""
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)


def _version_arg(console: Console, name: str, default: int, latest: int) -> int:
    raw = console.request.query_params.get(name, "")
    return int(raw) if raw.isdigit() and 1 <= int(raw) <= latest else default


@get("/catalog/models/{model_id:str}/diff", name="console-model-diff")
async def diff_versions(console: Console, model_id: str) -> Response[str]:
    """Two versions side by side, field by field: what was added, removed or changed (the API's diff)."""
    model = await console.api.get(f"/catalog/models/{_checked(model_id)}")
    latest = int(model["version"])
    new = _version_arg(console, "to", latest, latest)
    old = _version_arg(console, "from", max(1, new - 1), latest)
    diff = await console.api.get(f"/catalog/models/{model_id}/versions/{old}/diff/{new}")
    rows = []
    for change in diff["changes"]:
        before, after = change.get("old"), change.get("new")
        kind = "added" if before is None else "removed" if after is None else "changed"
        rows.append({"path": change["field"], "kind": kind, "before": _shown(before), "after": _shown(after)})
    return console.render("models/diff.html", {"model": model, "diff": diff, "rows": rows, "old": old, "new": new,
                                               "choices": list(range(latest, 0, -1))})


@get("/catalog/models/{model_id:str}/versions/{version:int}", name="console-model-version")
async def model_version(console: Console, model_id: str, version: int) -> Response[str]:
    model = await console.api.get(f"/catalog/models/{_checked(model_id)}")
    found = await console.api.get(f"/catalog/models/{model_id}/versions/{version}")
    return console.render("models/version.html", {"model": model, "version": found})


# ---- upload -----------------------------------------------------------------------------------------------


@post("/catalog/models/{model_id:str}/upload", name="console-model-upload", status_code=200,
      request_max_body_size=None)
async def upload_file(console: Console, model_id: str) -> Response[bytes]:
    """The file as the raw body (`?filename=`), streamed on to the API as one multipart part (`uploads.py`)."""
    try:
        filename, _ = await forward_file(console, f"/catalog/models/{_checked(model_id)}/upload")
    except ApiError as err:
        return json_answer(err.status, {"message": err.message})
    return json_answer(200, {"location": f"{BASE}/{model_id}?{urlencode({'uploaded': filename})}#files"})


HANDLERS: list[Any] = [models_list, new_model, create_model, edit_model, update_model, model_detail, change_status,
                       add_approval, delete_model, diff_versions, model_version, upload_file]
