"""Training: jobs (list, submit, detail with live loss and logs, cancel) at `/console/training/...`.

Over the admin API's `/training/jobs` (list, create, get, cancel, logs) and `/training/experiments/{jobId}` (the
job's metric series). The submit form's fields follow the job type (static/training.js shows and hides the
fieldsets); the body sent holds only what the chosen type takes, and the API validates it regardless, its field
errors shown beside the fields.
"""

from __future__ import annotations

import math
from typing import Any

from litestar import Response, get, post

from gateway.console.api import ApiError
from gateway.console.forms import Form
from gateway.console.pages.common import filtered_list
from gateway.console.session import Console

__all__ = ["HANDLERS"]

JOB_TYPES: tuple[tuple[str, str], ...] = (
    ("finetune", "Fine-tune (from a base model)"),
    ("from_scratch", "From scratch (an architecture)"),
    ("pretrain", "Pretrain (an architecture)"),
    ("distributed", "Distributed (several nodes)"),
)
STATUSES = ("queued", "scheduled", "running", "retrying", "succeeded", "failed", "cancelled")
ACTIVE = frozenset({"queued", "scheduled", "running", "retrying"})
_LIST_FILTERS = ("status", "jobType", "modelId")
_NEEDS_BASE = ("finetune", "distributed")  # distributed: a base model or an architecture
_NEEDS_ARCH = ("from_scratch", "pretrain", "distributed")
_ARCH_INTS = (("contextLength", "Context length"), ("embeddingDim", "Embedding size"), ("hiddenDim", "Hidden size"),
              ("layers", "Layers"))
_HYPER_INTS = ("steps", "batchSize")
_HYPER_FLOATS = ("epochs", "learningRate")
FIELDS = ("name", "jobType", "baseModelId", "dataset.datasetId", "dataset.version", "architecture.modelType",
          *(f"architecture.{k}" for k, _ in _ARCH_INTS), "architecture", "trainer", "resources.useGpu",
          "resources.gpusPerNode", "resources.nodes", *(f"hyperparameters.{k}" for k in _HYPER_INTS + _HYPER_FLOATS),
          "hyperparameters", "env", "retryPolicy.maxRetries", "deadlineS", "register.name")
LOSS_KEYS = ("train_loss", "eval_loss")


# -- the list -------------------------------------------------------------------------------------------------

@get("/training", name="console-training")
async def jobs(console: Console) -> Response[str]:
    listing, form = await filtered_list(console, "/training/jobs", _LIST_FILTERS)
    active = bool(listing and any(j.get("status") in ACTIVE for j in listing.items))
    return console.render("training/jobs.html", {"listing": listing, "form": form, "active": active,
                                                 "job_types": JOB_TYPES, "statuses": STATUSES})


# -- the submit form ------------------------------------------------------------------------------------------

async def _choices(console: Console, dataset_id: str) -> dict[str, Any]:
    """The form's selects: approved non-external models, datasets with a ready version, that dataset's versions."""
    models = await console.api.list("/catalog/models", {"status": "approved", "pageSize": 200})
    bases = [(m["id"], f"{m['name']} ({m['type']}, {m['id']})") for m in models.items if m.get("type") != "external"]
    sets = await console.api.list("/catalog/datasets", {"pageSize": 200})
    datasets = [(d["id"], f"{d['name']} (latest v{d['latestVersion']}, {d['id']})") for d in sets.items
                if d.get("latestVersion")]
    versions: list[tuple[str, str]] = [("", "Latest ready")]
    if dataset_id:
        try:
            found = await console.api.list(f"/catalog/datasets/{dataset_id}/versions", {"pageSize": 200})
        except ApiError as err:
            if err.status not in (400, 404):
                raise
        else:
            versions += [(str(v["version"]), f"v{v['version']} · {v.get('rowCount') or 0} rows")
                         for v in found.items if v.get("status") == "ready"]
    return {"bases": [("", "Choose a base model…"), *bases], "datasets": [("", "Choose a dataset…"), *datasets],
            "versions": versions, "job_types": JOB_TYPES, "needs_base": _NEEDS_BASE, "needs_arch": _NEEDS_ARCH,
            "arch_ints": _ARCH_INTS}


async def _form_page(console: Console, form: Form, *, status: int = 200) -> Response[str]:
    if not console.can("developer"):
        raise ApiError(403, "Submitting a training job needs role developer or higher.")
    context = await _choices(console, str(form.get("dataset.datasetId", "")))
    return console.render("training/form.html", {"form": form, **context}, status=status)


@get("/training/new", name="console-training-new")
async def new_job(console: Console) -> Response[str]:
    """The form; `?dataset.datasetId=` (what htmx asks when the dataset changes) fills that dataset's versions."""
    params = console.request.query_params
    form = Form.of({"jobType": "finetune", "resources.useGpu": "", "hyperparameters.steps": "200",
                    "hyperparameters.learningRate": "0.003", "hyperparameters.batchSize": "64",
                    **{k: v for k, v in params.items() if k in FIELDS}})
    return await _form_page(console, form)


def _scalar(raw: str) -> Any:
    """A key=value line's value: a whole number, a number, true/false, else the text."""
    text = raw.strip()
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            break
        return value
    return text


def _pairs(form: Form, name: str, *, typed: bool) -> dict[str, Any]:
    """`key=value` lines (blank lines and `#` comments skipped); a line without `=` is an error on the field."""
    found: dict[str, Any] = {}
    for number, line in enumerate(str(form.get(name, "")).splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            form.errors[name] = f"Line {number} is not key=value"
            return {}
        found[key.strip()] = _scalar(value) if typed else value.strip()
    return found


def _job_body(form: Form) -> dict[str, Any]:
    """The `JobCreate` the form describes, with only what its job type takes."""
    job_type = form.text("jobType", required=True) or ""
    body: dict[str, Any] = {"name": form.text("name", required=True, max_chars=40), "jobType": job_type}
    if job_type in _NEEDS_BASE and (base := form.text("baseModelId")):
        body["baseModelId"] = base
    dataset: dict[str, Any] = {"datasetId": form.text("dataset.datasetId", required=True)}
    if (version := form.integer("dataset.version", minimum=1)) is not None:
        dataset["version"] = version
    body["dataset"] = dataset
    if job_type in ("from_scratch", "pretrain") or (job_type == "distributed" and "baseModelId" not in body):
        architecture: dict[str, Any] = _pairs(form, "architecture", typed=True)
        if model_type := form.text("architecture.modelType", max_chars=200):
            architecture["modelType"] = model_type
        for key, _ in _ARCH_INTS:
            if (value := form.integer(f"architecture.{key}", minimum=1)) is not None:
                architecture[key] = value
        body["architecture"] = architecture  # blank fields: the trainer's defaults
    hyper = _pairs(form, "hyperparameters", typed=True)
    for key in _HYPER_INTS:
        if (whole := form.integer(f"hyperparameters.{key}", minimum=1)) is not None:
            hyper[key] = whole
    for key in _HYPER_FLOATS:
        if (number := form.number(f"hyperparameters.{key}")) is not None:
            hyper[key] = number
    body["hyperparameters"] = hyper
    if trainer := form.text("trainer"):
        body["trainer"] = trainer
    resources: dict[str, Any] = {}
    use_gpu = form.text("resources.useGpu")
    if use_gpu in ("true", "false"):
        resources["useGpu"] = use_gpu == "true"
    if (gpus := form.integer("resources.gpusPerNode", minimum=1)) is not None:
        resources["gpusPerNode"] = gpus
    if job_type == "distributed":
        resources["nodes"] = form.integer("resources.nodes", required=True, minimum=1)
    body["resources"] = resources
    if (retries := form.integer("retryPolicy.maxRetries", minimum=0)) is not None:
        body["retryPolicy"] = {"maxRetries": retries}
    if (deadline := form.integer("deadlineS", minimum=1)) is not None:
        body["deadlineS"] = deadline
    if env := _pairs(form, "env", typed=False):
        body["env"] = env
    if register := form.text("register.name", max_chars=100):
        body["register"] = {"name": register}
    return body


@post("/training/new", name="console-training-create", status_code=200)
async def create_job(console: Console) -> Response[str]:
    form = await Form.read(console.request)
    body = _job_body(form)
    if form.ok:
        try:
            created = await console.api.send("POST", "/training/jobs", body)
        except ApiError as err:
            if err.status not in (400, 409, 422):  # not allowed, or the API is down: the error page
                raise
            if err.status == 409 and not err.errors:  # the name is taken: said beside the name
                form.errors["name"] = err.message
            else:
                form.fail(err, FIELDS)
        else:
            return console.redirect(f"/console/training/jobs/{created['id']}")
    return await _form_page(console, form, status=422)


# -- one job --------------------------------------------------------------------------------------------------

def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def loss_chart(points: list[dict[str, Any]], label: str) -> dict[str, Any]:
    """A `ui.chart` line spec of one metric series by step (non-finite values are gaps)."""
    return {"kind": "line", "xLabel": "Step", "x": [int(p["step"]) for p in points],
            "series": [{"label": label, "values": [_finite(p["value"]) for p in points]}]}


async def _names(console: Console, job: dict[str, Any]) -> dict[str, str]:
    """Names of the job's base model, result model and dataset, where the catalog still has them."""
    found: dict[str, str] = {}
    for key, path in (("base", f"/catalog/models/{job.get('baseModelId')}" if job.get("baseModelId") else None),
                      ("result", f"/catalog/models/{job.get('resultModelId')}" if job.get("resultModelId") else None),
                      ("dataset", f"/catalog/datasets/{job['dataset']['datasetId']}")):
        if path is None:
            continue
        try:
            found[key] = str((await console.api.get(path))["name"])
        except ApiError:
            continue
    return found


async def _logs(console: Console, job_id: str) -> tuple[str | None, str | None]:
    """The last attempt's log tail, or why there is none (before the first attempt; the runtime unreachable)."""
    if not console.can("developer"):
        return None, None
    try:
        found = await console.api.get(f"/training/jobs/{job_id}/logs", {"tailLines": 200})
    except ApiError as err:
        if err.status in (403, 404, 409, 503):
            return None, err.message
        raise
    return str(found.get("logs") or ""), None


@get("/training/jobs/{job_id:str}", name="console-training-job")
async def job_detail(console: Console, job_id: str) -> Response[str]:
    job = await console.api.get(f"/training/jobs/{job_id}")
    experiment = await console.api.get(f"/training/experiments/{job_id}",
                                       [("keys", ",".join(LOSS_KEYS)), ("maxPoints", 300)])
    series = experiment.get("metrics") or {}
    charts = [(key, label, loss_chart(series.get(key) or [], label))
              for key, label in (("train_loss", "Train loss"), ("eval_loss", "Eval loss"))]
    logs, logs_note = await _logs(console, job_id)
    return console.render("training/job.html", {
        "job": job, "charts": charts, "logs": logs, "logs_note": logs_note, "names": await _names(console, job),
        "active": job["status"] in ACTIVE, "run": experiment.get("run"),
    })


@post("/training/jobs/{job_id:str}/cancel", name="console-training-cancel", status_code=200)
async def cancel_job(console: Console, job_id: str) -> Response[str]:
    await console.api.send("POST", f"/training/jobs/{job_id}/cancel")
    return console.redirect(f"/console/training/jobs/{job_id}")


HANDLERS: list[Any] = [jobs, new_job, create_job, job_detail, cancel_job]
