"""``POST training/jobs/{jobId}/metrics`` (a job's pods, with its token) and ``GET training/experiments/{jobId}``.

The metrics post is on every trainer's path, so it is one token lookup and one write transaction: the job's run
made if the jobs module has not yet (``ensure_job_run``), the params, then every point in one multi-row insert.
It is marked public for the admin guard and authenticated here with the job's token only (``access``): a bad,
another job's or a finished job's token all get the same 401, which never repeats the token.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import Parameter

from adapters.adminapi import (
    BadRequest,
    Envelope,
    FieldError,
    ModuleContext,
    NotFound,
    SemanticError,
    Unauthorized,
    ValidationFailed,
    ok,
)
from adapters.store import Store
from adapters.training.contract import MAX_METRICS_PER_POST, MetricsPost
from control.training.tracking import store as tracking
from control.training.tracking.access import BAD_JOB_TOKEN, job_from_token
from control.training.tracking.errors import InvalidValue
from control.training.tracking.names import key_problem, param_problem, value_problem
from control.training.tracking.views import ExperimentView, experiment_view

__all__ = ["CONTROLLERS", "Accepted", "TrackingController"]

JobId = Annotated[str, Parameter(min_length=1, max_length=40, description="the training job's id")]
MAX_SERIES_POINTS = 10_000
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]*)`")
# Litestar types raises= as HTTPException classes; it reads only their status_code, which AdminError has.
_POST_RAISES: list[Any] = [Unauthorized, SemanticError]
_GET_RAISES: list[Any] = [NotFound]


class Accepted(msgspec.Struct, frozen=True):
    accepted: int  # metric points stored


def _decode(body: bytes) -> MetricsPost:
    """The post, strictly (schema errors are a 400 naming the field), then MLflow's name rules (a 422)."""
    if not body.strip():
        raise ValidationFailed([FieldError(field="", message="Request body is empty; expected a JSON object "
                                                             "with metrics and/or params")])
    try:
        post = msgspec.json.decode(body, type=MetricsPost)
    except msgspec.ValidationError as err:
        message, _, path = str(err).partition(" - at `$")
        field = path.rstrip("`").lstrip(".")
        if unknown := _UNKNOWN_FIELD.search(message):  # reported on the enclosing object: name the field itself
            field = f"{field}.{unknown.group(1)}" if field else unknown.group(1)
        raise ValidationFailed([FieldError(field=field, message=message)]) from None
    except (msgspec.DecodeError, RecursionError):
        raise BadRequest("Request body is not valid JSON (or is nested too deeply)") from None
    errors: list[FieldError] = []
    if len(post.metrics) > MAX_METRICS_PER_POST:
        errors.append(FieldError(field="metrics", message=f"at most {MAX_METRICS_PER_POST} points per post, "
                                                          f"got {len(post.metrics)}"))
    else:
        for i, point in enumerate(post.metrics):
            if (why := key_problem(point.key)) is not None:
                errors.append(FieldError(field=f"metrics[{i}].key", message=f"the name {why}"))
            if (bad := value_problem(point.value, point.step, point.timestamp, finite=True)) is not None:
                errors.append(FieldError(field=f"metrics[{i}].{bad[0]}", message=bad[1]))
    for key, value in post.params.items():
        if (why := key_problem(key)) is not None:
            errors.append(FieldError(field=f"params.{key}"[:300], message=f"the name {why}"))
        elif (why := param_problem(value)) is not None:
            errors.append(FieldError(field=f"params.{key}", message=f"the value {why}"))
    if errors:
        raise SemanticError(errors)
    return post


class TrackingController(Controller):
    path = "/training"
    tags = ["training"]

    @post("/jobs/{jobId:str}/metrics", status_code=202, opt={"public": True},
          raises=_POST_RAISES,
          summary="Report a job's metrics and params (from its pods, with the job's token)",
          description="Authorization: Bearer <LLMOPS_JOB_TOKEN> (the job's, while it is not finished; an admin "
                      "key is refused). Body: {\"metrics\": [{\"key\", \"value\", \"step\", \"timestamp\"?}], "
                      f"\"params\"?: {{key: value}}}} (adapters.training.contract.MetricsPost), at most "
                      f"{MAX_METRICS_PER_POST} points, keys by MLflow's name rules, finite values, params "
                      "immutable once logged; stored in one transaction. 202 with the number of points stored.")
    async def post_metrics(self, jobId: JobId, request: Request[Any, Any, Any], ctx: ModuleContext,
                           store: Store) -> Envelope[Accepted]:
        job = await job_from_token(request, ctx, store, jobId)
        if job is None:
            raise Unauthorized(BAD_JOB_TOKEN)
        post = _decode(await request.body())
        try:
            async with store.begin() as conn:
                await tracking.ensure_job_run(conn, job_id=job.id, experiment=job.experiment, run_name=job.name,
                                              user=job.created_by, params={})
                await tracking.log_params(conn, job.id, post.params)
                stored = await tracking.log_points(conn, job.id, post.metrics)
        except InvalidValue as err:  # a param logged before with another value
            raise SemanticError([FieldError(field=err.field, message=err.message)]) from None
        return ok(Accepted(accepted=stored), "Accepted")

    @get("/experiments/{jobId:str}", raises=_GET_RAISES,
         summary="A job's run: experiment, status, params, metrics over steps, latest values, timeline",
         description="metrics: {key: [{step, value, timestamp}]} in step order, each key evenly downsampled to "
                     "maxPoints (first and last kept); keys= limits them (repeat it or separate by commas). "
                     "Non-finite values (NaN, ±inf, possible through the MLflow API) are the strings \"NaN\", "
                     "\"Infinity\", \"-Infinity\". timeline: the job's events, oldest first.")
    async def get_experiment(
        self, jobId: JobId, store: Store,
        keys: list[str] | None = Parameter(query="keys", default=None, max_items=100,
                                           description="metric keys to include (default: all)"),
        max_points: int = Parameter(query="maxPoints", ge=2, le=MAX_SERIES_POINTS, default=500,
                                    description="points per key at most, evenly spread, first and last kept"),
    ) -> Envelope[ExperimentView]:
        wanted = None if keys is None else [k for item in keys for k in item.split(",") if k]
        async with store.read() as conn:
            view = await experiment_view(conn, jobId, keys=wanted, max_points=max_points)
        if view is None:
            raise NotFound(f"Training job {jobId!r} not found")
        return ok(view)


CONTROLLERS: list[Any] = [TrackingController]
