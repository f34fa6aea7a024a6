"""Checks of the MLflow subset's inputs, MLflow's way: each failure an ``InvalidValue`` naming the field."""

from __future__ import annotations

from collections.abc import Sequence

from adapters.training.contract import MetricPoint
from control.training.tracking.errors import InvalidValue, ResourceMissing
from control.training.tracking.mlflow_wire import KeyValue
from control.training.tracking.names import key_problem, param_problem, tag_problem

__all__ = ["check_key", "checked_params", "checked_tags", "history_offset", "metric_point", "parse_experiment_id"]


def check_key(key: str, field: str) -> None:
    if (why := key_problem(key)) is not None:
        raise InvalidValue(f"Invalid value {key[:100]!r} for parameter '{field}': the name {why}", field)


def checked_params(items: Sequence[KeyValue], field: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, item in enumerate(items):
        check_key(item.key, f"{field}[{i}].key")
        if (why := param_problem(item.value)) is not None:
            raise InvalidValue(f"Param value for {item.key!r} {why}", f"{field}[{i}].value")
        if item.key in out:
            raise InvalidValue(f"Duplicate parameter keys have been submitted: [{item.key!r}]", field)
        out[item.key] = item.value
    return out


def checked_tags(items: Sequence[KeyValue], field: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, item in enumerate(items):
        check_key(item.key, f"{field}[{i}].key")
        if (why := tag_problem(item.value)) is not None:
            raise InvalidValue(f"Tag value for {item.key!r} {why}", f"{field}[{i}].value")
        out[item.key] = item.value
    return out


def metric_point(key: str, value: float | None, step: int, timestamp: int | None, field: str) -> MetricPoint:
    check_key(key, f"{field}key")
    if value is None:
        raise InvalidValue(f"Missing value for required parameter '{field}value'", f"{field}value")
    if timestamp is not None and timestamp < 0:
        raise InvalidValue("Timestamp must be a nonnegative long (64-bit integer)", f"{field}timestamp")
    return MetricPoint(key=key, value=value, step=step, timestamp=timestamp)


def parse_experiment_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InvalidValue(f"Invalid experiment id {text!r}", "experiment_id") from None
    if not 0 <= value < 2**31:
        raise ResourceMissing(f"No Experiment with id={text} exists", "experiment_id")
    return value


def history_offset(token: str) -> int:
    if not token:
        return 0
    if not token.isdigit() or len(token) > 12:
        raise InvalidValue("Invalid page token", "page_token")
    return int(token)
