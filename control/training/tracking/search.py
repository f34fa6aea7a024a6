"""``runs/search``: MLflow's filter and order-by grammar (the subset below) compiled to SQL over the tracking store.

Filter: clauses joined by ``AND`` (MLflow has no ``OR``), each ``<kind>.<key> <comparator> <value>``:

* ``metrics.<key>`` (``metric``): the run's latest value, compared with a number by ``= != > >= < <=``;
* ``params.<key>`` (``param``, ``parameter(s)``) and ``tags.<key>`` (``tag``): strings, by ``= != LIKE ILIKE``;
* ``attributes.<name>`` (``attribute``, ``attr``, ``run``): ``status``, ``run_name``, ``run_id``, ``user_id``,
  ``artifact_uri``, ``lifecycle_stage`` (strings, also ``IN``/``NOT IN`` a parenthesised list) and
  ``start_time``, ``end_time`` (numbers).

Keys with other characters are quoted: ``metrics.`eval loss``` or ``tags."my tag"``; strings take single or
double quotes. ``LIKE`` is case-sensitive on both databases (SQLite's own is not: it becomes ``GLOB`` there).
Order-by: ``<kind>.<key> [ASC|DESC]`` items; runs without the value sort last; ties fall back to newest first,
then run id. A page token is the next offset, opaque to clients. Anything else is ``InvalidValue``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, case, exists, func, not_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from control.training.tables import metrics, params, runs, tags
from control.training.tracking.errors import InvalidValue

__all__ = ["MAX_RESULTS", "RunQuery", "search_runs"]

MAX_RESULTS = 50_000  # MLflow's own bound for one page
_KINDS = {
    "metric": "metrics", "metrics": "metrics",
    "param": "params", "params": "params", "parameter": "params", "parameters": "params",
    "tag": "tags", "tags": "tags",
    "attribute": "attributes", "attributes": "attributes", "attr": "attributes", "run": "attributes",
}
_STRING_ATTRIBUTES = {"status": runs.c.status, "run_name": runs.c.run_name, "run_id": runs.c.run_id,
                      "user_id": runs.c.user_id, "artifact_uri": runs.c.artifact_uri,
                      "lifecycle_stage": runs.c.lifecycle_stage}
_NUMERIC_ATTRIBUTES = {"start_time": runs.c.start_time, "end_time": runs.c.end_time}
_ALIASES = {"run_uuid": "run_id", "runName": "run_name", "created": "start_time", "Created": "start_time"}
_NUMERIC_OPS = ("=", "!=", ">", ">=", "<", "<=")
_STRING_OPS = ("=", "!=", "LIKE", "ILIKE")
_VIEWS = {"ACTIVE_ONLY": "active", "DELETED_ONLY": "deleted", "ALL": None}


@dataclass(frozen=True)
class RunQuery:
    experiment_ids: Sequence[int]
    filter: str = ""
    order_by: Sequence[str] = ()
    max_results: int = 1000
    page_token: str = ""
    run_view_type: str = "ACTIVE_ONLY"
    only_run_id: str | None = None  # a job token sees its own run only


async def search_runs(conn: AsyncConnection, query: RunQuery) -> tuple[list[Any], str]:
    """One page of run rows and the next page's token (empty on the last page)."""
    if not 1 <= query.max_results <= MAX_RESULTS:
        raise InvalidValue(f"max_results must be between 1 and {MAX_RESULTS}", "max_results")
    if query.run_view_type not in _VIEWS:
        raise InvalidValue(f"Invalid run_view_type {query.run_view_type!r}", "run_view_type")
    offset = _offset(query.page_token)
    conditions: list[ColumnElement[bool]] = [runs.c.experiment_id.in_(list(query.experiment_ids))]
    if (stage := _VIEWS[query.run_view_type]) is not None:
        conditions.append(runs.c.lifecycle_stage == stage)
    if query.only_run_id is not None:
        conditions.append(runs.c.run_id == query.only_run_id)
    compiler = _Compiler(sqlite=conn.dialect.name == "sqlite")
    conditions += [compiler.clause(*c) for c in _parse_filter(query.filter)]
    order: list[Any] = []
    for item in query.order_by:
        expr, descending = _order_item(item)
        order += [expr.is_(None), expr.desc() if descending else expr.asc()]
    order += [runs.c.start_time.desc(), runs.c.run_id]
    rows = list(await conn.execute(select(runs).where(and_(*conditions)).order_by(*order)
                                   .offset(offset).limit(query.max_results + 1)))
    more = len(rows) > query.max_results
    return rows[:query.max_results], _token(offset + query.max_results) if more else ""


def _offset(token: str) -> int:
    if not token:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidValue("Invalid page token", "page_token") from None
    if not isinstance(offset, int) or not 0 <= offset <= 2**31:
        raise InvalidValue("Invalid page token", "page_token")
    return offset


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


# -- the grammar ---------------------------------------------------------------------------------------------

_SPECIAL = "=!<>(),'\"`"


def _tokens(text: str) -> list[tuple[str, str]]:
    """``(kind, text)`` pairs: ``str`` (quoted), ``bq`` (backquoted), ``op`` and ``word``; ``sp`` marks a gap."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            while i < len(text) and text[i].isspace():
                i += 1
            out.append(("sp", " "))
        elif ch in "'\"`":
            end = text.find(ch, i + 1)
            if end < 0:
                raise InvalidValue(f"Unterminated quote in {text!r}", "filter")
            out.append(("bq" if ch == "`" else "str", text[i + 1:end]))
            i = end + 1
        elif text.startswith(("!=", ">=", "<="), i):
            out.append(("op", text[i:i + 2]))
            i += 2
        elif ch in "=<>(),":
            out.append(("op", ch))
            i += 1
        elif ch == "!":
            raise InvalidValue(f"Invalid comparator in {text!r}", "filter")
        else:
            start = i
            while i < len(text) and not text[i].isspace() and text[i] not in _SPECIAL:
                i += 1
            out.append(("word", text[start:i]))
    return out


class _Parser:
    def __init__(self, text: str, field: str) -> None:
        self.items = _tokens(text)
        self.pos = 0
        self.text = text
        self.field = field

    def error(self, why: str) -> InvalidValue:
        return InvalidValue(f"Invalid {self.field} {self.text!r}: {why}", self.field)

    def skip_space(self) -> None:
        while self.pos < len(self.items) and self.items[self.pos][0] == "sp":
            self.pos += 1

    def peek(self) -> tuple[str, str] | None:
        self.skip_space()
        return self.items[self.pos] if self.pos < len(self.items) else None

    def take(self) -> tuple[str, str]:
        item = self.peek()
        if item is None:
            raise self.error("it ends too early")
        self.pos += 1
        return item

    def identifier(self) -> tuple[str, str]:
        kind, text = self.take()
        if kind != "word" or "." not in text:
            raise self.error(f"expected <kind>.<key>, found {text!r}")
        prefix, _, key = text.partition(".")
        if not key and self.pos < len(self.items) and self.items[self.pos][0] in ("bq", "str"):
            key = self.items[self.pos][1]  # metrics.`my metric`: the quoted part follows the dot directly
            self.pos += 1
        entity = _KINDS.get(prefix.lower())
        if entity is None or not key:
            raise self.error(f"unknown identifier {text!r} (use metrics., params., tags. or attributes.)")
        return entity, key


def _parse_filter(text: str) -> list[tuple[str, str, str, Any]]:
    """``[(kind, key, comparator, value)]``; value is a str, a float or a list of str (``IN``)."""
    parser = _Parser(text, "filter")
    clauses: list[tuple[str, str, str, Any]] = []
    while parser.peek() is not None:
        if clauses:
            kind, word = parser.take()
            if kind != "word" or word.upper() != "AND":
                raise parser.error(f"expected AND, found {word!r}")
        entity, key = parser.identifier()
        kind, op = parser.take()
        op = op.upper()
        if kind == "word" and op == "NOT":
            kind, word = parser.take()
            if word.upper() != "IN":
                raise parser.error("expected IN after NOT")
            op = "NOT IN"
        elif kind not in ("op", "word") or op not in (*_NUMERIC_OPS, "LIKE", "ILIKE", "IN"):
            raise parser.error(f"invalid comparator {op!r}")
        clauses.append((entity, key, op, _value(parser, op)))
    return clauses


def _value(parser: _Parser, op: str) -> Any:
    if op in ("IN", "NOT IN"):
        if parser.take() != ("op", "("):
            raise parser.error(f"{op} takes a parenthesised list of strings")
        values: list[str] = []
        while True:
            kind, text = parser.take()
            if kind != "str":
                raise parser.error(f"{op} takes a parenthesised list of strings")
            values.append(text)
            sep = parser.take()
            if sep == ("op", ")"):
                return values
            if sep != ("op", ","):
                raise parser.error("expected ',' or ')'")
    kind, text = parser.take()
    if kind == "str":
        return text
    if kind == "word":
        try:
            return float(text)
        except ValueError:
            raise parser.error(f"expected a quoted string or a number, found {text!r}") from None
    raise parser.error(f"expected a value, found {text!r}")


# -- to SQL --------------------------------------------------------------------------------------------------

def _latest_value(key: str) -> Any:
    """The run's latest point of ``key`` (MLflow's order), NULL for NaN or no point: a correlated subquery."""
    m = metrics.c
    return (select(case((m.is_nan, None), else_=m.value)).where(m.run_id == runs.c.run_id, m.key == key)
            .order_by(m.step.desc(), m.timestamp.desc(), m.is_nan.desc(), m.value.desc()).limit(1)
            .scalar_subquery())


class _Compiler:
    """Clauses to SQL; LIKE is case-sensitive on both databases (PostgreSQL's is; SQLite's is not: GLOB there)."""

    def __init__(self, sqlite: bool) -> None:
        self.sqlite = sqlite

    def clause(self, entity: str, key: str, op: str, value: Any) -> ColumnElement[bool]:
        if entity == "metrics":
            if op not in _NUMERIC_OPS or not isinstance(value, float):
                raise InvalidValue(f"metrics.{key} is compared with a number by {', '.join(_NUMERIC_OPS)}",
                                   "filter")
            return self.compare(_latest_value(key), op, value)
        if entity in ("params", "tags"):
            if op not in _STRING_OPS or not isinstance(value, str):
                raise InvalidValue(f"{entity}.{key} is compared with a quoted string by {', '.join(_STRING_OPS)}",
                                   "filter")
            table = params if entity == "params" else tags
            return exists(select(table.c.run_id).where(
                table.c.run_id == runs.c.run_id, table.c.key == key, self.compare(table.c.value, op, value)))
        name = _ALIASES.get(key, key)
        if name in _NUMERIC_ATTRIBUTES:
            if op not in _NUMERIC_OPS or not isinstance(value, float):
                raise InvalidValue(f"attributes.{name} is compared with a number", "filter")
            return self.compare(_NUMERIC_ATTRIBUTES[name], op, int(value))
        if name in _STRING_ATTRIBUTES:
            if op in (">", ">=", "<", "<=") or isinstance(value, float):
                raise InvalidValue(f"attributes.{name} is compared with a quoted string by =, !=, LIKE, ILIKE, "
                                   "IN, NOT IN", "filter")
            return self.compare(_STRING_ATTRIBUTES[name], op, value)
        known = ", ".join([*_STRING_ATTRIBUTES, *_NUMERIC_ATTRIBUTES])
        raise InvalidValue(f"Unknown attribute {key!r} (one of {known})", "filter")

    def compare(self, column: Any, op: str, value: Any) -> ColumnElement[bool]:
        if op == "LIKE":
            return column.op("GLOB")(_glob(value)) if self.sqlite else column.like(value)
        if op == "ILIKE":
            return func.lower(column).like(func.lower(value))
        if op == "IN":
            return column.in_(value)
        if op == "NOT IN":
            return not_(column.in_(value))
        return {"=": column.__eq__, "!=": column.__ne__, ">": column.__gt__, ">=": column.__ge__,
                "<": column.__lt__, "<=": column.__le__}[op](value)


def _glob(pattern: str) -> str:
    """A LIKE pattern as SQLite GLOB: ``%`` → ``*``, ``_`` → ``?``, GLOB's own characters escaped."""
    return "".join({"%": "*", "_": "?", "*": "[*]", "?": "[?]", "[": "[[]"}.get(ch, ch) for ch in pattern)


def _order_item(text: str) -> tuple[Any, bool]:
    parser = _Parser(text, "order_by")
    entity, key = parser.identifier()
    descending = False
    if parser.peek() is not None:
        direction = parser.take()[1].upper()
        if direction not in ("ASC", "DESC") or parser.peek() is not None:
            raise parser.error("expected ASC or DESC at the end")
        descending = direction == "DESC"
    if entity == "metrics":
        return _latest_value(key), descending
    if entity in ("params", "tags"):
        table = params if entity == "params" else tags
        return select(table.c.value).where(table.c.run_id == runs.c.run_id, table.c.key == key) \
            .scalar_subquery(), descending
    name = _ALIASES.get(key, key)
    column = _STRING_ATTRIBUTES.get(name, _NUMERIC_ATTRIBUTES.get(name))
    if column is None:
        raise parser.error(f"unknown attribute {key!r}")
    return column, descending
