"""The audit log: every admin mutation (in the mutation's own transaction) and every denial.

Services call ``ctx.audit.record(conn, actor, action=…, resource_type=…, …)``
inside the ``store.begin()`` block that makes the change, so the entry and the
change commit or roll back together: there is no audited change that did not
happen and no change that escaped the log. Denials are written by the auth guard
in a transaction of their own, aggregated per (reason, source) window so that a
flood of refused requests writes a bounded number of rows (``denials``).

Actions are dotted ``<module>.<resource>.<verb>`` (``governance.policy.update``);
``before``/``after`` are the resource's API representation (never secrets).
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Literal

import msgspec
from litestar import get
from litestar.openapi.spec import Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.params import Parameter
from sqlalchemy import and_, func, insert, or_, select, true
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi.auth import Actor, Principal, Role, requires
from adapters.adminapi.denials import DenialStats, DenialWindows
from adapters.adminapi.envelope import Envelope, Page, PageParams, ok
from adapters.adminapi.errors import FieldError, ValidationFailed
from adapters.adminapi.tables import audit_log
from adapters.store import Store, StoreError, utcnow

__all__ = ["AuditEntry", "AuditWriter", "list_audit_logs", "query_audit"]

log = logging.getLogger("llmops.audit")


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    id: int
    at: datetime
    actor_key_id: str | None
    actor_name: str
    actor_role: str | None
    action: str
    resource_type: str
    resource_id: str | None
    outcome: Literal["success", "denied"]
    status_code: int | None
    request_id: str | None
    before: Any = None
    after: Any = None
    detail: str | None = None


class AuditWriter:
    """Writes audit entries. Denials are aggregated per (reason, source) window (see ``denials``)."""

    def __init__(self, store: Store | None, *, stats: DenialStats | None = None, window_s: float = 60.0,
                 max_windows: int = 10_000) -> None:
        self._store = store
        self.stats = stats or DenialStats()
        self._window_s = window_s
        self._windows = DenialWindows(max_windows=max_windows)
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._writes: set[asyncio.Task[None]] = set()

    async def record(
        self,
        conn: AsyncConnection,
        actor: Actor,
        *,
        action: str,
        resource_type: str,
        resource_id: str | None = None,
        before: Any = None,
        after: Any = None,
        detail: str | None = None,
    ) -> None:
        """Write a success entry inside the caller's transaction."""
        principal = actor.principal
        await conn.execute(insert(audit_log).values(
            at=utcnow(), actor_key_id=principal.key_id, actor_name=principal.name, actor_role=principal.role.name,
            action=action, resource_type=resource_type, resource_id=resource_id, outcome="success",
            status_code=None, request_id=actor.request_id, before=_plain(before), after=_plain(after),
            detail=detail[:500] if detail else None,
        ))

    async def denial(
        self,
        *,
        principal: Principal | None,
        key_id: str | None,
        request_id: str,
        method: str,
        path: str,
        status_code: int,
        reason: str,
        source: str | None = None,
    ) -> None:
        """Record a refused request. Never raises: a denial must be answered even if the log is down.

        Only the first denial per (reason, source) and window is written now; the others are
        counted into one aggregate row written when the window closes (or at ``aclose``).
        """
        self.stats.count(status_code)
        resource_id = f"{method} {path}"[:200]
        actor_name = principal.name if principal else "anonymous"
        key, first = self._windows.admit(reason[:500], source or "unknown", at=utcnow(), status_code=status_code,
                                         resource_id=resource_id, actor_name=actor_name, request_id=request_id)
        if not first:
            return
        self._timers[key] = asyncio.get_running_loop().call_later(self._window_s, self._close_window, key)
        await self._write_denial(dict(
            at=utcnow(), actor_key_id=principal.key_id if principal else key_id, actor_name=actor_name,
            actor_role=principal.role.name if principal else None,
            resource_id=resource_id, status_code=status_code, request_id=request_id, detail=reason[:500],
            after={"source": source},
        ))

    async def aclose(self) -> None:
        """Write the aggregates of every open window (at shutdown), and wait for pending writes."""
        for key in self._windows.open_keys():
            self._close_window(key)
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    def _close_window(self, key: tuple[str, str]) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        window = self._windows.close(key)
        if window is None:
            return
        reason, source = key
        task = asyncio.ensure_future(self._write_denial(dict(
            at=window.last_at, actor_key_id=None, actor_name=window.actor_name, actor_role=None,
            resource_id=window.resource_id, status_code=window.status_code,
            request_id=window.request_ids[0] if window.request_ids else None,
            detail=f"{reason} ({window.count} more from {source})"[:500],
            after={"source": source, "count": window.count, "firstAt": window.first_at.isoformat(),
                   "lastAt": window.last_at.isoformat(), "windowS": self._window_s,
                   "requestIds": window.request_ids},
        )))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write_denial(self, values: dict[str, Any]) -> None:
        if self._store is None:
            log.warning("admin request denied (%s, %s): %s", values["resource_id"], values["status_code"],
                        values["detail"])
            return
        try:
            async with self._store.begin() as conn:
                await conn.execute(insert(audit_log).values(action="auth.denied", resource_type="route",
                                                            outcome="denied", before=None, **values))
        except StoreError as err:
            log.warning("could not write audit entry for a denied request (%s): %s", values["resource_id"], err)


def _plain(value: Any) -> Any:
    return None if value is None else msgspec.to_builtins(value)


def _as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00+01:00 is before datetime.min in UTC (9999-12-31T23:59-01:00 after datetime.max): a
        # valid date-time whose window reaches past what can be stored, so it is clamped, not refused.
        return (datetime.min if value.year == 1 else datetime.max).replace(tzinfo=UTC)


# A time filter: an RFC 3339 date-time (one without an offset is taken as UTC), Unix seconds between the first
# and the last second of datetime's years 1-9999 (bounds exact: parsed as a decimal, not a float), or null (no
# filter, as Litestar reads "null" for any optional parameter). The schema states exactly that.
_UNIX_MIN, _UNIX_MAX = -62135596800, 253402300799
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INSTANT_SCHEMA = {"oneOf": None, "anyOf": [
    Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.DATE_TIME),
    Schema(type=OpenAPIType.NUMBER, minimum=_UNIX_MIN, maximum=_UNIX_MAX, description="Unix seconds"),
    Schema(type=OpenAPIType.NULL),
]}


def parse_instant(raw: str | None, name: str) -> datetime | None:
    """The ``since``/``until`` value as an aware UTC datetime; ``ValidationFailed`` naming ``name`` otherwise."""
    if raw is None or raw == "null":
        return None
    if _NUMBER.fullmatch(raw):
        seconds = Decimal(raw)
        if not _UNIX_MIN <= seconds <= _UNIX_MAX:
            raise ValidationFailed([FieldError(field=name, message=f"Unix seconds must be between {_UNIX_MIN} "
                                                                   f"and {_UNIX_MAX}")])
        micros = int((seconds * 1_000_000).to_integral_value(rounding=ROUND_FLOOR))
        return _EPOCH + timedelta(microseconds=micros)
    try:
        return _as_utc(msgspec.convert(raw, datetime))
    except msgspec.ValidationError as err:
        raise ValidationFailed([FieldError(field=name, message=f"not an RFC 3339 date-time or Unix seconds "
                                                                f"({err})")]) from err


async def query_audit(
    store: Store,
    page: PageParams,
    *,
    actor: str | None = None,
    action: str | None = None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Page[AuditEntry]:
    """Newest first. ``actor`` matches a key id or name; ``action`` ending in ``*`` is a prefix match."""
    since, until = _as_utc(since), _as_utc(until)
    # since after until is an empty window, not an error: it matches nothing, like any other filter.
    conditions = []
    if actor:
        conditions.append(or_(audit_log.c.actor_key_id == actor, audit_log.c.actor_name == actor))
    if action:
        if action.endswith("*"):
            prefix = action[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conditions.append(audit_log.c.action.like(prefix + "%", escape="\\"))
        else:
            conditions.append(audit_log.c.action == action)
    for column, value in ((audit_log.c.resource_type, resource_type), (audit_log.c.resource_id, resource_id),
                          (audit_log.c.outcome, outcome)):
        if value:
            conditions.append(column == value)
    if since:
        conditions.append(audit_log.c.at >= since)
    if until:
        conditions.append(audit_log.c.at <= until)
    where = and_(true(), *conditions)
    async with store.read() as conn:
        total = (await conn.execute(select(func.count()).select_from(audit_log).where(where))).scalar_one()
        rows = (await conn.execute(
            select(audit_log).where(where).order_by(audit_log.c.id.desc()).limit(page.page_size).offset(page.offset)
        )).mappings().all()
    return page.wrap([AuditEntry(**dict(row)) for row in rows], total)


@get(
    "/audit/logs", opt=requires(Role.operator), tags=["audit"], summary="Query the audit log",
    description="Admin mutations and denied requests, newest first. Needs role operator.",
)
async def list_audit_logs(
    store: Store,
    page: PageParams,
    actor: str | None = Parameter(query="actor", default=None, max_length=100,
                                  description="key id or key name"),
    action: str | None = Parameter(query="action", default=None, max_length=100,
                                   description="exact action, or a prefix ending in *"),
    resource_type: str | None = Parameter(query="resourceType", default=None, max_length=50),
    resource_id: str | None = Parameter(query="resourceId", default=None, max_length=200),
    outcome: Literal["success", "denied"] | None = Parameter(query="outcome", default=None),
    since: str | None = Parameter(query="since", default=None, schema_extra=_INSTANT_SCHEMA,
                                  description="RFC 3339 date-time (UTC if no offset) or Unix seconds; inclusive"),
    until: str | None = Parameter(query="until", default=None, schema_extra=_INSTANT_SCHEMA,
                                  description="RFC 3339 date-time (UTC if no offset) or Unix seconds; inclusive"),
) -> Envelope[Page[AuditEntry]]:
    result = await query_audit(
        store, page, actor=actor, action=action, resource_type=resource_type, resource_id=resource_id,
        outcome=outcome, since=parse_instant(since, "since"), until=parse_instant(until, "until"),
    )
    return ok(result)
