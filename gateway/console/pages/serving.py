"""Serving: endpoints with their health, revisions and traffic; deploy, redeploy, roll back, promote, delete
(`/console/serving/...`).

Every page reads `/serving/endpoints` as the signed-in key and every button is a call the API decides on:
deploy, redeploy, rollback, traffic and delete need operator, promotion to PROD and a gate override admin.
A refusal that concerns a form (a field the API names, a conflict, the promotion gate's verdict) is shown
on the page it came from, in words, beside the field when the API names one.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from litestar import Response, get, post

from gateway.console.api import ApiError
from gateway.console.forms import Form
from gateway.console.pages.common import list_query
from gateway.console.session import Console

__all__ = ["HANDLERS"]

ENVIRONMENTS = ("DEV", "STG", "PROD")
STATUSES = ("deploying", "ready", "degraded", "failed", "scaled_to_zero", "deleting")
NEXT_ENVIRONMENT = {"DEV": "STG", "STG": "PROD"}
# While an endpoint is in one of these states its status block refreshes itself (htmx, every 2 s).
UNSETTLED = frozenset({"deploying", "degraded", "deleting"})
_FILTERS = ("environment", "modelId", "status")
_DEPLOY_FIELDS = ("name", "modelId", "environment", "route", "useGpu", "gpuCount", "servingRuntimeImage",
                  "minReplicas", "maxReplicas", "autoscaling.targetQueueLength", "autoscaling.scaleDownDelayS",
                  "vllmArgs", "queueTimeoutS")
_REDEPLOY_FIELDS = ("useGpu", "gpuCount", "servingRuntimeImage", "canaryPercent", "reason")
_FORM_ERRORS = (400, 404, 409, 422)  # shown on the page; 401/403/5xx go to the console's error pages
_REVISIONS_PAGE = 20


def _base(endpoint_id: str) -> str:
    return f"/console/serving/{endpoint_id}"


async def _models(console: Console) -> list[dict[str, Any]]:
    """The catalog's models a deploy may name (not retired), approved ones first."""
    try:
        listing = await console.api.list("/catalog/models", {"pageSize": 200})
    except ApiError as err:
        if err.status not in (403, 404):  # no catalog here, or not for this key: type the id instead
            raise
        return []
    usable = [m for m in listing.items if m.get("status") != "retired"]
    return sorted(usable, key=lambda m: (m.get("status") != "approved", str(m.get("name", ""))))


def _model_options(models: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["id"], f"{m['name']} ({m['type']}, {m['status']}, v{m['version']})") for m in models]


# -- list ---------------------------------------------------------------------------------------------------


@get("/serving", name="console-serving")
async def endpoints(console: Console) -> Response[str]:
    query = list_query(console, _FILTERS)
    listing = await console.api.list("/serving/endpoints", query)
    models = await _models(console)
    return console.render("serving/list.html", {
        "listing": listing, "environments": ENVIRONMENTS, "statuses": STATUSES,
        "model_options": [(m["id"], m["name"]) for m in models],
        "deleted": console.request.query_params.get("deleted", ""),
    })


# -- deploy -------------------------------------------------------------------------------------------------


def _deploy_page(console: Console, form: Form, models: list[dict[str, Any]], *, status: int = 200) -> Response[str]:
    return console.render("serving/deploy.html", {
        "form": form, "model_options": _model_options(models), "environments": ENVIRONMENTS,
    }, status=status)


@get("/serving/new", name="console-serving-new")
async def new_endpoint(console: Console) -> Response[str]:
    if not console.can("operator"):
        raise ApiError(403, f"Deploying an endpoint needs role operator; you are {console.user.role.name}")
    params = console.request.query_params
    form = Form.of({"modelId": params.get("modelId", ""), "environment": params.get("environment", "DEV"),
                    "useGpu": "true", "minReplicas": "1", "maxReplicas": "1"})
    return _deploy_page(console, form, await _models(console))


def _vllm_args(form: Form, name: str = "vllmArgs") -> list[str] | None:
    """One argument a line, or a JSON array of strings."""
    raw = str(form.get(name, "")).strip()
    if not raw:
        return None
    if raw.startswith("["):
        value = form.json(name, kind=list)
        if value is None:
            return None
        if not all(isinstance(v, str) for v in value):
            form.errors[name] = "Must be a JSON array of strings"
            return None
        return list(value)
    return [line.strip() for line in raw.splitlines() if line.strip()]


def _deploy_body(form: Form) -> dict[str, Any]:
    body: dict[str, Any] = {"name": form.text("name", required=True, max_chars=40),
                            "modelId": form.text("modelId", required=True, max_chars=40),
                            "environment": form.text("environment") or "DEV"}
    if route := form.text("route", max_chars=100):
        body["route"] = route
    body["useGpu"] = use_gpu = form.checked("useGpu")
    if not use_gpu:
        form.values.pop("useGpu", None)
    elif (gpus := form.integer("gpuCount", minimum=1)) is not None:
        body["gpuCount"] = gpus
    if image := form.text("servingRuntimeImage", max_chars=300):
        body["servingRuntimeImage"] = image
    if (low := form.integer("minReplicas", minimum=0)) is not None:
        body["minReplicas"] = low
    if (high := form.integer("maxReplicas", minimum=1)) is not None:
        body["maxReplicas"] = high
    scaling: dict[str, Any] = {}
    if (queue := form.number("autoscaling.targetQueueLength")) is not None:
        scaling["targetQueueLength"] = queue
    if (delay := form.integer("autoscaling.scaleDownDelayS", minimum=0)) is not None:
        scaling["scaleDownDelayS"] = delay
    if scaling:
        body["autoscaling"] = scaling
    if (args := _vllm_args(form)) is not None:
        body["vllmArgs"] = args
    if (timeout := form.number("queueTimeoutS")) is not None:
        body["queueTimeoutS"] = timeout
    return body


def _place_conflict(form: Form, err: ApiError) -> None:
    """A 404/409 that concerns one field of the deploy form: the model, the name or the route."""
    data = err.data if isinstance(err.data, dict) else {}
    if err.status == 404 or "modelStatus" in data:
        form.errors["modelId"] = err.message
    elif err.status == 409 and "endpointId" in data:
        form.errors["route" if "routed as" in err.message else "name"] = err.message
    else:
        form.fail(err, _DEPLOY_FIELDS)


@post("/serving/new", name="console-serving-create", status_code=200)
async def create_endpoint(console: Console) -> Response[str]:
    form = await Form.read(console.request)
    body = _deploy_body(form)
    if form.ok:
        try:
            created = await console.api.send("POST", "/serving/endpoints", body)
        except ApiError as err:
            if err.status not in _FORM_ERRORS:
                raise
            if err.status in (404, 409):
                _place_conflict(form, err)
            else:
                form.fail(err, _DEPLOY_FIELDS)
        else:
            return console.redirect(_base(created["id"]))
    return _deploy_page(console, form, await _models(console), status=422)


# -- detail -------------------------------------------------------------------------------------------------


def _forms(endpoint: dict[str, Any]) -> dict[str, Form]:
    canary = endpoint["slots"].get("canary", {}).get("weightPercent", 0)
    return {
        "redeploy": Form.of({"useGpu": "true" if endpoint["useGpu"] else "false",
                             "gpuCount": str(endpoint["gpuCount"]) if endpoint["useGpu"] else ""}),
        "traffic": Form.of({"canaryPercent": str(canary) if canary else ""}),  # the API shows the share in effect
        "promote": Form.of({"environment": NEXT_ENVIRONMENT.get(endpoint["environment"], "")}),
        "rollback": Form.of(),
    }


async def _detail(console: Console, endpoint_id: str, *, failed: tuple[str, Form] | None = None,
                  status: int = 200, gate: Any = None, delete_result: Any = None) -> Response[str]:
    endpoint = await console.api.get(f"/serving/endpoints/{endpoint_id}")
    raw = console.request.query_params.get("page", "1") if console.request.method == "GET" else "1"
    page = int(raw) if raw.isdigit() and 0 < int(raw) < 1_000_000 else 1
    revisions = await console.api.list(f"/serving/endpoints/{endpoint_id}/revisions",
                                       {"page": page, "pageSize": _REVISIONS_PAGE})
    forms = _forms(endpoint)
    if failed is not None:
        forms[failed[0]] = failed[1]
    canary = endpoint.get("canaryRevision")
    return console.render("serving/detail.html", {
        "e": endpoint, "revisions": revisions, "forms": forms, "base": _base(endpoint_id),
        "refresh": endpoint["status"] in UNSETTLED,
        "canary_running": canary is not None and canary != endpoint["currentRevision"],
        "next_environment": NEXT_ENVIRONMENT.get(endpoint["environment"]),
        "gate": gate, "delete_result": delete_result,
    }, status=status)


@get("/serving/{endpoint_id:str}", name="console-serving-endpoint")
async def endpoint_detail(console: Console, endpoint_id: str) -> Response[str]:
    return await _detail(console, endpoint_id)


async def _act(console: Console, endpoint_id: str, which: str, form: Form, method: str, path: str,
               body: Any, fields: tuple[str, ...] = ()) -> Response[str]:
    """Send one action; on success back to the detail page, on a refusal the page again with it in words."""
    if form.ok:
        try:
            await console.api.send(method, f"/serving/endpoints/{endpoint_id}{path}", body)
        except ApiError as err:
            if err.status not in _FORM_ERRORS:
                raise  # a 404 for the endpoint itself is the "Not found" page when the detail is read again
            form.fail(err, fields)
            gate = err.data.get("gate") if isinstance(err.data, dict) else None
            return await _detail(console, endpoint_id, failed=(which, form), status=err.status, gate=gate)
        return console.redirect(_base(endpoint_id))
    return await _detail(console, endpoint_id, failed=(which, form), status=422)


@post("/serving/{endpoint_id:str}/rollback", name="console-serving-rollback", status_code=200)
async def rollback(console: Console, endpoint_id: str) -> Response[str]:
    form = await Form.read(console.request)
    body: dict[str, Any] = {}
    if (revision := form.integer("revision", minimum=1)) is not None:
        body["revision"] = revision
    if reason := form.text("reason", max_chars=1000):
        body["reason"] = reason
    return await _act(console, endpoint_id, "rollback", form, "POST", "/rollback", body)


@post("/serving/{endpoint_id:str}/redeploy", name="console-serving-redeploy", status_code=200)
async def redeploy(console: Console, endpoint_id: str) -> Response[str]:
    form = await Form.read(console.request)
    use_gpu = form.checked("useGpu")
    body: dict[str, Any] = {"useGpu": use_gpu}
    if not use_gpu:
        form.values["useGpu"] = "false"
    elif (gpus := form.integer("gpuCount", minimum=1)) is not None:
        body["gpuCount"] = gpus
    if image := form.text("servingRuntimeImage", max_chars=300):
        body["servingRuntimeImage"] = image
    if (share := form.integer("canaryPercent", minimum=1)) is not None:
        body["canaryPercent"] = share
    if reason := form.text("reason", max_chars=1000):
        body["reason"] = reason
    return await _act(console, endpoint_id, "redeploy", form, "POST", "/redeploy", body, _REDEPLOY_FIELDS)


@post("/serving/{endpoint_id:str}/traffic", name="console-serving-traffic", status_code=200)
async def traffic(console: Console, endpoint_id: str) -> Response[str]:
    form = await Form.read(console.request)
    share = form.integer("canaryPercent", required=True, minimum=0)
    if share is not None and share > 100:
        form.errors["canaryPercent"] = "At most 100"
    body: dict[str, Any] = {"canaryPercent": share}
    if reason := form.text("reason", max_chars=1000):
        body["reason"] = reason
    return await _act(console, endpoint_id, "traffic", form, "POST", "/traffic", body, ("canaryPercent", "reason"))


@post("/serving/{endpoint_id:str}/promote", name="console-serving-promote", status_code=200)
async def promote(console: Console, endpoint_id: str) -> Response[str]:
    form = await Form.read(console.request)
    body: dict[str, Any] = {"environment": form.text("environment", required=True)}
    if form.checked("override"):
        body["override"] = True
    if reason := form.text("reason", max_chars=1000):
        body["reason"] = reason
    return await _act(console, endpoint_id, "promote", form, "POST", "/promote", body,
                      ("environment", "override", "reason"))


@post("/serving/{endpoint_id:str}/delete", name="console-serving-delete", status_code=200)
async def delete_endpoint(console: Console, endpoint_id: str) -> Response[str]:
    form = await Form.read(console.request)
    try:
        result = await console.api.send("DELETE", f"/serving/endpoints/{endpoint_id}")
    except ApiError as err:
        if err.status not in (409, 502):
            raise
        form.message = err.message
        return await _detail(console, endpoint_id, failed=("delete", form), status=err.status,
                             delete_result=err.data if isinstance(err.data, dict) else None)
    gone = form.text("name", max_chars=40) or (result or {}).get("endpointId") or endpoint_id
    return console.redirect("/console/serving?" + urlencode({"deleted": gone}))


HANDLERS: list[Any] = [endpoints, new_endpoint, create_endpoint, endpoint_detail, rollback, redeploy, traffic,
                       promote, delete_endpoint]
