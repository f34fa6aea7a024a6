"""Promotion gates (`/console/evaluation/gates/{model|endpoint}/{id}`): what a model or endpoint must show in
evaluation before it may be promoted to PROD.

The gate is one JSON document (thresholds per metric, the dataset, a baseline with a non-inferiority margin, and
the evaluation to run when training registers the model); it is edited as such, with the API's errors, each with
its path inside the document, beside it. Reads need viewer, setting and removing developer (the API's rule).
"""

from __future__ import annotations

import json
import re
from typing import Any

from litestar import Response, get, post
from litestar.exceptions import NotFoundException

from gateway.console.api import ApiError
from gateway.console.forms import Form
from gateway.console.session import Console

__all__ = ["HANDLERS", "gate_url"]

_KINDS = ("model", "endpoint")
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
EXAMPLE: dict[str, Any] = {"thresholds": [{"metric": "token_f1", "min": 0.5}, {"metric": "latency_p95_s", "max": 2.0}]}
_SUBJECT_PAGES = {"model": "/console/catalog/models/{}", "endpoint": "/console/serving/{}"}


def gate_url(kind: str, subject_id: str) -> str:
    return f"/console/evaluation/gates/{kind}/{subject_id}"


def _checked(kind: str, subject_id: str) -> str:
    if kind not in _KINDS or not _ID.fullmatch(subject_id):
        raise NotFoundException(f"No gate page for {kind} {subject_id!r}")
    return f"/evaluation/gates/{kind}/{subject_id}"


async def _current(console: Console, path: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = await console.api.get(path)
    except ApiError as err:
        if err.status == 404 and "gate" in err.message.lower():
            return None  # no gate set (an unknown subject is refused when a gate is set)
        raise
    return found


def _page(console: Console, kind: str, subject_id: str, gate: dict[str, Any] | None, form: Form, *,
          status: int = 200) -> Response[str]:
    return console.render("evaluation/gate.html", {
        "kind": kind, "subject_id": subject_id, "gate": gate, "form": form,
        "subject_url": _SUBJECT_PAGES[kind].format(subject_id), "action": gate_url(kind, subject_id),
    }, status=status)


@get("/evaluation/gates/{kind:str}/{subject_id:str}", name="console-gate")
async def gate(console: Console, kind: str, subject_id: str) -> Response[str]:
    current = await _current(console, _checked(kind, subject_id))
    shown = current["config"] if current else EXAMPLE
    return _page(console, kind, subject_id, current, Form.of({"gate": json.dumps(shown, indent=2)}))


@post("/evaluation/gates/{kind:str}/{subject_id:str}", name="console-gate-set", status_code=200)
async def set_gate(console: Console, kind: str, subject_id: str) -> Response[str]:
    path = _checked(kind, subject_id)
    form = await Form.read(console.request)
    document = form.json("gate", required=True, kind=dict)
    if form.ok:
        try:
            await console.api.send("PUT", path, document)
        except ApiError as err:
            if err.status in (401, 403):
                raise
            paths = [f"{p}: {m}" if p else m for p, m in err.errors.items()]
            form.errors["gate"] = "; ".join(paths) if paths else err.message
        else:
            return console.redirect(gate_url(kind, subject_id) + "?saved=1")
    return _page(console, kind, subject_id, await _current(console, path), form, status=422)


@post("/evaluation/gates/{kind:str}/{subject_id:str}/delete", name="console-gate-delete", status_code=200)
async def delete_gate(console: Console, kind: str, subject_id: str) -> Response[str]:
    await console.api.send("DELETE", _checked(kind, subject_id))
    return console.redirect(gate_url(kind, subject_id) + "?removed=1")


HANDLERS: list[Any] = [gate, set_gate, delete_gate]
