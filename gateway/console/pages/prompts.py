"""Prompts: templates with their versions (`/console/prompts/...`) and A/B experiments with their lifecycle and
results (`/console/experiments/...`), over the admin API's `/prompts/templates` and `/prompts/experiments`.

A template's or experiment's `document` is the gateway YAML's entry as is (snake_case); the forms use its field
names, so the API's error paths (`document.messages[0].content`, `document.variants[1].template`) land beside
the form field they concern. Objects the YAML declares (`source: config`) are read-only through the API: the
pages say so and offer no edit or delete; lifecycle actions work on both sources.

Detail pages live under `/console/prompts/t/{name}` and `/console/experiments/e/{id}`, so a template or an
experiment may be called `new` without hiding the create forms.
"""

from __future__ import annotations

import json
import re
from typing import Any

from litestar import Response, get, post
from litestar.exceptions import NotFoundException

from gateway.console.api import ApiError, Listing, error_of
from gateway.console.forms import Form
from gateway.console.pages.common import list_query
from gateway.console.session import Console

__all__ = ["HANDLERS"]

_T = "/prompts/templates"
_E = "/prompts/experiments"
_ROLES = ("system", "developer", "user", "assistant")
_STATES = ("draft", "running", "paused", "stopped")
_SOURCES = (("api", "api"), ("config", "config (gateway YAML)"))
_MAX_MESSAGES = 50

# What an experiment may be judged on, and which number of a variant's results is that metric.
METRICS: dict[str, tuple[str, str]] = {
    "feedback_score": ("Feedback score (mean, higher is better)", "feedbackScoreMean"),
    "feedback_rate": ("Positive feedback rate (higher is better)", "feedbackRate"),
    "error_rate": ("Error rate (lower is better)", "errorRate"),
    "latency_p50_s": ("Latency p50, seconds (lower is better)", "latencyP50S"),
    "cost_per_request_usd": ("Cost per request, USD (lower is better)", "costPerRequestUsd"),
}
# The comparisons' metric names as the results name them, with the variant field they compare.
_COMPARED = {"error_rate": "errorRate", "feedback_rate": "feedbackRate", "feedback_score": "feedbackScoreMean",
             "cost_per_request_usd": "costPerRequestUsd", "prompt_tokens": "promptTokensPerRequest",
             "completion_tokens": "completionTokensPerRequest", "latency_p50_s": "latencyP50S",
             "latency_p95_s": "latencyP95S", "ttft_p50_s": "ttftP50S"}

_DONE = {  # what a page says after a redirect (`?done=`): fixed words, never text from the URL
    "created": "Created.", "updated": "Saved as a new version.", "revised": "Saved as a new revision.",
    "unchanged": "No changes: the document is the same as before.",
    "start": "Experiment started.", "pause": "Experiment paused.", "stop": "Experiment stopped.",
    "rollback": "Rolled back: all of the experiment's traffic goes to the control variant.",
}
_ACTIONS = ("start", "pause", "stop", "rollback")

_VARIANTS_EXAMPLE = json.dumps([
    {"name": "control", "weight": 1},
    {"name": "cooler", "weight": 1, "params": {"temperature": 0.2}},
], indent=2)
_VARIANTS_HELP = ('A JSON array of 2-20 variants: {"name", "weight" (relative, default 1), "template" (a template '
                  'name for its latest version, or name@version), "route" (serve this arm by another route), '
                  '"params" (sampling parameters: temperature, top_p, max_tokens, seed, …), "variables" (template '
                  'variables this arm sets)}. The first variant is the control unless "Control variant" names one.')
_GUARDRAILS_HELP = ('A JSON array, e.g. [{"metric": "error_rate", "max_ratio_to_control": 1.5, "min_requests": 200}]: '
                    'metric error_rate, latency_p95_s or cost_per_request_usd, with max and/or max_ratio_to_control. '
                    'A variant that breaches it is stopped. Empty: none.')
_VARIABLES_HELP = ('A JSON array of the variables the messages use, e.g. [{"name": "product", "default": "llmops"}, '
                   '{"name": "language", "type": "string", "max_length": 40, "default": "English"}]. type: string, '
                   'integer, number, boolean, list or object; no default: the request must give it. Empty: none.')


# -- shared helpers ----------------------------------------------------------------------------------

def _done(console: Console) -> str | None:
    return _DONE.get(console.request.query_params.get("done", ""))


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _fail(form: Form, err: ApiError, fields: list[str], *, json_fields: tuple[str, ...] = (),
          rows: list[int] | None = None) -> None:
    """The API's refusal on the form: `document.` paths as the form's field names (not signed in, or not
    allowed: the error page instead, as for any other call).

    Message rows are renumbered to the form's (blank rows are not sent), and an error inside a JSON field
    keeps its path in front of its message (`variants[1].template: no template named 'x'`)."""
    if err.status in (401, 403):
        raise err
    errors: dict[str, str] = {}
    for path, message in err.errors.items():
        bare = path.removeprefix("document.")
        name = bare.replace("[", ".").replace("]", "")
        found = re.fullmatch(r"messages\.(\d+)((?:\..*)?)", name)
        if rows is not None and found and int(found.group(1)) < len(rows):
            name = f"messages.{rows[int(found.group(1))]}{found.group(2)}"
        for field in json_fields:
            if bare.startswith((field + "[", field + ".")):
                message = f"{bare}: {message}"
        errors[name] = message
    form.fail(ApiError(err.status, err.message, errors, err.data), fields)


def _template_ref(ref: str | None) -> tuple[str, int | None] | None:
    if not ref:
        return None
    name, _, version = ref.partition("@")
    return name, int(version) if version.isdigit() else None


# -- templates ---------------------------------------------------------------------------------------

def _template_values(doc: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {"name": doc.get("name", ""), "description": doc.get("description", ""),
                              "variables": _pretty(doc["variables"]) if doc.get("variables") else ""}
    for i, message in enumerate(doc.get("messages", [])):
        values[f"messages.{i}.role"] = message.get("role", "system")
        values[f"messages.{i}.content"] = message.get("content", "")
    return values


def _message_rows(form: Form) -> int:
    """How many message rows the form shows: those filled in, plus one blank one to add a message."""
    filled = [int(m.group(1)) for key in form.values
              if (m := re.fullmatch(r"messages\.(\d+)\.content", key)) and str(form.values[key]).strip()]
    return min(_MAX_MESSAGES, max(2, (max(filled) + 2) if filled else 2))


def _template_doc(form: Form, name: str | None) -> tuple[dict[str, Any], list[int]]:
    """The document the form describes, and which form rows its messages came from."""
    doc_name = name or form.text("name", required=True, max_chars=64)
    messages: list[dict[str, str]] = []
    rows: list[int] = []
    for i in range(_MAX_MESSAGES):
        raw = form.values.get(f"messages.{i}.content")
        if raw is None:
            continue
        content = str(raw).replace("\r\n", "\n")
        if not content.strip():
            continue
        role = str(form.get(f"messages.{i}.role", "system"))
        if role not in _ROLES:
            form.errors[f"messages.{i}.role"] = f"Must be one of {', '.join(_ROLES)}"
        messages.append({"role": role, "content": content})
        rows.append(i)
    if not messages:
        form.errors["messages.0.content"] = "Write at least one message"
    doc: dict[str, Any] = {"name": doc_name, "messages": messages,
                           "variables": form.json("variables", kind=list) or [],
                           "description": form.text("description", max_chars=2000) or ""}
    return doc, rows


def _template_form(console: Console, form: Form, *, template: dict[str, Any] | None = None,
                   status: int = 200) -> Response[str]:
    return console.render("prompts/template_form.html", {
        "form": form, "template": template, "roles": _ROLES, "rows": range(_message_rows(form)),
        "variables_help": _VARIABLES_HELP,
    }, status=status)


@get("/prompts", name="console-prompts")
async def templates(console: Console) -> Response[str]:
    listing = await console.api.list(_T, list_query(console, ("name", "source")))
    return console.render("prompts/templates.html", {"listing": listing, "sources": _SOURCES})


@get("/prompts/new", name="console-prompt-new")
async def new_template(console: Console) -> Response[str]:
    return _template_form(console, Form.of({"messages.0.role": "system", "messages.1.role": "user"}))


@post("/prompts/new", name="console-prompt-create", status_code=200)
async def create_template(console: Console) -> Response[str]:
    form = await Form.read(console.request)
    doc, rows = _template_doc(form, None)
    if form.ok:
        try:
            created = await console.api.send("POST", _T, {"document": doc})
        except ApiError as err:
            _fail(form, err, ["name", "description", "variables", "messages"], json_fields=("variables",), rows=rows)
        else:
            return console.redirect(f"/console/prompts/t/{created['name']}?done=created")
    return _template_form(console, form, status=422)


@get("/prompts/t/{name:str}", name="console-prompt")
async def template_detail(console: Console, name: str) -> Response[str]:
    template = await console.api.get(f"{_T}/{name}")
    versions = await console.api.list(f"{_T}/{name}/versions", list_query(console, (), page_size=20))
    return console.render("prompts/template.html", {"template": template, "shown": template, "versions": versions,
                                                    "done": _done(console)})


@get("/prompts/t/{name:str}/versions/{version:int}", name="console-prompt-version")
async def template_version(console: Console, name: str, version: int) -> Response[str]:
    shown = await console.api.get(f"{_T}/{name}/versions/{version}")
    try:
        latest: dict[str, Any] | None = await console.api.get(f"{_T}/{name}")
    except ApiError as err:
        if err.status != 404:
            raise
        latest = None  # a deleted template: its versions stay readable
    return console.render("prompts/version.html", {"shown": shown, "latest": latest})


@get("/prompts/t/{name:str}/edit", name="console-prompt-edit")
async def edit_template(console: Console, name: str) -> Response[str]:
    """The latest version in the form (or `?from=N`: an older version, to bring it back as the next one)."""
    template = await console.api.get(f"{_T}/{name}")
    start = template
    source = console.request.query_params.get("from", "")
    if source.isdigit() and int(source) != template["version"]:
        start = await console.api.get(f"{_T}/{name}/versions/{int(source)}")
    form = Form.of({**_template_values(start["document"]), "expectedVersion": template["version"]})
    if template["source"] == "config":
        form.message = (f"Template {name!r} is declared in the gateway's YAML (source: config): the admin API "
                        "refuses to change it here. Change it in the file and reload the gateway.")
    return _template_form(console, form, template=template)


@post("/prompts/t/{name:str}/edit", name="console-prompt-update", status_code=200)
async def update_template(console: Console, name: str) -> Response[str]:
    template = await console.api.get(f"{_T}/{name}")
    form = await Form.read(console.request)
    doc, rows = _template_doc(form, name)
    body: dict[str, Any] = {"document": doc}
    if (expected := form.integer("expectedVersion", minimum=1)) is not None:
        body["expectedVersion"] = expected
    if form.ok:
        try:
            saved = await console.api.send("PUT", f"{_T}/{name}", body)
        except ApiError as err:
            _fail(form, err, ["description", "variables", "messages"], json_fields=("variables",), rows=rows)
            if err.status == 409 and isinstance(err.data, dict) and "version" in err.data:
                form.message = (f"{err.message}. Someone saved version {err.data['version']} while you edited: "
                                "open the template again to start from it.")
        else:
            done = "updated" if saved["version"] != template["version"] else "unchanged"
            return console.redirect(f"/console/prompts/t/{name}?done={done}")
    return _template_form(console, form, template=template, status=422)


@post("/prompts/t/{name:str}/delete", name="console-prompt-delete", status_code=200)
async def delete_template(console: Console, name: str) -> Response[str]:
    try:
        await console.api.send("DELETE", f"{_T}/{name}")
    except ApiError as err:
        if err.status != 409:
            raise
        template = await console.api.get(f"{_T}/{name}")
        versions = await console.api.list(f"{_T}/{name}/versions", {"pageSize": 20})
        used = err.data.get("experiments") if isinstance(err.data, dict) else None
        return console.render("prompts/template.html", {
            "template": template, "shown": template, "versions": versions, "done": None,
            "refusal": err.message, "used_by": used or []}, status=409)
    return console.redirect("/console/prompts")


# -- experiments -------------------------------------------------------------------------------------

_EXPERIMENT_FIELDS = ["id", "route", "name", "description", "variants", "control", "allocation", "unit", "metric",
                      "confidence", "min_effect", "guardrails", "ramp", "adaptive"]
_EXPERIMENT_JSON = ("variants", "guardrails", "ramp", "adaptive")


def _experiment_values(doc: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in ("id", "route", "name", "description", "control", "unit", "metric"):
        values[key] = doc.get(key) or ""
    for key in ("allocation", "confidence", "min_effect"):
        values[key] = "" if doc.get(key) is None else str(doc[key])
    for key in ("variants", "guardrails"):
        values[key] = _pretty(doc[key]) if doc.get(key) else ""
    for key in ("ramp", "adaptive"):
        values[key] = _pretty(doc[key]) if doc.get(key) is not None else ""
    return values


def _experiment_doc(form: Form, experiment_id: str | None) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": experiment_id or form.text("id", required=True, max_chars=64),
                           "route": form.text("route", required=True, max_chars=200),
                           "variants": form.json("variants", required=True, kind=list)}
    for key, chars in (("name", 200), ("description", 2000), ("control", 64), ("unit", 80), ("metric", 40)):
        if (value := form.text(key, max_chars=chars)) is not None:
            doc[key] = value
    for key in ("allocation", "confidence", "min_effect"):
        if (number := form.number(key)) is not None:
            doc[key] = number
    if (guardrails := form.json("guardrails", kind=list)) is not None:
        doc["guardrails"] = guardrails
    for key in ("ramp", "adaptive"):
        if (value := form.json(key, kind=dict)) is not None:
            doc[key] = value
    return doc


def _experiment_form(console: Console, form: Form, *, experiment: dict[str, Any] | None = None,
                     status: int = 200) -> Response[str]:
    return console.render("experiments/form.html", {
        "form": form, "experiment": experiment, "metrics": [(k, v[0]) for k, v in METRICS.items()],
        "variants_help": _VARIANTS_HELP, "guardrails_help": _GUARDRAILS_HELP, "example": _VARIANTS_EXAMPLE,
    }, status=status)


@get("/experiments", name="console-experiments")
async def experiments(console: Console) -> Response[str]:
    listing = await console.api.list(_E, list_query(console, ("state", "route", "source")))
    return console.render("experiments/list.html", {"listing": listing, "states": _STATES, "sources": _SOURCES})


@get("/experiments/new", name="console-experiment-new")
async def new_experiment(console: Console) -> Response[str]:
    form = Form.of({"variants": _VARIANTS_EXAMPLE, "allocation": "1", "unit": "user", "metric": "feedback_score",
                    "confidence": "0.95", "route": console.request.query_params.get("route", "")})
    return _experiment_form(console, form)


@post("/experiments/new", name="console-experiment-create", status_code=200)
async def create_experiment(console: Console) -> Response[str]:
    form = await Form.read(console.request)
    doc = _experiment_doc(form, None)
    if form.ok:
        try:
            created = await console.api.send("POST", _E, {"document": doc})
        except ApiError as err:
            _fail(form, err, _EXPERIMENT_FIELDS, json_fields=_EXPERIMENT_JSON)
        else:
            return console.redirect(f"/console/experiments/e/{created['id']}?done=created")
    return _experiment_form(console, form, status=422)


async def _experiment_page(console: Console, experiment_id: str, *, status: int = 200,
                           refusal: str | None = None) -> Response[str]:
    experiment = await console.api.get(f"{_E}/{experiment_id}")
    events: Listing = await console.api.list(f"{_E}/{experiment_id}/events", list_query(console, (), page_size=20))
    variants = []
    for variant in experiment["document"]["variants"]:
        ref = _template_ref(variant.get("template"))
        variants.append({**variant, "ref": ref})
    return console.render("experiments/detail.html", {
        "experiment": experiment, "doc": experiment["document"], "runtime": experiment["runtime"],
        "variants": variants, "events": events, "done": _done(console), "refusal": refusal,
        "metric_label": METRICS.get(experiment["document"].get("metric", ""), ("", ""))[0],
    }, status=status)


@get("/experiments/e/{experiment_id:str}", name="console-experiment")
async def experiment_detail(console: Console, experiment_id: str) -> Response[str]:
    return await _experiment_page(console, experiment_id)


@get("/experiments/e/{experiment_id:str}/edit", name="console-experiment-edit")
async def edit_experiment(console: Console, experiment_id: str) -> Response[str]:
    experiment = await console.api.get(f"{_E}/{experiment_id}")
    form = Form.of({**_experiment_values(experiment["document"]), "expectedRevision": experiment["revision"]})
    if experiment["source"] == "config":
        form.message = (f"Experiment {experiment_id!r} is declared in the gateway's YAML (source: config): the admin "
                        "API refuses to change its declaration here. Change it in the file and reload the gateway.")
    return _experiment_form(console, form, experiment=experiment)


@post("/experiments/e/{experiment_id:str}/edit", name="console-experiment-update", status_code=200)
async def update_experiment(console: Console, experiment_id: str) -> Response[str]:
    experiment = await console.api.get(f"{_E}/{experiment_id}")
    form = await Form.read(console.request)
    body: dict[str, Any] = {"document": _experiment_doc(form, experiment_id)}
    if (expected := form.integer("expectedRevision", minimum=1)) is not None:
        body["expectedRevision"] = expected
    if form.ok:
        try:
            saved = await console.api.send("PUT", f"{_E}/{experiment_id}", body)
        except ApiError as err:
            _fail(form, err, _EXPERIMENT_FIELDS, json_fields=_EXPERIMENT_JSON)
            if err.status == 409 and isinstance(err.data, dict) and "revision" in err.data:
                form.message = (f"{err.message}. Someone saved revision {err.data['revision']} while you edited: "
                                "open the experiment again to start from it.")
        else:
            done = "revised" if saved["revision"] != experiment["revision"] else "unchanged"
            return console.redirect(f"/console/experiments/e/{experiment_id}?done={done}")
    return _experiment_form(console, form, experiment=experiment, status=422)


@post("/experiments/e/{experiment_id:str}/delete", name="console-experiment-delete", status_code=200)
async def delete_experiment(console: Console, experiment_id: str) -> Response[str]:
    try:
        await console.api.send("DELETE", f"{_E}/{experiment_id}")
    except ApiError as err:
        if err.status != 409:
            raise
        return await _experiment_page(console, experiment_id, status=409, refusal=err.message)
    return console.redirect("/console/experiments")


@post("/experiments/e/{experiment_id:str}/act/{action:str}", name="console-experiment-act", status_code=200)
async def act_on_experiment(console: Console, experiment_id: str, action: str) -> Response[str]:
    """start / pause / stop / rollback, with the form's optional reason; a refused move (409) is said on the page."""
    if action not in _ACTIONS:
        raise NotFoundException(f"Unknown experiment action {action!r}")
    form = await Form.read(console.request)
    reason = form.text("reason", max_chars=500)
    answer = await console.api.raw("POST", f"{_E}/{experiment_id}/{action}",
                                   query={"reason": reason} if reason else {})
    if answer.status >= 400:
        err = error_of(answer.status, answer.body)
        if err.status != 409:
            raise err
        return await _experiment_page(console, experiment_id, status=409, refusal=err.message)
    said = json.loads(answer.body or b"{}").get("message", "")
    done = "unchanged" if said == "No changes" else action
    return console.redirect(f"/console/experiments/e/{experiment_id}?done={done}")


_DIGITS = {"cost_per_request_usd": 8, "prompt_tokens": 2, "completion_tokens": 2}  # decimals a metric needs


def _shares(weights: dict[str, float]) -> str:
    """`{"a": 0.75, "b": 0.25}` as "a 75 %, b 25 %" (a split of traffic, or probabilities)."""
    return ", ".join(f"{name} {share * 100:.1f} %".replace(".0 %", " %") for name, share in weights.items()) or "—"


def _chart(results: dict[str, Any], metric: str) -> dict[str, Any]:
    """The experiment's metric per variant as bars (cost per 1,000 requests: a request's is a tiny number)."""
    label, key = METRICS.get(metric, (metric, ""))
    scale = 1000.0 if metric == "cost_per_request_usd" else 1.0
    if scale != 1.0:
        label = "Cost per 1,000 requests, USD (lower is better)"
    values = [None if v.get(key) is None else v[key] * scale for v in results["variants"]]
    return {"kind": "bar", "xLabel": "Variant", "x": [v["variant"] for v in results["variants"]],
            "series": [{"label": label, "values": values}]}


@get("/experiments/e/{experiment_id:str}/results", name="console-experiment-results")
async def experiment_results(console: Console, experiment_id: str) -> Response[str]:
    experiment = await console.api.get(f"{_E}/{experiment_id}")
    form = Form.of(console.request.query_params)
    since = console.request.query_params.get("since")
    results: dict[str, Any] | None
    try:
        results = await console.api.get(f"{_E}/{experiment_id}/results", {"since": since} if since else {})
    except ApiError as err:
        if err.status != 400:
            raise
        form.fail(err, ["since"])
        results = None
    context: dict[str, Any] = {"experiment": experiment, "results": results, "form": form, "compared": _COMPARED}
    if results is not None:
        metric = results["metric"]
        context |= {
            "metric_label": METRICS.get(metric, (metric, ""))[0], "chart": _chart(results, metric),
            "by_variant": {v["variant"]: v for v in results["variants"]},
            "comparisons": {name: [c for c in results["comparisons"] if c["variant"] == name]
                            for name in dict.fromkeys(c["variant"] for c in results["comparisons"])},
            "split": _shares(results["runtime"].get("effectiveWeights") or {}),
            "digits": {name: _DIGITS.get(name, 4) for name in _COMPARED},
        }
        if adaptive := results["runtime"].get("adaptive"):
            context |= {"prob_best": _shares(adaptive.get("probBest") or {}),
                        "suggested": _shares(adaptive.get("suggestedWeights") or {})}
    return console.render("experiments/results.html", context)


HANDLERS: list[Any] = [
    templates, new_template, create_template, template_detail, template_version, edit_template, update_template,
    delete_template,
    experiments, new_experiment, create_experiment, experiment_detail, edit_experiment, update_experiment,
    delete_experiment, act_on_experiment, experiment_results,
]
