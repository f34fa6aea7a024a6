"""Evaluation: runs (list, create, detail, cancel, judge, export), human review tasks, and comparing runs
(`/console/evaluation/...`), all over the admin API's `/evaluation/runs`.

The console keeps nothing: the list, a run's progress, metrics with their CIs, samples and timeline, the
review tasks and the comparison are the API's answers, fetched as the signed-in key. Pages of an active run
refresh themselves (htmx, every few seconds) until it finishes. Exports stream the API's answer through.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import quote

from litestar import Response, get, post
from litestar.response import Stream

from gateway.console.api import ApiError, error_of, read_all
from gateway.console.forms import Form
from gateway.console.pages.common import filtered_list, list_query
from gateway.console.render import with_query
from gateway.console.session import Console

__all__ = ["HANDLERS"]

BASE = "/console/evaluation"
RUN_TYPES = ("automated", "human", "llm_judge", "combined")
STATUSES = ("waiting", "queued", "running", "cancelling", "cancelled", "succeeded", "failed")
ACTIVE = frozenset({"waiting", "queued", "running", "cancelling"})
CANCELLABLE = frozenset({"waiting", "queued", "running"})
FINISHED = frozenset({"succeeded", "failed"})
TARGET_KINDS = (("route", "Gateway route"), ("endpoint", "Serving endpoint"), ("model", "Catalog model"))
# The API's metric names (control/evaluation/protocol.py MetricName), in the order pages show them.
METRICS = ("bleu", "chrf", "rouge1", "rouge2", "rougeL", "exact_match", "token_f1", "perplexity", "judge_score",
           "judge_win_rate", "human_score", "latency_s", "prompt_tokens", "completion_tokens", "cost_usd")
SELECTABLE = METRICS[:8] + METRICS[11:]  # judge and human scores come with the run's type
METRIC_HELP = {
    "bleu": "BLEU (0-100, sacrebleu)", "chrf": "chrF (0-100)", "rouge1": "ROUGE-1 F", "rouge2": "ROUGE-2 F",
    "rougeL": "ROUGE-L F", "exact_match": "exact match", "token_f1": "token F1 (SQuAD)",
    "perplexity": "perplexity (a second call per item, from logprobs)", "judge_score": "LLM judge score",
    "judge_win_rate": "LLM judge win rate (pairwise)", "human_score": "human review score",
    "latency_s": "latency (s)", "prompt_tokens": "prompt tokens", "completion_tokens": "completion tokens",
    "cost_usd": "cost (USD)",
}
# Means charted together: the metrics on a 0-1 scale, and the rubric scores (judge, humans) on theirs.
UNIT_SCALE = ("rouge1", "rouge2", "rougeL", "exact_match", "token_f1", "judge_win_rate")
RUBRIC_SCALE = ("judge_score", "human_score")
RUBRICS = ("helpfulness", "correctness", "faithfulness")  # the built-in judge rubrics (policies.evaluation.judge)
LOWER_IS_BETTER = frozenset({"latency_s", "cost_usd", "perplexity", "prompt_tokens", "completion_tokens"})
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_LIST_FILTERS = ("modelId", "datasetId", "type", "status", "from", "to")
_CREATE_FIELDS = (
    "name", "type", "targets", "targets.0.kind", "targets.0.id", "targets.1.kind", "targets.1.id", "dataset",
    "dataset.datasetId", "dataset.version", "mapping", "mapping.input", "mapping.messages", "mapping.reference",
    "mapping.context", "metrics", "params", "judge", "judge.model.kind", "judge.model.id", "judge.mode",
    "judge.rubric", "judge.scaleMin", "judge.scaleMax", "review", "review.reviewers", "review.ratersPerItem",
    "review.rubric", "review.scaleMin", "review.scaleMax", "concurrency", "limit",
)
_JUDGE_FIELDS = ("judge", "judge.model.kind", "judge.model.id", "judge.mode", "judge.rubric", "judge.scaleMin",
                 "judge.scaleMax")


def _run_path(run_id: str, tail: str = "") -> str:
    return f"/evaluation/runs/{quote(run_id, safe='')}{tail}"


# -- the list --------------------------------------------------------------------------------------------

def _instant(value: str, *, end: bool) -> str:
    """A date from a date picker as the API's instant: `from` the day's start, `to` (exclusive) its last moment."""
    if not _DAY.match(value):
        return value
    if not end:
        return f"{value}T00:00:00Z"
    return f"{value}T23:59:59.999999Z"


async def _datasets(console: Console) -> list[dict[str, Any]]:
    """The catalog's datasets (newest 200), for pickers; none when the key may not list them."""
    try:
        listing = await console.api.list("/catalog/datasets", {"pageSize": 200})
    except ApiError as err:
        if err.status in (403, 404):
            return []
        raise
    return list(listing.items)


@get("/evaluation", name="console-evaluation")
async def runs(console: Console) -> Response[str]:
    query = list_query(console, _LIST_FILTERS)
    for name, end in (("from", False), ("to", True)):
        if name in query:
            query[name] = _instant(str(query[name]), end=end)
    listing, form = await filtered_list(console, "/evaluation/runs", _LIST_FILTERS, query)
    active = listing is not None and any(r.get("status") in ACTIVE for r in listing.items)
    datasets = [(d["id"], d["name"]) for d in await _datasets(console)]
    return console.render("evaluation/runs.html", {
        "listing": listing, "form": form, "active": active, "datasets": datasets, "run_types": RUN_TYPES,
        "statuses": STATUSES})


# -- creating a run --------------------------------------------------------------------------------------

async def _dataset_info(console: Console, form: Form) -> dict[str, Any]:
    """The chosen dataset's ready versions and the chosen (or latest ready) version's columns."""
    dataset_id = str(form.get("dataset.datasetId", "")).strip()
    if not dataset_id:
        return {"versions": [], "columns": [], "error": None}
    try:
        versions = await console.api.list(f"/catalog/datasets/{quote(dataset_id, safe='')}/versions",
                                          {"pageSize": 200})
        ready = [v["version"] for v in versions.items if v.get("status") == "ready"]
        version = str(form.get("dataset.version", "")).strip()
        preview = await console.api.get(f"/catalog/datasets/{quote(dataset_id, safe='')}/preview",
                                        {"rows": 1, **({"version": version} if version.isdigit() else {})})
    except ApiError as err:
        return {"versions": [], "columns": [], "error": err.message}
    columns = [c["name"] for c in preview.get("schema", [])] if isinstance(preview, dict) else []
    return {"versions": ready, "columns": columns, "error": None}


async def _create_page(console: Console, form: Form, *, status: int = 200) -> Response[str]:
    datasets = [(d["id"], f"{d['name']} (v{d['latestVersion']})") for d in await _datasets(console)
                if d.get("latestVersion")]
    run_type = str(form.get("type", ""))
    opened = {section: run_type in types or bool(str(form.get(first, "")).strip())
              or any(k.startswith(section) for k in form.errors)
              for section, types, first in (("judge", ("llm_judge", "combined"), "judge.model.id"),
                                            ("review", ("human", "combined"), "review.reviewers"))}
    return console.render("evaluation/run_form.html", {
        "form": form, "datasets": datasets, "opened": opened, "info": await _dataset_info(console, form),
        "run_types": RUN_TYPES, "target_kinds": TARGET_KINDS, "metrics": SELECTABLE, "metric_help": METRIC_HELP,
        "rubrics": RUBRICS,
    }, status=status)


_DEFAULTS = {"type": "automated", "targets.0.kind": "route", "targets.1.kind": "route", "concurrency": "8",
             "judge.model.kind": "route", "judge.mode": "pointwise", "judge.rubric": "helpfulness",
             "judge.scaleMin": "1", "judge.scaleMax": "5", "review.ratersPerItem": "2", "review.scaleMin": "1",
             "review.scaleMax": "5", "metrics": []}


@get("/evaluation/runs/new", name="console-evaluation-new")
async def new_run(console: Console) -> Response[str]:
    """The form; its query pre-fills it (the dataset picker asks for the chosen dataset's versions this way)."""
    form = Form.of({**_DEFAULTS, **{k: v for k, v in console.request.query_params.items() if k != "csrf"}})
    return await _create_page(console, form)


def _judge_body(form: Form) -> dict[str, Any] | None:
    judge_id = form.text("judge.model.id", max_chars=100)
    if judge_id is None:
        return None
    body: dict[str, Any] = {"model": {"kind": form.text("judge.model.kind") or "route", "id": judge_id},
                            "mode": form.text("judge.mode") or "pointwise",
                            "rubric": form.text("judge.rubric", max_chars=20_000) or "helpfulness"}
    for name, key in (("judge.scaleMin", "scaleMin"), ("judge.scaleMax", "scaleMax")):
        value = form.integer(name)
        if value is not None:
            body[key] = value
    return body


def _review_body(form: Form) -> dict[str, Any] | None:
    reviewers = form.words("review.reviewers")
    if not reviewers:
        return None
    body: dict[str, Any] = {"reviewers": reviewers}
    if rubric := form.text("review.rubric", max_chars=20_000):
        body["rubric"] = rubric
    for name, key in (("review.ratersPerItem", "ratersPerItem"), ("review.scaleMin", "scaleMin"),
                      ("review.scaleMax", "scaleMax")):
        value = form.integer(name)
        if value is not None:
            body[key] = value
    return body


def _run_body(form: Form) -> dict[str, Any]:
    run_type = form.text("type") or "automated"
    targets = []
    for i in (0, 1):
        target_id = form.text(f"targets.{i}.id", required=i == 0, max_chars=100)
        if target_id is not None:
            targets.append({"kind": form.text(f"targets.{i}.kind") or "route", "id": target_id})
    dataset: dict[str, Any] = {"datasetId": form.text("dataset.datasetId", required=True, max_chars=100)}
    if (version := form.integer("dataset.version", minimum=1)) is not None:
        dataset["version"] = version
    body: dict[str, Any] = {
        "name": form.text("name", required=True, max_chars=200), "type": run_type, "targets": targets,
        "dataset": dataset,
        "mapping": {k: v for k in ("input", "messages", "reference", "context")
                    if (v := form.text(f"mapping.{k}", max_chars=200))},
    }
    if metrics := form.many("metrics"):
        body["metrics"] = metrics
    if (params := form.json("params", kind=dict)) is not None:
        body["params"] = params
    if (concurrency := form.integer("concurrency", minimum=1)) is not None:
        body["concurrency"] = concurrency
    if (limit := form.integer("limit", minimum=1)) is not None:
        body["limit"] = limit
    if run_type in ("llm_judge", "combined") and (judge := _judge_body(form)) is not None:
        body["judge"] = judge
    if run_type in ("human", "combined") and (review := _review_body(form)) is not None:
        body["review"] = review
    return body


@post("/evaluation/runs/new", name="console-evaluation-create", status_code=200)
async def create_run(console: Console) -> Response[str]:
    form = await Form.read(console.request)
    body = _run_body(form)
    form.values["metrics"] = form.many("metrics")
    if form.ok:
        try:
            created = await console.api.send("POST", "/evaluation/runs", body)
        except ApiError as err:
            if err.status in (401, 403):
                raise
            form.fail(err, _CREATE_FIELDS)
        else:
            return console.redirect(f"{BASE}/runs/{quote(created['id'], safe='')}")
    return await _create_page(console, form, status=422)


# -- one run ---------------------------------------------------------------------------------------------

def _metric_rows(run: Mapping[str, Any]) -> list[str]:
    present = {m for per in (run.get("metrics") or {}).values() for m in per}
    return [m for m in METRICS if m in present] + sorted(present - set(METRICS))


def _chart(run: Mapping[str, Any], names: tuple[str, ...], labels: list[str]) -> dict[str, Any] | None:
    metrics = run.get("metrics") or {}
    shown = [m for m in names if any((metrics.get(str(t)) or {}).get(m, {}).get("value") is not None
                                     for t in range(len(labels)))]
    if not shown:
        return None
    return {"kind": "bar", "xLabel": "Metric", "x": shown, "series": [
        {"label": label, "values": [((metrics.get(str(t)) or {}).get(m) or {}).get("value") for m in shown]}
        for t, label in enumerate(labels)]}


def _target_labels(run: Mapping[str, Any]) -> list[str]:
    labels = []
    for i, target in enumerate(run.get("targets") or []):
        route = target.get("route")
        name = target.get("id") if target.get("kind") == "route" else f"{target.get('kind')} {target.get('id')}"
        labels.append(f"{i}: {name}" + (f" (route {route})" if route and route != target.get("id") else ""))
    return labels


async def _run_page(console: Console, run_id: str, *, judge_form: Form | None = None,
                    status: int = 200) -> Response[str]:
    run = await console.api.get(_run_path(run_id))
    query = list_query(console, (), page_size=10)
    items = await console.api.list(_run_path(run_id, "/items"), query)
    labels = _target_labels(run)
    charts = [c for c in (("Means of the 0-1 metrics", _chart(run, UNIT_SCALE, labels)),
                          ("Means of the rubric scores", _chart(run, RUBRIC_SCALE, labels))) if c[1] is not None]
    judge_form = judge_form or Form.of({"judge.model.kind": "route", "judge.mode": "pointwise",
                                        "judge.rubric": "helpfulness", "judge.scaleMin": "1", "judge.scaleMax": "5"})
    judging_steps = [e["event"] for e in run.get("timeline") or [] if str(e.get("event", "")).startswith("judging_")]
    judging = bool(judging_steps) and judging_steps[-1] in ("judging_queued", "judging_started")
    return console.render("evaluation/run.html", {
        "run": run, "items": items, "labels": labels, "metric_rows": _metric_rows(run), "charts": charts,
        "metric_help": METRIC_HELP, "active": run.get("status") in ACTIVE or judging, "judging": judging,
        "cancellable": run.get("status") in CANCELLABLE, "finished": run.get("status") in FINISHED,
        "reviewed": run.get("type") in ("human", "combined"), "judge_form": judge_form, "rubrics": RUBRICS,
        "target_kinds": TARGET_KINDS, "run_path": f"{BASE}/runs/{quote(run_id, safe='')}",
    }, status=status)


@get("/evaluation/runs/{run_id:str}", name="console-evaluation-run")
async def run_detail(console: Console, run_id: str) -> Response[str]:
    return await _run_page(console, run_id)


@post("/evaluation/runs/{run_id:str}/cancel", name="console-evaluation-cancel", status_code=200)
async def cancel_run(console: Console, run_id: str) -> Response[str]:
    await console.api.send("POST", _run_path(run_id, "/cancel"))
    return console.redirect(f"{BASE}/runs/{quote(run_id, safe='')}")


@post("/evaluation/runs/{run_id:str}/judge", name="console-evaluation-judge", status_code=200)
async def judge_run(console: Console, run_id: str) -> Response[str]:
    """Judge a finished run with an LLM judge (`POST …/llm-judge`); its errors beside the judge form's fields."""
    form = await Form.read(console.request)
    body = _judge_body(form)
    if body is None:
        form.errors["judge.model.id"] = "Required"
    if form.ok:
        try:
            await console.api.send("POST", _run_path(run_id, "/llm-judge"), {"judge": body})
        except ApiError as err:
            if err.status in (401, 403, 404):
                raise
            form.fail(err, _JUDGE_FIELDS)
        else:
            return console.redirect(f"{BASE}/runs/{quote(run_id, safe='')}")
    return await _run_page(console, run_id, judge_form=form, status=422)


@get("/evaluation/runs/{run_id:str}/export", name="console-evaluation-export")
async def export_run(console: Console, run_id: str) -> Stream:
    """The API's export (CSV or JSON), streamed through with its content type and file name."""
    fmt = console.request.query_params.get("format", "csv")
    stack = AsyncExitStack()
    reply = await stack.enter_async_context(
        console.api.stream("GET", _run_path(run_id, "/export"), query={"format": fmt}))
    if reply.status >= 400:
        try:
            body = await read_all(reply)
        finally:
            await stack.aclose()
        raise error_of(reply.status, body)

    async def chunks() -> AsyncIterator[bytes]:
        try:
            async for chunk in reply.chunks:
                yield chunk
        finally:
            await stack.aclose()

    headers = {"x-content-type-options": "nosniff", "cache-control": "no-store"}
    if disposition := reply.headers.get("content-disposition"):
        headers["content-disposition"] = disposition
    # The bare type: the response adds its own charset (utf-8, as the API's) to a text type.
    media_type = reply.headers.get("content-type", "application/octet-stream").split(";")[0].strip()
    return Stream(chunks(), media_type=media_type, headers=headers)


# -- human review ------------------------------------------------------------------------------------------

async def _review_page(console: Console, run_id: str, *, failed: tuple[str, Form] | None = None,
                       status: int = 200) -> Response[str]:
    params = console.request.query_params
    reviewer = (failed[1].get("reviewer") if failed else params.get("reviewer", "")) or ""
    query = {**list_query(console, (), page_size=20), **({"reviewer": reviewer} if reviewer else {})}
    if failed and str(failed[1].get("page", "")).isdigit():
        query["page"] = int(failed[1].get("page"))
    run = await console.api.get(_run_path(run_id))
    tasks = await console.api.list(_run_path(run_id, "/human-review/tasks"), query)
    return console.render("evaluation/review.html", {
        "run": run, "tasks": tasks, "reviewer": reviewer, "failed": failed, "saved": params.get("saved", ""),
        "run_path": f"{BASE}/runs/{quote(run_id, safe='')}", "page_query": {"reviewer": reviewer},
    }, status=status)


@get("/evaluation/runs/{run_id:str}/review", name="console-evaluation-review")
async def review_tasks(console: Console, run_id: str) -> Response[str]:
    """The outputs assigned to the signed-in key (an operator may act for another reviewer: `?reviewer=`)."""
    return await _review_page(console, run_id)


@post("/evaluation/runs/{run_id:str}/review", name="console-evaluation-review-submit", status_code=200)
async def submit_review(console: Console, run_id: str) -> Response[str]:
    form = await Form.read(console.request)
    item = form.integer("item", required=True, minimum=0)
    target = form.integer("target", minimum=0) or 0
    score = form.number("score", required=True)
    comment = form.text("comment", max_chars=5000) or ""
    reviewer = form.text("reviewer", max_chars=100)
    key = f"{form.get('item')}:{form.get('target') or 0}"
    if form.ok:
        try:
            await console.api.send("POST", _run_path(run_id, "/human-review"),
                                   {"item": item, "target": target, "score": score, "comment": comment},
                                   query={"reviewer": reviewer} if reviewer else {})
        except ApiError as err:
            if err.status in (401, 403, 404):
                raise
            form.fail(err, ("item", "target", "score", "comment"))
        else:
            back = with_query(f"{BASE}/runs/{quote(run_id, safe='')}/review",
                              {"reviewer": reviewer or "", "page": form.get("page", ""), "saved": key})
            return console.redirect(f"{back}#task-{item}-{target}")
    return await _review_page(console, run_id, failed=(key, form), status=422)


# -- comparing runs ------------------------------------------------------------------------------------------

@get("/evaluation/compare", name="console-evaluation-compare")
async def compare(console: Console) -> Response[str]:
    """`?runIds=a&runIds=b` (the list's checkboxes) or `?runIds=a,b` (the API's form); the first is the baseline."""
    named = [p.strip() for raw in console.request.query_params.getall("runIds", [])
             for p in str(raw).split(",") if p.strip()]
    picked = list(dict.fromkeys(named))  # typed and ticked: each once, in the order named
    form = Form.of({"runIds": ", ".join(picked)})
    comparison = None
    runs_by_arm: dict[str, Any] = {}
    if len(picked) == 1:
        form.errors["runIds"] = "Pick at least two runs: the baseline first, then the candidate."
    elif picked:
        try:
            comparison = await console.api.get("/evaluation/runs/compare", {"runIds": ",".join(picked)})
        except ApiError as err:
            if err.status not in (400, 404, 409, 422):
                raise
            form.fail(err, ("runIds",))
        else:
            for arm in comparison["runIds"]:
                run_id = arm.split(":")[0]
                try:
                    runs_by_arm[arm] = await console.api.get(_run_path(run_id))
                except ApiError:
                    runs_by_arm[arm] = {"id": run_id, "name": run_id}
    recent = await console.api.list("/evaluation/runs", {"status": "succeeded", "pageSize": 20})
    return console.render("evaluation/compare.html", {
        "form": form, "comparison": comparison, "runs_by_arm": runs_by_arm, "recent": recent.items,
        "picked": picked, "lower_is_better": LOWER_IS_BETTER, "metric_help": METRIC_HELP})


HANDLERS: list[Any] = [runs, new_run, create_run, run_detail, cancel_run, judge_run, export_run, review_tasks,
                       submit_review, compare]
