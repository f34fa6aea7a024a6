"""Catalog datasets: the list with its PII and quality filters, registering a dataset, uploading versions
(streamed through to the admin API), a version's reports and preview, and comparing two versions
(`/console/catalog/datasets/...`).

Uploads: the browser sends the file as the raw request body (console.js `form[data-upload]`, for its
progress events); the admin API takes one multipart file part, so `upload` frames the body as that part
on the fly, chunk by chunk, without ever holding the file.
"""

from __future__ import annotations

import json
import re
from typing import Any

from litestar import Response, get, post

from gateway.console.api import ApiError
from gateway.console.forms import Form
from gateway.console.pages.common import filtered_list, list_query
from gateway.console.session import Console
from gateway.console.uploads import forward_file, json_answer

__all__ = ["HANDLERS"]


BASE = "/console/catalog/datasets"
_FILTERS = ("name", "ownerTeam", "piiStatus", "minQuality", "maxQuality", "version")
_FIELDS = ["name", "ownerTeam", "description", "format", "schema", "requiredColumns", "piiRules"]
FORMATS = [("csv", "CSV"), ("jsonl", "JSONL"), ("parquet", "Parquet")]
PII_STATUSES = ("unknown", "clean", "detected")
ACCEPT = ".csv,.jsonl,.ndjson,.json,.parquet,.pq"
PREVIEW_ROWS = 20
CELL_CHARS = 120
_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}$")
_SCHEMA_LINE = re.compile(r"^\s*(?P<name>[^:=]+?)\s*[:=]\s*(?P<type>\S+)\s*$")


def _positive(raw: str | None) -> int | None:
    return int(raw) if raw and raw.isdigit() and 0 < int(raw) < 1_000_000 else None


# ---- list ------------------------------------------------------------------------------------------


@get("/catalog/datasets", name="console-datasets")
async def datasets(console: Console) -> Response[str]:
    listing, form = await filtered_list(console, "/catalog/datasets", _FILTERS)  # e.g. quality above 100
    return console.render("datasets/list.html", {"listing": listing, "form": form, "pii_statuses": PII_STATUSES})


# ---- register --------------------------------------------------------------------------------------


def _form_page(console: Console, form: Form, *, status: int = 200) -> Response[str]:
    return console.render("datasets/new.html", {"form": form, "formats": FORMATS}, status=status)


@get("/catalog/datasets/new", name="console-dataset-new")
async def new_dataset(console: Console) -> Response[str]:
    return _form_page(console, Form.of({"ownerTeam": ""}))


def _schema(form: Form) -> dict[str, str] | None:
    """`column: type` per line (or a JSON object); None when empty or not readable (the error is recorded)."""
    raw = str(form.get("schema", "")).strip()
    if not raw:
        return None
    if raw.startswith("{"):
        value = form.json("schema", kind=dict)
        if value is not None and not all(isinstance(v, str) for v in value.values()):
            form.errors["schema"] = "Each column's type must be a word such as string or integer"
            return None
        return value
    schema: dict[str, str] = {}
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        match = _SCHEMA_LINE.match(line)
        if match is None:
            form.errors["schema"] = f"Line {number}: write column: type, e.g. question: string"
            return None
        schema[match["name"]] = match["type"]
    return schema


@post("/catalog/datasets/new", name="console-dataset-create", status_code=200)
async def create_dataset(console: Console) -> Response[str]:
    """Registers the dataset (no versions yet); its page then asks for the first file."""
    form = await Form.read(console.request)
    body: dict[str, Any] = {"name": form.text("name", required=True, max_chars=100),
                            "ownerTeam": form.text("ownerTeam", required=True, max_chars=64),
                            "description": form.text("description", max_chars=4000) or ""}
    if fmt := form.text("format"):
        body["format"] = fmt
    schema = _schema(form)
    if schema is not None:
        body["schema"] = schema
    if required := form.words("requiredColumns"):
        body["requiredColumns"] = required
    if rules := form.words("piiRules"):
        body["piiRules"] = rules
    if form.ok:
        try:
            created = await console.api.send("POST", "/catalog/datasets", body)
        except ApiError as err:
            if err.status in (401, 403):
                raise  # not a form problem: the sign-in or "Not allowed" page
            if err.status == 409:
                form.errors["name"] = err.message
            else:
                form.fail(err, _FIELDS)
        else:
            return console.redirect(f"{BASE}/{created['id']}?registered=1")
    return _form_page(console, form, status=422)


# ---- upload (streamed) -----------------------------------------------------------------------------


def _invalid_message(err: ApiError) -> str:
    """An invalid version's refusal with every validation error in words."""
    report = err.data if isinstance(err.data, dict) else {}
    issues = ((report.get("validation") or {}).get("errors") or []) if isinstance(report, dict) else []
    words = [_issue_text(i) for i in issues[:5] if isinstance(i, dict)]
    if not words:
        return err.message
    more = f" (and {len(issues) - 5} more)" if len(issues) > 5 else ""
    version = report.get("version")
    lead = f"Version {version} is invalid" if version else "The file is invalid"
    return f"{lead}: {'; '.join(words)}{more}. Its report is kept on this page; fix the file and upload it again."


def _issue_text(issue: dict[str, Any]) -> str:
    where = [f"{k} {issue[k]}" for k in ("line", "row") if issue.get(k) is not None]
    text = str(issue.get("message", issue.get("code", "error")))
    return text if not where or any(w in text for w in where) else f"{text} ({', '.join(where)})"


@post("/catalog/datasets/{dataset_id:str}/upload", name="console-dataset-upload", status_code=200,
      request_max_body_size=None)
async def upload(console: Console, dataset_id: str) -> Response[bytes]:
    """The raw body (`?filename=`) to the API as one multipart file part, streamed (`uploads.py`): JSON with
    `location` (the new version's page) or `message` (an invalid file's errors in words), under the API's status."""
    try:
        _, report = await forward_file(console, f"/catalog/datasets/{dataset_id}/upload")
    except ApiError as err:
        return json_answer(err.status, {"message": _invalid_message(err) if err.status in (413, 422)
                                        else err.message})
    version = (report or {}).get("version")
    return json_answer(201, {"location": f"{BASE}/{dataset_id}?version={version}&uploaded={version}",
                             "message": f"Version {version} is {(report or {}).get('status', 'stored')}"})


# ---- detail ----------------------------------------------------------------------------------------


def cell(value: Any) -> tuple[str, str, bool]:
    """A preview cell as (shown, full when cut, is null): text as is, anything else as compact JSON."""
    if value is None:
        return "null", "", True
    full = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    if len(full) > CELL_CHARS:
        return full[:CELL_CHARS - 1] + "…", full, False
    return full, "", False


def _preview_table(preview: dict[str, Any]) -> dict[str, Any]:
    names = [c["name"] for c in preview.get("schema") or []]
    for row in preview.get("rows") or []:
        names += [k for k in row if k not in names]
    rows = [[cell(row.get(n)) for n in names] for row in preview.get("rows") or []]
    return {"columns": names, "rows": rows}


@get("/catalog/datasets/{dataset_id:str}", name="console-dataset")
async def dataset(console: Console, dataset_id: str) -> Response[str]:
    params = console.request.query_params
    found = await console.api.get(f"/catalog/datasets/{dataset_id}")
    versions = await console.api.list(f"/catalog/datasets/{dataset_id}/versions",
                                      list_query(console, (), page_size=50))
    wanted = _positive(params.get("version"))
    report: dict[str, Any] | None = None
    report_problem = None
    if versions.total:
        try:
            report = await console.api.get(f"/catalog/datasets/{dataset_id}/validation",
                                           {"version": wanted} if wanted else {})
        except ApiError as err:
            if err.status != 404:
                raise
            report_problem = err.message
    preview: dict[str, Any] | None = None
    preview_problem = None
    shown = wanted or found.get("latestVersion")
    if report is not None and report.get("status") != "ready" and not wanted:
        shown = found.get("latestVersion")  # the latest attempt failed: preview the latest ready version
    if shown:
        try:
            preview = await console.api.get(f"/catalog/datasets/{dataset_id}/preview",
                                            {"version": shown, "rows": PREVIEW_ROWS})
        except ApiError as err:
            if err.status not in (404, 409):
                raise
            preview_problem = err.message
    ready = [v["version"] for v in versions.items if v.get("status") == "ready"]
    return console.render("datasets/detail.html", {
        "ds": found, "versions": versions, "report": report, "report_problem": report_problem,
        "preview": preview, "table": _preview_table(preview) if preview else None, "preview_problem": preview_problem,
        "ready": ready, "accept": ACCEPT, "registered": params.get("registered") == "1",
        "uploaded": _positive(params.get("uploaded")),
    })


# ---- compare ---------------------------------------------------------------------------------------


@get("/catalog/datasets/{dataset_id:str}/compare", name="console-dataset-compare")
async def compare(console: Console, dataset_id: str) -> Response[str]:
    params = console.request.query_params
    found = await console.api.get(f"/catalog/datasets/{dataset_id}")
    versions = await console.api.list(f"/catalog/datasets/{dataset_id}/versions", {"pageSize": 200})
    ready = [v["version"] for v in versions.items if v.get("status") == "ready"]
    form = Form.of({"from": params.get("from", str(ready[1]) if len(ready) > 1 else ""),
                    "to": params.get("to", str(ready[0]) if ready else "")})
    old, new = _positive(form.get("from")), _positive(form.get("to"))
    diff = None
    if "from" in params or "to" in params:
        if old is None:
            form.errors["from"] = "Choose a version"
        if new is None:
            form.errors["to"] = "Choose a version"
        if old is not None and old == new:
            form.errors["to"] = "Choose a different version from the first"
    if form.ok and old is not None and new is not None and old != new:
        try:
            diff = await console.api.get(f"/catalog/datasets/{dataset_id}/versions/{old}/compare/{new}")
        except ApiError as err:
            if err.status not in (400, 404, 409):
                raise
            form.message = err.message
    options = [(str(v), f"version {v}") for v in ready]
    return console.render("datasets/compare.html", {"ds": found, "form": form, "options": options, "diff": diff})


HANDLERS: list[Any] = [datasets, new_dataset, create_dataset, upload, dataset, compare]
