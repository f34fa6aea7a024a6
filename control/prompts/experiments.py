"""Experiments: declarations (revisioned), lifecycle actions and runtime changes, each one transaction.

A transaction takes the module's write lock, changes the row, appends an event, writes the audit entry
and republishes the ``experiments`` snapshot (and ``templates`` when the declaration changed: the
versions it pins must be published with it). So a rollback, like every runtime change, reaches every
replica with the next snapshot read (the change feed: about a second), and a failure leaves nothing.

At most one experiment per route runs at a time (409 naming the other). An experiment the gateway YAML
declares (``source: config``) cannot be changed or deleted here (409), but lifecycle actions work on it.
"""

from __future__ import annotations

import builtins
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import (
    Actor,
    Conflict,
    FieldError,
    ModuleContext,
    NotFound,
    Page,
    PageParams,
    Principal,
    Role,
    SemanticError,
)
from adapters.store import utcnow
from control.prompts.checks import experiment_errors, live_templates, template_ref_errors
from control.prompts.lifecycle import EVENT_KINDS, Action, apply_action, fresh_runtime, redeclared
from control.prompts.protocol import (
    Experiment,
    ExperimentCreate,
    ExperimentEvent,
    ExperimentUpdate,
    Source,
)
from control.prompts.publishing import Publisher, live_experiment_rows, lock
from control.prompts.tables import experiment_events, experiments
from control.prompts.templates import owned_by_config
from policies.prompts.documents import ExperimentDoc, ExperimentRuntime, ExperimentState

__all__ = ["ExperimentService", "RuntimeChange", "route_conflict", "system_actor", "write_event",
           "write_experiment"]

RuntimeChange = Callable[[ExperimentRuntime], "ExperimentRuntime | None"]


def system_actor(name: str) -> Actor:
    """The audit log's actor for changes no request made (``config``, ``supervisor``)."""
    return Actor(principal=Principal(key_id=name, name=name, role=Role.admin), request_id=f"{name}-{uuid.uuid4().hex}")


def to_experiment(row: Any) -> Experiment:
    runtime = msgspec.convert(row.runtime, ExperimentRuntime)
    return Experiment(id=row.id, route=row.route, state=runtime.state, revision=row.revision, source=row.source,
                      document=msgspec.convert(row.document, ExperimentDoc), runtime=runtime,
                      created_at=row.created_at, created_by=row.created_by, updated_at=row.updated_at,
                      updated_by=row.updated_by)


def _to_event(row: Any) -> ExperimentEvent:
    return ExperimentEvent(id=row.id, experiment_id=row.experiment_id, at=row.at, kind=row.kind, actor=row.actor,
                           message=row.message, detail=row.detail)


async def write_event(conn: AsyncConnection, experiment_id: str, kind: str, actor: str, message: str,
                      detail: dict[str, Any] | None = None, at: datetime | None = None) -> None:
    await conn.execute(insert(experiment_events).values(
        experiment_id=experiment_id, at=at or utcnow(), kind=kind[:32], actor=actor[:100], message=message,
        detail=msgspec.to_builtins(detail or {})))


async def write_experiment(conn: AsyncConnection, doc: ExperimentDoc, runtime: ExperimentRuntime, *, row: Any,
                           source: Source, who: str, at: datetime) -> None:
    """Insert ``doc`` (``row`` None), or write it over ``row``: a new declaration, or a deleted id revived."""
    values = {"route": doc.route, "document": msgspec.to_builtins(doc), "runtime": msgspec.to_builtins(runtime),
              "revision": runtime.revision, "source": source, "updated_at": at, "updated_by": who}
    if row is None:
        await conn.execute(insert(experiments).values(id=doc.id, created_at=at, created_by=who, **values))
    elif row.deleted_at is not None:
        await conn.execute(update(experiments).where(experiments.c.id == doc.id).values(
            created_at=at, created_by=who, deleted_at=None, **values))
    else:
        await conn.execute(update(experiments).where(experiments.c.id == doc.id).values(**values))


async def route_conflict(conn: AsyncConnection, route: str, exclude: str) -> str | None:
    """The id of another running experiment on ``route``, if any."""
    for row in (await live_experiment_rows(conn)).all():
        if row.id != exclude and row.route == route and row.runtime.get("state") == "running":
            return str(row.id)
    return None


async def _check_route_free(conn: AsyncConnection, route: str, experiment_id: str) -> None:
    other = await route_conflict(conn, route, experiment_id)
    if other is not None:
        raise Conflict(f"Route {route!r} already runs experiment {other!r}: stop or pause it first "
                       f"(one running experiment per route)", {"experiment": other})


def _declaration_errors(doc: ExperimentDoc) -> list[FieldError]:
    errors = experiment_errors(doc)
    if doc.state != "draft":
        errors.append(FieldError(field="document.state", message="the API creates experiments as draft: use "
                                 ".../start, /pause, /stop (state is the YAML's initial state)"))
    return errors


class ExperimentService:
    def __init__(self, ctx: ModuleContext, publisher: Publisher) -> None:
        self._store = ctx.store
        self._audit = ctx.audit
        self._publish = publisher

    # -- declarations ------------------------------------------------------------------------------

    async def create(self, actor: Actor, data: ExperimentCreate) -> Experiment:
        doc = data.document
        errors = _declaration_errors(doc)
        async with self._store.begin() as conn:
            await lock(conn)
            row = await self._row(conn, doc.id)
            if row is not None and row.deleted_at is None:
                raise Conflict(f"An experiment with id {doc.id!r} already exists", {"id": doc.id})
            errors += template_ref_errors(doc, await live_templates(conn))
            if errors:
                raise SemanticError(errors)
            now, who = utcnow(), actor.principal.name
            runtime = fresh_runtime("draft", 1 if row is None else row.revision + 1, time.time())
            await write_experiment(conn, doc, runtime, row=row, source="api", who=who, at=now)
            created = await self._current(conn, doc.id)
            await write_event(conn, doc.id, "created", actor.principal.key_id,
                              f"created by {who} on route {doc.route!r}", {"revision": runtime.revision}, now)
            await self._audit.record(conn, actor, action="prompts.experiment.create", resource_type="experiment",
                                     resource_id=doc.id, after=created,
                                     detail=f"experiment {doc.id!r} on route {doc.route!r}")
            await self._publish.both(conn)
        return created

    async def update(self, actor: Actor, experiment_id: str, data: ExperimentUpdate) -> tuple[Experiment, bool]:
        """A new declaration (next revision); returns whether anything changed."""
        doc = data.document
        errors = _declaration_errors(doc)
        if doc.id != experiment_id:
            errors.insert(0, FieldError(field="document.id", message=f"must be {experiment_id!r}, the experiment "
                                                                     f"this path names"))
        async with self._store.begin() as conn:
            await lock(conn)
            before = await self._current(conn, experiment_id, for_update=True)
            if before.source == "config":
                raise owned_by_config("Experiment", experiment_id)
            if data.expected_revision is not None and data.expected_revision != before.revision:
                raise Conflict(f"Experiment {experiment_id!r} is at revision {before.revision}, not "
                               f"{data.expected_revision}: reload and retry", {"revision": before.revision})
            errors += template_ref_errors(doc, await live_templates(conn))
            if errors:
                raise SemanticError(errors)
            if doc == before.document:
                return before, False
            runtime = redeclared(before.runtime, doc, before.revision + 1)
            if runtime.state == "running" and doc.route != before.route:
                await _check_route_free(conn, doc.route, experiment_id)
            now, who = utcnow(), actor.principal.name
            row = await self._row(conn, experiment_id)
            await write_experiment(conn, doc, runtime, row=row, source="api", who=who, at=now)
            after = await self._current(conn, experiment_id)
            await write_event(conn, experiment_id, "updated", actor.principal.key_id,
                              f"revision {runtime.revision} by {who}", {"revision": runtime.revision}, now)
            await self._audit.record(conn, actor, action="prompts.experiment.update", resource_type="experiment",
                                     resource_id=experiment_id, before=before, after=after,
                                     detail=f"revision {runtime.revision}")
            await self._publish.both(conn)
        return after, True

    async def delete(self, actor: Actor, experiment_id: str) -> Experiment:
        """A tombstone (its events stay readable); refused while it runs."""
        async with self._store.begin() as conn:
            await lock(conn)
            before = await self._current(conn, experiment_id, for_update=True)
            if before.source == "config":
                raise owned_by_config("Experiment", experiment_id)
            if before.state == "running":
                raise Conflict(f"Experiment {experiment_id!r} is running: stop or pause it first",
                               {"state": before.state})
            now = utcnow()
            await conn.execute(update(experiments).where(experiments.c.id == experiment_id).values(
                deleted_at=now, updated_at=now, updated_by=actor.principal.name))
            await write_event(conn, experiment_id, "deleted", actor.principal.key_id,
                              f"deleted by {actor.principal.name}", {}, now)
            await self._audit.record(conn, actor, action="prompts.experiment.delete", resource_type="experiment",
                                     resource_id=experiment_id, before=before,
                                     detail=f"experiment {experiment_id!r} deleted at revision {before.revision}")
            await self._publish.both(conn)
        return before

    # -- reads -------------------------------------------------------------------------------------

    async def get(self, experiment_id: str) -> Experiment:
        async with self._store.read() as conn:
            return await self._current(conn, experiment_id)

    async def list(self, page: PageParams, *, state: ExperimentState | None = None, route: str | None = None,
                   source: Source | None = None) -> Page[Experiment]:
        query = select(experiments).where(experiments.c.deleted_at.is_(None))
        if route is not None:
            query = query.where(experiments.c.route == route)
        if source is not None:
            query = query.where(experiments.c.source == source)
        async with self._store.read() as conn:
            rows = (await conn.execute(query.order_by(experiments.c.created_at.desc(), experiments.c.id))).all()
        found = [to_experiment(r) for r in rows]
        if state is not None:  # the state lives in the runtime document; experiments are few
            found = [e for e in found if e.state == state]
        return page.wrap(found[page.offset:page.offset + page.page_size], len(found))

    async def events(self, experiment_id: str, page: PageParams) -> Page[ExperimentEvent]:
        """Newest first; a deleted experiment's history stays readable."""
        where = experiment_events.c.experiment_id == experiment_id
        async with self._store.read() as conn:
            if await self._row(conn, experiment_id) is None:
                raise NotFound(f"No experiment {experiment_id!r}")
            total = (await conn.execute(select(func.count()).select_from(experiment_events).where(where))).scalar_one()
            rows = (await conn.execute(select(experiment_events).where(where)
                                       .order_by(experiment_events.c.id.desc())
                                       .limit(page.page_size).offset(page.offset))).all()
        return page.wrap([_to_event(r) for r in rows], total)

    async def running(self) -> builtins.list[tuple[ExperimentDoc, ExperimentRuntime]]:
        async with self._store.read() as conn:
            rows = (await live_experiment_rows(conn)).all()
        found = [(msgspec.convert(r.document, ExperimentDoc), msgspec.convert(r.runtime, ExperimentRuntime))
                 for r in rows]
        return [(doc, runtime) for doc, runtime in found if runtime.state == "running"]

    # -- runtime -----------------------------------------------------------------------------------

    async def act(self, actor: Actor, experiment_id: str, action: Action, reason: str | None = None
                  ) -> tuple[Experiment, bool]:
        """A lifecycle action; returns the experiment and whether it changed (a second rollback does not)."""
        now = time.time()
        message = f"{EVENT_KINDS[action].replace('_', ' ')} by {actor.principal.name}" + (f": {reason}" if reason
                                                                                         else "")
        changed = await self._change(actor, experiment_id, lambda rt: apply_action(rt, action, now),
                                     kind=EVENT_KINDS[action], action=action, message=message,
                                     detail={"reason": reason} if reason else {})
        return (changed if changed is not None else await self.get(experiment_id)), changed is not None

    async def update_runtime(self, experiment_id: str, change: RuntimeChange, *, actor: str | Actor, kind: str,
                             message: str, detail: dict[str, Any]) -> ExperimentRuntime | None:
        """Read the experiment's runtime under the write lock (and ``FOR UPDATE``), apply ``change`` and,
        unless it returns ``None`` (or an equal runtime), write the runtime, an event of ``kind``, an audit
        entry (``prompts.experiment.<kind>``) and the experiments snapshot, all in one transaction.
        ``change`` may raise (an ``AdminError`` reaches the caller; nothing is written). A change that
        makes the experiment run is refused (409) while another runs on its route. ``revision`` is kept."""
        who = actor if isinstance(actor, Actor) else system_actor(actor)
        changed = await self._change(who, experiment_id, change, kind=kind, action=kind, message=message,
                                     detail=detail)
        return None if changed is None else changed.runtime

    async def _change(self, actor: Actor, experiment_id: str, change: RuntimeChange, *, kind: str, action: str,
                      message: str, detail: dict[str, Any]) -> Experiment | None:
        async with self._store.begin() as conn:
            await lock(conn)
            before = await self._current(conn, experiment_id, for_update=True)
            runtime = change(before.runtime)
            if runtime is None:
                return None
            runtime = msgspec.structs.replace(runtime, revision=before.revision)
            if runtime == before.runtime:
                return None
            if runtime.state == "running" and before.state != "running":
                await _check_route_free(conn, before.route, experiment_id)
            now = utcnow()
            await conn.execute(update(experiments).where(experiments.c.id == experiment_id).values(
                runtime=msgspec.to_builtins(runtime), updated_at=now, updated_by=actor.principal.name))
            after = msgspec.structs.replace(before, runtime=runtime, state=runtime.state, updated_at=now,
                                            updated_by=actor.principal.name)
            await write_event(conn, experiment_id, kind, actor.principal.key_id, message,
                              {**detail, "state": runtime.state}, now)
            await self._audit.record(conn, actor, action=f"prompts.experiment.{action}", resource_type="experiment",
                                     resource_id=experiment_id, before=before, after=after, detail=message)
            await self._publish.experiments(conn)
        return after

    @staticmethod
    async def _row(conn: AsyncConnection, experiment_id: str) -> Any:
        return (await conn.execute(select(experiments).where(experiments.c.id == experiment_id))).one_or_none()

    @staticmethod
    async def _current(conn: AsyncConnection, experiment_id: str, *, for_update: bool = False) -> Experiment:
        query = select(experiments).where(experiments.c.id == experiment_id)
        row = (await conn.execute(query.with_for_update() if for_update else query)).one_or_none()
        if row is None or row.deleted_at is not None:
            raise NotFound(f"No experiment {experiment_id!r}")
        return to_experiment(row)
