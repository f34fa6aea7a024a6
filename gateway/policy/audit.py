"""Data-plane denials into the audit log: queued on the request path, written off it, aggregated and batched.

A policy plug-in calls ``DenialAudit.record(...)`` when it refuses a request: one append to a bounded
deque, no I/O, no clock but ``time.time()``. A task started by the plug-in's ``lifespan`` (``running()``)
wakes every ``flush_interval_s``, groups the queued denials per ``(detail, source)`` window exactly as
the admin API's guard does (``adapters.adminapi.denials.DenialWindows``: the first denial of a window is
written at once, the rest only counted, and one aggregate row with their ``count`` follows when the
window closes), and writes each tick's rows in one transaction through the control plane's store. A
flood of refused requests thus costs the database a bounded number of rows, and the request path nothing.

``source`` is the key id when one was presented (a well-formed key names its public id even when it is
unknown or revoked; never the secret), else ``anonymous``. The auth plug-in's rows use the admin guard's
``auth.denied`` action (other plug-ins pass their own, e.g. ``policy.denied``), resource type
``gateway_route`` and the route or model the client named as resource id, so
``GET /llm-ops/v1/audit/logs?action=auth.denied`` lists refused keys on both planes.

Nothing here blocks a request: a full queue drops (counted in ``dropped`` and logged once), a store
error loses that tick's rows (logged, never raised), and without a store the first denial of each
window is logged instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import insert

from adapters.adminapi.denials import OVERFLOW, DenialWindows, Window
from adapters.adminapi.tables import audit_log
from adapters.store import StoreError

__all__ = ["RESOURCE_TYPE", "Denial", "DenialAudit"]

log = logging.getLogger("llmops.policy.audit")

RESOURCE_TYPE = "gateway_route"
_ANONYMOUS = "anonymous"


class Denial(msgspec.Struct, frozen=True, gc=False):
    """One refused request as the audit log keeps it (no secret ever: ids and names only)."""

    at: float  # time.time()
    status: int
    reason: str  # the metric's reason label: authentication, permission, model_not_allowed, ...
    detail: str  # human-readable, e.g. "invalid key"; windows are per (detail, source)
    request_id: str
    resource: str  # the route or model the client named
    endpoint: str
    key_id: str | None = None
    actor_name: str = _ANONYMOUS
    actor_role: str | None = None


class DenialAudit:
    """One plug-in's denial queue and its writer (``running``); ``record`` is the only request-path call."""

    def __init__(self, store: Any, *, action: str = "auth.denied", window_s: float = 60.0,
                 flush_interval_s: float = 0.25, max_windows: int = 1_000, max_pending: int = 10_000) -> None:
        self._store = store
        self._action = action
        self._window_s = window_s
        self._interval_s = flush_interval_s
        self._pending: deque[Denial] = deque()
        self._max_pending = max_pending
        self._windows = DenialWindows(max_windows=max_windows)
        self._deadlines: dict[tuple[str, str], float] = {}  # window key -> when it closes (time.time())
        self.dropped = 0
        self.written = 0

    def record(self, denial: Denial) -> None:
        """Queue a denial (request path: an append; past ``max_pending`` it is dropped and counted)."""
        if len(self._pending) >= self._max_pending:
            if not self.dropped:
                log.warning("denial audit queue full (%d): further denials are counted in metrics only",
                            self._max_pending)
            self.dropped += 1
            return
        self._pending.append(denial)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The writer task, for the plug-in's ``lifespan``; on exit every open window is closed and written."""
        task = asyncio.create_task(self._loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await self.flush(close_all=True)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            if self._pending or self._deadlines:
                await self.flush()

    async def flush(self, *, close_all: bool = False) -> None:
        """Admit what is queued, close due windows (all of them with ``close_all``), write the rows."""
        rows = self._admit()
        now = time.time()
        for key, deadline in list(self._deadlines.items()):
            if close_all or deadline <= now:
                del self._deadlines[key]
                window = self._windows.close(key)
                if window is not None:
                    rows.append(self._aggregate(key, window))
        if rows:
            await self._write(rows)

    def _admit(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        pending = self._pending
        while pending:
            d = pending.popleft()
            at = datetime.fromtimestamp(d.at, UTC)
            source = d.key_id or _ANONYMOUS
            key, first = self._windows.admit(d.detail[:500], source, at=at, status_code=d.status,
                                             resource_id=d.resource[:200], actor_name=d.actor_name[:100],
                                             request_id=d.request_id)
            if first:
                self._deadlines[key] = d.at + self._window_s
                rows.append(dict(
                    at=at, actor_key_id=d.key_id, actor_name=d.actor_name[:100], actor_role=d.actor_role,
                    action=self._action, resource_type=RESOURCE_TYPE, resource_id=d.resource[:200],
                    outcome="denied", status_code=d.status, request_id=d.request_id[:128], before=None,
                    after={"source": source, "reason": d.reason, "endpoint": d.endpoint}, detail=d.detail[:500],
                ))
        return rows

    def _aggregate(self, key: tuple[str, str], window: Window) -> dict[str, Any]:
        detail, source = key
        return dict(
            at=window.last_at, actor_key_id=None if source == _ANONYMOUS or key == OVERFLOW else source,
            actor_name=window.actor_name, actor_role=None, action=self._action, resource_type=RESOURCE_TYPE,
            resource_id=window.resource_id, outcome="denied", status_code=window.status_code,
            request_id=window.request_ids[0] if window.request_ids else None, before=None,
            after={"source": source, "count": window.count, "firstAt": window.first_at.isoformat(),
                   "lastAt": window.last_at.isoformat(), "windowS": self._window_s,
                   "requestIds": window.request_ids},
            detail=f"{detail} ({window.count} more from {source})"[:500],
        )

    async def _write(self, rows: list[dict[str, Any]]) -> None:
        if self._store is None:
            for row in rows:
                log.info("data-plane request denied (%s %s, %s): %s", row["status_code"], row["resource_id"],
                         row["after"]["source"], row["detail"])
            return
        try:
            async with self._store.begin() as conn:
                await conn.execute(insert(audit_log), rows)
            self.written += len(rows)
        except StoreError as err:
            log.warning("could not write %d audit entries for denied data-plane requests: %s", len(rows), err)
