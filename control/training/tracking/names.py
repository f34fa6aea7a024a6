"""MLflow's rules for metric, param and tag names and for values, as pure checks (no I/O).

Names are MLflow's: at most 250 characters of letters, digits, ``_ - . / :`` and spaces, and a name must not
resolve to another when read as a path (``a/../b``, ``./a``, ``/a``), because MLflow's file store keeps them
as files. Metric values are finite doubles on our own endpoint; MLflow's REST subset also takes NaN and ±inf.
"""

from __future__ import annotations

import math
import posixpath
import re

__all__ = [
    "MAX_KEY_CHARS",
    "MAX_PARAM_VALUE_CHARS",
    "MAX_TAG_VALUE_CHARS",
    "key_problem",
    "param_problem",
    "tag_problem",
    "value_problem",
]

MAX_KEY_CHARS = 250
MAX_PARAM_VALUE_CHARS = 6000
MAX_TAG_VALUE_CHARS = 8000
_NAME = re.compile(r"[/\w.\- :]*")
_MAX_STEP = 2 ** 63 - 1


def key_problem(name: str) -> str | None:
    """Why ``name`` is not a valid metric, param or tag name, or None when it is."""
    if not name:
        return "must not be empty"
    if len(name) > MAX_KEY_CHARS:
        return f"is longer than {MAX_KEY_CHARS} characters"
    if not _NAME.fullmatch(name):
        return "may only contain letters, digits, underscores, dashes, periods, colons, spaces and slashes"
    normal = posixpath.normpath(name)
    if normal != name or normal == "." or normal.startswith(("..", "/")):
        return f"must not resolve to another name when read as a path (it would be {normal!r})"
    return None


def param_problem(value: str) -> str | None:
    if len(value) > MAX_PARAM_VALUE_CHARS:
        return f"is longer than {MAX_PARAM_VALUE_CHARS} characters"
    return None


def tag_problem(value: str) -> str | None:
    if len(value) > MAX_TAG_VALUE_CHARS:
        return f"is longer than {MAX_TAG_VALUE_CHARS} characters"
    return None


def value_problem(value: float, step: int, timestamp: int | None, *, finite: bool) -> tuple[str, str] | None:
    """``(field, why)`` for a metric point's bad value, step or timestamp; None when all are fine."""
    if finite and not math.isfinite(value):
        return "value", "must be a finite number"
    if not -_MAX_STEP <= step <= _MAX_STEP:
        return "step", "must fit in a 64-bit integer"
    if timestamp is not None and not 0 <= timestamp <= _MAX_STEP:
        return "timestamp", "must be a non-negative 64-bit integer (epoch milliseconds)"
    return None
