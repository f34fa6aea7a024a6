"""The MLflow tracking REST subset, under ``/llm-ops/v1/training/mlflow/api/2.0/mlflow/``.

So ``MLFLOW_TRACKING_URI=http://<host>/llm-ops/v1/training/mlflow`` makes the ``mlflow`` client (``start_run``,
``log_param``, ``log_metric(s)``, ``set_tag``, ``end_run``, ``MlflowClient().get_run/get_metric_history/
search_runs``) and Hugging Face's ``MLflowCallback`` log here unchanged. These paths answer in **MLflow's own
JSON, not the admin envelope**, errors included (``{"error_code", "message"}`` with MLflow's statuses), and are
left out of the OpenAPI document: their reference is MLflow's REST API documentation.

Authentication (``access``): ``Authorization: Bearer`` with a job's token (``MLFLOW_TRACKING_TOKEN`` in the job's
pods), which may read experiments and read and write that job's run only, or an admin key (viewer reads,
developer writes). Semantics follow MLflow's server: params are immutable, ``log-batch`` takes at most 1000
metrics, 100 params and 100 tags, a param value at most 6000 characters, metric values may be NaN or ±inf,
only active runs take writes, a terminal status sets ``end_time``.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import msgspec
from litestar import Controller, Request, Response, get, post, route
from litestar.exceptions import HTTPException, NotFoundException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import Forbidden, ModuleContext, Unauthorized
from adapters.adminapi.envelope import request_id
from adapters.store import SchemaError, Store, StoreUnavailable
from control.training.tables import metrics
from control.training.tracking import store as tracking
from control.training.tracking.access import authenticate
from control.training.tracking.errors import InvalidValue, ResourceMissing, TrackingError
from control.training.tracking.mlflow_checks import (
    checked_params,
    checked_tags,
    history_offset,
    metric_point,
    parse_experiment_id,
)
from control.training.tracking.mlflow_wire import (
    CreateExperiment,
    CreateRun,
    DeleteTag,
    GetExperiment,
    GetExperimentByName,
    GetMetricHistory,
    GetRun,
    KeyValue,
    LogBatch,
    LogMetric,
    LogParam,
    SearchRuns,
    SetTag,
    UpdateRun,
    decode_body,
    decode_query,
    experiment_json,
    metric_json,
    run_id_of,
    run_info_json,
    runs_json,
)
from control.training.tracking.search import RunQuery, search_runs

__all__ = ["CONTROLLERS", "MlflowController"]

log = logging.getLogger("llmops.training.mlflow")

MAX_BATCH_METRICS = 1000
MAX_BATCH_PARAMS_TAGS = 100
MAX_HISTORY_PAGE = 25_000  # the client pages get-history by this many (GET_METRIC_HISTORY_MAX_RESULTS)
MAX_EXPERIMENT_NAME = 500
_STATUSES = frozenset({"RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"})
_encoder = msgspec.json.Encoder()


def _answer(body: dict[str, Any], status: int = 200) -> Response[bytes]:
    return Response(content=_encoder.encode(body), status_code=status, media_type="application/json")


def mlflow_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Every failure on these paths, as MLflow's server words it; 5xx never carry exception text."""
    code, status, message = "INTERNAL_ERROR", 500, "Internal server error"
    if isinstance(exc, TrackingError):
        code, status, message = exc.error_code, exc.status, exc.message
    elif isinstance(exc, Unauthorized):
        code, status, message = "UNAUTHENTICATED", 401, exc.message
    elif isinstance(exc, Forbidden):
        code, status, message = "PERMISSION_DENIED", 403, exc.message
    elif isinstance(exc, RequestEntityTooLarge):
        code, status, message = "INVALID_PARAMETER_VALUE", 413, "Request body is too large"
    elif isinstance(exc, NotFoundException):
        code, status, message = "ENDPOINT_NOT_FOUND", 404, f"No MLflow endpoint {request.method} {request.url.path}"
    elif isinstance(exc, (StoreUnavailable, SchemaError)) or getattr(exc, "status", 0) == 503:
        code, status, message = "TEMPORARILY_UNAVAILABLE", 503, "The tracking store is unavailable; retry later"
    elif isinstance(exc, HTTPException) and exc.status_code < 500:
        code, status, message = "BAD_REQUEST", exc.status_code, exc.detail
    else:
        log.error("MLflow request %s %s failed (request id %s)", request.method, request.url.path,
                  request_id(request), exc_info=exc)
    return _answer({"error_code": code, "message": message}, status)


async def _active_run(conn: AsyncConnection, run_id: str) -> Any:
    row = await tracking.run_row(conn, run_id)
    if row.lifecycle_stage != "active":
        raise InvalidValue(f"The run {run_id} must be in the 'active' state. Current state is "
                           f"{row.lifecycle_stage}.", "run_id")
    return row


async def _set_tags(conn: AsyncConnection, run_id: str, values: dict[str, str]) -> None:
    await tracking.set_tags(conn, run_id, values)
    if values.get(tracking.RUN_NAME_TAG):  # MLflow keeps the run's name and this tag one
        await tracking.update_run(conn, run_id, run_name=values[tracking.RUN_NAME_TAG])


class MlflowController(Controller):
    """MLflow's JSON in and out (not the envelope); see the module docstring."""

    path = "/training/mlflow/api/2.0/mlflow"
    tags = ["training"]
    include_in_schema = False
    opt = {"public": True}  # authenticated here: a job token or an admin key (access.authenticate)
    exception_handlers = {Exception: mlflow_error}

    # -- experiments --------------------------------------------------------------------------------------

    @get("/experiments/get-by-name")
    async def get_experiment_by_name(self, request: Request[Any, Any, Any], ctx: ModuleContext,
                                     store: Store) -> Response[bytes]:
        await authenticate(request, ctx, store, write=False)
        name = decode_query(request.query_params, GetExperimentByName).experiment_name
        # MLflow's "Default" is made on first mention: a write transaction for it alone.
        async with store.begin() if name == tracking.DEFAULT_EXPERIMENT else store.read() as conn:
            row = await tracking.experiment_by_name(conn, name)
        if row is None:
            raise ResourceMissing(f"Could not find experiment with name '{name}'", "experiment_name")
        return _answer({"experiment": experiment_json(row)})

    @get("/experiments/get")
    async def get_experiment(self, request: Request[Any, Any, Any], ctx: ModuleContext,
                             store: Store) -> Response[bytes]:
        await authenticate(request, ctx, store, write=False)
        experiment_id = parse_experiment_id(decode_query(request.query_params, GetExperiment).experiment_id)
        async with store.begin() if experiment_id == 0 else store.read() as conn:
            row = await tracking.experiment_by_id(conn, experiment_id)
        if row is None:
            raise ResourceMissing(f"No Experiment with id={experiment_id} exists", "experiment_id")
        return _answer({"experiment": experiment_json(row)})

    @post("/experiments/create", status_code=200)
    async def create_experiment(self, request: Request[Any, Any, Any], ctx: ModuleContext,
                                store: Store) -> Response[bytes]:
        caller = await authenticate(request, ctx, store, write=True)
        caller.check_not_job("create experiments")
        body = decode_body(await request.body(), CreateExperiment)
        if not body.name.strip() or len(body.name) > MAX_EXPERIMENT_NAME:
            raise InvalidValue(f"Experiment name must be 1 to {MAX_EXPERIMENT_NAME} characters", "name")
        experiment_tags = checked_tags(body.tags, "tags")
        async with store.begin() as conn:
            experiment_id = await tracking.create_experiment(conn, body.name, tags=experiment_tags,
                                                             artifact_location=body.artifact_location)
        return _answer({"experiment_id": str(experiment_id)})

    # -- runs ---------------------------------------------------------------------------------------------

    @post("/runs/create", status_code=200)
    async def create_run(self, request: Request[Any, Any, Any], ctx: ModuleContext,
                         store: Store) -> Response[bytes]:
        caller = await authenticate(request, ctx, store, write=True)
        caller.check_not_job("create runs (its run is MLFLOW_RUN_ID)")
        body = decode_body(await request.body(), CreateRun)
        experiment_id = parse_experiment_id(body.experiment_id)
        run_tags = checked_tags(body.tags, "tags")
        if body.run_name is not None and len(body.run_name) > 250:
            raise InvalidValue("run_name is longer than 250 characters", "run_name")
        async with store.begin() as conn:
            run_id = await tracking.create_run(conn, experiment_id=experiment_id, user_id=body.user_id or caller.user,
                                               run_name=body.run_name, start_time=body.start_time, tags=run_tags)
            row = await tracking.run_row(conn, run_id)
            (run,) = await runs_json(conn, [row])
        return _answer({"run": run})

    @get("/runs/get")
    async def get_run(self, request: Request[Any, Any, Any], ctx: ModuleContext, store: Store) -> Response[bytes]:
        caller = await authenticate(request, ctx, store, write=False)
        query = decode_query(request.query_params, GetRun)
        run_id = run_id_of(query.run_id, query.run_uuid)
        caller.check_run(run_id)
        if caller.job_id is not None:  # start_run(MLFLOW_RUN_ID) reads the run first: make sure it is there
            async with store.begin() as conn:
                await tracking.ensure_job_run(conn, job_id=caller.job_id, experiment=caller.experiment,
                                              run_name=caller.run_name, user=caller.user, params={})
        async with store.read() as conn:
            (run,) = await runs_json(conn, [await tracking.run_row(conn, run_id)])
        return _answer({"run": run})

    @post("/runs/update", status_code=200)
    async def update_run(self, request: Request[Any, Any, Any], ctx: ModuleContext,
                         store: Store) -> Response[bytes]:
        caller = await authenticate(request, ctx, store, write=True)
        body = decode_body(await request.body(), UpdateRun)
        run_id = run_id_of(body.run_id, body.run_uuid)
        caller.check_run(run_id)
        if body.status is not None and body.status not in _STATUSES:
            raise InvalidValue(f"Invalid run status {body.status!r}", "status")
        async with store.begin() as conn:
            await _active_run(conn, run_id)
            row = await tracking.update_run(conn, run_id, status=cast(tracking.RunStatus | None, body.status),
                                            end_time=body.end_time, run_name=body.run_name or None)
        return _answer({"run_info": run_info_json(row)})

    @post("/runs/search", status_code=200)
    async def search(self, request: Request[Any, Any, Any], ctx: ModuleContext, store: Store) -> Response[bytes]:
        caller = await authenticate(request, ctx, store, write=False)
        body = decode_body(await request.body(), SearchRuns)
        query = RunQuery(experiment_ids=[parse_experiment_id(e) for e in body.experiment_ids], filter=body.filter,
                         order_by=body.order_by, max_results=body.max_results, page_token=body.page_token,
                         run_view_type=body.run_view_type, only_run_id=caller.job_id)
        async with store.read() as conn:
            rows, token = await search_runs(conn, query)
            found = await runs_json(conn, rows)
        answer: dict[str, Any] = {"runs": found}
        if token:
            answer["next_page_token"] = token
        return _answer(answer)

    # -- logging ------------------------------------------------------------------------------------------

    @post("/runs/log-metric", status_code=200)
    async def log_metric(self, request: Request[Any, Any, Any], ctx: ModuleContext,
                         store: Store) -> Response[bytes]:
        caller = await authenticate(request, ctx, store, write=True)
        body = decode_body(await request.body(), LogMetric)
        run_id = run_id_of(body.run_id, body.run_uuid)
        caller.check_run(run_id)
        point = metric_point(body.key, body.value, body.step, body.timestamp, "")
        async with store.begin() as conn:
            await _active_run(conn, run_id)
            await tracking.log_points(conn, run_id, [point])
        return _answer({})

    @post("/runs/log-parameter", status_code=200)
    async def log_param(self, request: Request[Any, Any, Any], ctx: ModuleContext,
                        store: Store) -> Response[bytes]:
        caller = await authenticate(request, ctx, store, write=True)
        body = decode_body(await request.body(), LogParam)
        run_id = run_id_of(body.run_id, body.run_uuid)
        caller.check_run(run_id)
        if body.value is None:
            raise InvalidValue("Missing value for required parameter 'value'", "value")
        values = checked_params([KeyValue(key=body.key, value=body.value)], "params")
        async with store.begin() as conn:
            await _active_run(conn, run_id)
            await tracking.log_params(conn, run_id, values)
        return _answer({})

    @post("/runs/set-tag", status_code=200)
    async def set_tag(self, request: Request[Any, Any, Any], ctx: ModuleContext, store: Store) -> Response[bytes]:
        caller = await authenticate(request, ctx, store, write=True)
        body = decode_body(await request.body(), SetTag)
        run_id = run_id_of(body.run_id, body.run_uuid)
        caller.check_run(run_id)
        if body.value is None:
            raise InvalidValue("Missing value for required parameter 'value'", "value")
        values = checked_tags([KeyValue(key=body.key, value=body.value)], "tags")
        async with store.begin() as conn:
            await _active_run(conn, run_id)
            await _set_tags(conn, run_id, values)
        return _answer({})

    @post("/runs/delete-tag", status_code=200)
    async def delete_tag(self, request: Request[Any, Any, Any], ctx: ModuleContext,
                         store: Store) -> Response[bytes]:
        caller = await authenticate(request, ctx, store, write=True)
        body = decode_body(await request.body(), DeleteTag)
        run_id = run_id_of(body.run_id)
        caller.check_run(run_id)
        async with store.begin() as conn:
            await _active_run(conn, run_id)
            if not await tracking.delete_tag(conn, run_id, body.key):
                raise ResourceMissing(f"No tag with name: {body.key} in run with id {run_id}", "key")
        return _answer({})

    @post("/runs/log-batch", status_code=200)
    async def log_batch(self, request: Request[Any, Any, Any], ctx: ModuleContext,
                        store: Store) -> Response[bytes]:
        caller = await authenticate(request, ctx, store, write=True)
        body = decode_body(await request.body(), LogBatch)
        run_id = run_id_of(body.run_id)
        caller.check_run(run_id)
        if len(body.metrics) > MAX_BATCH_METRICS:
            raise InvalidValue(f"A batch logging request can contain at most {MAX_BATCH_METRICS} metrics. "
                               f"Got {len(body.metrics)} metrics.", "metrics")
        for name, items in (("params", body.params), ("tags", body.tags)):
            if len(items) > MAX_BATCH_PARAMS_TAGS:
                raise InvalidValue(f"A batch logging request can contain at most {MAX_BATCH_PARAMS_TAGS} {name}. "
                                   f"Got {len(items)} {name}.", name)
        if len(body.metrics) + len(body.params) + len(body.tags) > MAX_BATCH_METRICS:
            raise InvalidValue(f"A batch logging request can contain at most {MAX_BATCH_METRICS} metrics, "
                               "params and tags in total", "metrics")
        points = [metric_point(m.key, m.value, m.step, m.timestamp, f"metrics[{i}].")
                  for i, m in enumerate(body.metrics)]
        run_params = checked_params(body.params, "params")
        run_tags = checked_tags(body.tags, "tags")
        async with store.begin() as conn:
            await _active_run(conn, run_id)
            await tracking.log_params(conn, run_id, run_params)
            await _set_tags(conn, run_id, run_tags)
            await tracking.log_points(conn, run_id, points)
        return _answer({})

    @get("/metrics/get-history")
    async def get_metric_history(self, request: Request[Any, Any, Any], ctx: ModuleContext,
                                 store: Store) -> Response[bytes]:
        caller = await authenticate(request, ctx, store, write=False)
        query = decode_query(request.query_params, GetMetricHistory)
        run_id = run_id_of(query.run_id, query.run_uuid)
        caller.check_run(run_id)
        if not query.metric_key:
            raise InvalidValue("Missing value for required parameter 'metric_key'", "metric_key")
        if query.max_results is not None and query.max_results <= 0:
            raise InvalidValue(f"Invalid value {query.max_results} for parameter 'max_results' supplied. It must "
                               "be a positive integer.", "max_results")
        limit = min(query.max_results or MAX_HISTORY_PAGE, MAX_HISTORY_PAGE)
        offset = history_offset(query.page_token)
        m = metrics.c
        async with store.read() as conn:
            await tracking.run_row(conn, run_id)
            rows = list(await conn.execute(
                select(m.key, m.value, m.is_nan, m.step, m.timestamp)
                .where(m.run_id == run_id, m.key == query.metric_key)
                .order_by(m.step, m.timestamp, m.id).offset(offset).limit(limit + 1)))
        answer: dict[str, Any] = {"metrics": [metric_json(r.key, r.value, r.is_nan, r.step, r.timestamp)
                                              for r in rows[:limit]]}
        if len(rows) > limit:
            answer["next_page_token"] = str(offset + limit)
        return _answer(answer)

    @route("/{rest:path}", http_method=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def unknown(self, request: Request[Any, Any, Any], rest: str) -> Response[bytes]:
        """Anything else MLflow's client might call: its own "endpoint not found" answer, not the envelope."""
        raise NotFoundException()


CONTROLLERS: list[Any] = [MlflowController]
