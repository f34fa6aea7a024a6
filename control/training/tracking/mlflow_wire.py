"""MLflow's tracking JSON (``service.proto`` as its REST API speaks it): request structs and answer builders.

Requests are decoded leniently, as MLflow's server does: unknown fields are ignored (clients send ``run_uuid``
beside ``run_id``, ``model_id``, ``dataset_name``…), 64-bit integers may arrive as strings and doubles as
``"NaN"``/``"Infinity"``/``"-Infinity"`` (protobuf's JSON mapping). Answers use MLflow's field names and the same
mapping for non-finite values, which plain JSON cannot carry. Malformed input is ``InvalidValue`` naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from control.training.tables import params, tags
from control.training.tracking.errors import InvalidValue
from control.training.tracking.store import latest_points

__all__ = [
    "CreateExperiment",
    "CreateRun",
    "DeleteTag",
    "GetExperiment",
    "GetExperimentByName",
    "GetMetricHistory",
    "GetRun",
    "KeyValue",
    "LogBatch",
    "LogMetric",
    "LogParam",
    "MetricIn",
    "SearchRuns",
    "SetTag",
    "UpdateRun",
    "decode_body",
    "decode_query",
    "experiment_json",
    "metric_json",
    "number",
    "run_id_of",
    "run_info_json",
    "runs_json",
]

T = TypeVar("T")


class KeyValue(msgspec.Struct):
    key: str = ""
    value: str = ""


class MetricIn(msgspec.Struct):
    key: str = ""
    value: float | None = None
    timestamp: int | None = None
    step: int = 0


class GetExperimentByName(msgspec.Struct):
    experiment_name: str = ""


class GetExperiment(msgspec.Struct):
    experiment_id: str = ""


class CreateExperiment(msgspec.Struct):
    name: str = ""
    artifact_location: str | None = None
    tags: list[KeyValue] = []


class CreateRun(msgspec.Struct):
    experiment_id: str = "0"
    user_id: str | None = None
    start_time: int | None = None
    tags: list[KeyValue] = []
    run_name: str | None = None


class GetRun(msgspec.Struct):
    run_id: str = ""
    run_uuid: str = ""


class UpdateRun(msgspec.Struct):
    run_id: str = ""
    run_uuid: str = ""
    status: str | None = None
    end_time: int | None = None
    run_name: str | None = None


class LogMetric(msgspec.Struct):
    run_id: str = ""
    run_uuid: str = ""
    key: str = ""
    value: float | None = None
    timestamp: int | None = None
    step: int = 0


class LogParam(msgspec.Struct):
    run_id: str = ""
    run_uuid: str = ""
    key: str = ""
    value: str | None = None


class SetTag(msgspec.Struct):
    run_id: str = ""
    run_uuid: str = ""
    key: str = ""
    value: str | None = None


class DeleteTag(msgspec.Struct):
    run_id: str = ""
    key: str = ""


class LogBatch(msgspec.Struct):
    run_id: str = ""
    metrics: list[MetricIn] = []
    params: list[KeyValue] = []
    tags: list[KeyValue] = []


class GetMetricHistory(msgspec.Struct):
    run_id: str = ""
    run_uuid: str = ""
    metric_key: str = ""
    max_results: int | None = None
    page_token: str = ""


class SearchRuns(msgspec.Struct):
    experiment_ids: list[str] = []
    filter: str = ""
    run_view_type: str = "ACTIVE_ONLY"
    max_results: int = 1000
    order_by: list[str] = []
    page_token: str = ""


def decode_body(body: bytes, type_: type[T]) -> T:
    """A POST body (``{}`` when empty, as the client sends for calls without fields)."""
    try:
        return msgspec.json.decode(body or b"{}", type=type_, strict=False)
    except msgspec.ValidationError as err:
        message, _, path = str(err).partition(" - at `$")
        raise InvalidValue(f"Invalid value in the request body: {message}", path.rstrip("`").lstrip(".")) from None
    except (msgspec.DecodeError, RecursionError):
        raise InvalidValue("The request body is not valid JSON (or is nested too deeply)") from None


def decode_query(query: Mapping[str, Any], type_: type[T]) -> T:
    """A GET's query string (``requests`` puts the message's fields there)."""
    try:
        return msgspec.convert(dict(query), type_, strict=False)
    except msgspec.ValidationError as err:
        message, _, path = str(err).partition(" - at `$")
        raise InvalidValue(f"Invalid query parameter: {message}", path.rstrip("`").lstrip(".")) from None


def number(value: float) -> float | str:
    """A double as protobuf's JSON mapping writes it: NaN and the infinities as strings."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def metric_json(key: str, value: float, is_nan: bool, step: int, timestamp: int) -> dict[str, Any]:
    return {"key": key, "value": "NaN" if is_nan else number(value), "timestamp": timestamp, "step": step}


def experiment_json(row: Any) -> dict[str, Any]:
    return {"experiment_id": str(row.experiment_id), "name": row.name, "artifact_location": row.artifact_location,
            "lifecycle_stage": row.lifecycle_stage, "last_update_time": row.last_update_time,
            "creation_time": row.creation_time, "tags": [{"key": k, "value": v} for k, v in row.tags.items()]}


def run_info_json(row: Any) -> dict[str, Any]:
    info = {"run_id": row.run_id, "run_uuid": row.run_id, "run_name": row.run_name,
            "experiment_id": str(row.experiment_id), "user_id": row.user_id, "status": row.status,
            "start_time": row.start_time, "artifact_uri": row.artifact_uri, "lifecycle_stage": row.lifecycle_stage}
    if row.end_time is not None:
        info["end_time"] = row.end_time
    return info


async def runs_json(conn: AsyncConnection, rows: Sequence[Any]) -> list[dict[str, Any]]:
    """Whole runs (info, params, tags, each metric's latest point), with three queries for the lot."""
    ids = [row.run_id for row in rows]
    if not ids:
        return []
    data: dict[str, dict[str, list[dict[str, Any]]]] = {i: {"metrics": [], "params": [], "tags": []} for i in ids}
    for table, name in ((params, "params"), (tags, "tags")):
        for r in await conn.execute(select(table.c.run_id, table.c.key, table.c.value)
                                    .where(table.c.run_id.in_(ids)).order_by(table.c.run_id, table.c.key)):
            data[r.run_id][name].append({"key": r.key, "value": r.value})
    for r in await latest_points(conn, ids):
        data[r.run_id]["metrics"].append(metric_json(r.key, r.value, r.is_nan, r.step, r.timestamp))
    return [{"info": run_info_json(row), "data": data[row.run_id], "inputs": {}} for row in rows]


def run_id_of(*candidates: str) -> str:
    """The first non-empty of ``run_id``/``run_uuid`` (older clients send only the latter)."""
    for candidate in candidates:
        if candidate:
            return candidate
    raise InvalidValue("Missing value for required parameter 'run_id'", "run_id")

