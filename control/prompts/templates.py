"""Template CRUD with immutable versions; each change is audited and republishes the ``templates`` snapshot.

Every mutation is one transaction: the module's write lock (``publishing.lock``), the template row, the
new version, the audit entry and the snapshot. A document equal to the latest version writes nothing
("No changes"). Deleting keeps the versions (history stays readable, and a re-created name continues
its numbering). A template the gateway YAML declares (``source: config``) is read-only here (409).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import Select, and_, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import (
    Actor,
    Conflict,
    FieldError,
    ModuleContext,
    NotFound,
    Page,
    PageParams,
    SemanticError,
)
from adapters.store import utcnow
from control.prompts.checks import template_errors
from control.prompts.protocol import Source, Template, TemplateCreate, TemplateUpdate, TemplateVersion
from control.prompts.publishing import Publisher, live_experiment_rows, lock
from control.prompts.tables import template_versions, templates
from policies.prompts.documents import TemplateDoc, parse_template_ref

__all__ = ["TemplateService", "experiments_naming", "owned_by_config", "write_version"]

_LATEST = and_(templates.c.name == template_versions.c.name, templates.c.latest_version == template_versions.c.version)


def _to_template(row: Any) -> Template:
    return Template(name=row.name, version=row.latest_version, source=row.source,
                    document=msgspec.convert(row.document, TemplateDoc), created_at=row.created_at,
                    created_by=row.created_by, updated_at=row.updated_at, updated_by=row.updated_by)


def _to_version(row: Any) -> TemplateVersion:
    return TemplateVersion(name=row.name, version=row.version, source=row.source,
                           document=msgspec.convert(row.document, TemplateDoc), created_at=row.created_at,
                           created_by=row.created_by)


def _joined() -> Select[Any]:
    return select(templates, template_versions.c.document).join(template_versions, _LATEST)


def owned_by_config(kind: str, name: str) -> Conflict:
    return Conflict(f"{kind} {name!r} is owned by the gateway config (source: config): change it in the YAML's "
                    f"prompts: section and reload", {"source": "config"})


async def write_version(conn: AsyncConnection, doc: TemplateDoc, *, row: Any, source: Source, who: str,
                        at: datetime) -> int:
    """Store ``doc`` as the next version of its template (``row``: the current row, or None for a new name);
    undeletes a deleted one and makes ``source`` its owner. Returns the version written."""
    version = 1 if row is None else row.latest_version + 1
    if row is None:
        await conn.execute(insert(templates).values(
            name=doc.name, latest_version=version, source=source, created_at=at, created_by=who,
            updated_at=at, updated_by=who))
    else:
        await conn.execute(update(templates).where(templates.c.name == doc.name).values(
            latest_version=version, source=source, updated_at=at, updated_by=who, deleted_at=None))
    await conn.execute(insert(template_versions).values(
        name=doc.name, version=version, document=msgspec.to_builtins(doc), source=source, created_at=at,
        created_by=who))
    return version


class TemplateService:
    def __init__(self, ctx: ModuleContext, publisher: Publisher) -> None:
        self._store = ctx.store
        self._audit = ctx.audit
        self._publish = publisher

    async def create(self, actor: Actor, data: TemplateCreate) -> Template:
        """Version 1, or the next version of a deleted name (its history continues)."""
        doc = data.document
        async with self._store.begin() as conn:
            await lock(conn)
            row = await self._row(conn, doc.name)
            if row is not None and row.deleted_at is None:
                raise Conflict(f"A template named {doc.name!r} already exists: PUT a new version", {"name": doc.name})
            version = 1 if row is None else row.latest_version + 1
            _check(doc, version)
            await write_version(conn, doc, row=row, source="api", who=actor.principal.name, at=utcnow())
            created = await self._current(conn, doc.name)
            await self._audit.record(conn, actor, action="prompts.template.create", resource_type="prompt_template",
                                     resource_id=doc.name, after=created, detail=f"template {doc.name!r} version "
                                                                                 f"{version}")
            await self._publish.templates(conn)
        return created

    async def get(self, name: str) -> Template:
        async with self._store.read() as conn:
            return await self._current(conn, name)

    async def list(self, page: PageParams, *, name: str | None = None, source: Source | None = None) -> Page[Template]:
        query = _joined().where(templates.c.deleted_at.is_(None))
        if name:
            escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(templates.c.name.ilike(f"%{escaped}%", escape="\\"))
        if source:
            query = query.where(templates.c.source == source)
        async with self._store.read() as conn:
            total = (await conn.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
            rows = (await conn.execute(query.order_by(templates.c.name).limit(page.page_size)
                                       .offset(page.offset))).all()
        return page.wrap([_to_template(r) for r in rows], total)

    async def update(self, actor: Actor, name: str, data: TemplateUpdate) -> tuple[Template, bool]:
        """Returns the template and whether a version was written (an unchanged document writes none)."""
        doc = data.document
        if doc.name != name:
            raise SemanticError([_name_error(name)])
        async with self._store.begin() as conn:
            await lock(conn)
            before = await self._current(conn, name, for_update=True)
            if before.source == "config":
                raise owned_by_config("Template", name)
            if data.expected_version is not None and data.expected_version != before.version:
                raise Conflict(f"Template {name!r} is at version {before.version}, not {data.expected_version}: "
                               f"reload and retry", {"version": before.version})
            if doc == before.document:
                return before, False
            _check(doc, before.version + 1)
            row = await self._row(conn, name)
            version = await write_version(conn, doc, row=row, source="api", who=actor.principal.name, at=utcnow())
            after = await self._current(conn, name)
            await self._audit.record(conn, actor, action="prompts.template.update", resource_type="prompt_template",
                                     resource_id=name, before=before, after=after, detail=f"version {version}")
            await self._publish.templates(conn)
        return after, True

    async def delete(self, actor: Actor, name: str) -> Template:
        """A tombstone: versions stay readable; refused while a live experiment names the template."""
        async with self._store.begin() as conn:
            await lock(conn)
            before = await self._current(conn, name, for_update=True)
            if before.source == "config":
                raise owned_by_config("Template", name)
            users = await experiments_naming(conn, name)
            if users:
                raise Conflict(f"Template {name!r} is used by experiment(s) {', '.join(users)}: change or delete "
                               f"them first", {"experiments": users})
            await conn.execute(update(templates).where(templates.c.name == name).values(
                deleted_at=utcnow(), updated_at=utcnow(), updated_by=actor.principal.name))
            await self._audit.record(conn, actor, action="prompts.template.delete", resource_type="prompt_template",
                                     resource_id=name, before=before,
                                     detail=f"template {name!r} deleted at version {before.version}")
            await self._publish.templates(conn)
        return before

    async def versions(self, name: str, page: PageParams) -> Page[TemplateVersion]:
        """Newest first; a deleted template's history stays readable."""
        where = template_versions.c.name == name
        async with self._store.read() as conn:
            total = (await conn.execute(select(func.count()).select_from(template_versions).where(where))).scalar_one()
            rows = (await conn.execute(select(template_versions).where(where)
                                       .order_by(template_versions.c.version.desc())
                                       .limit(page.page_size).offset(page.offset))).all()
        if total == 0:
            raise NotFound(f"No template {name!r}")
        return page.wrap([_to_version(r) for r in rows], total)

    async def version(self, name: str, version: int) -> TemplateVersion:
        async with self._store.read() as conn:
            row = (await conn.execute(select(template_versions).where(
                template_versions.c.name == name, template_versions.c.version == version))).one_or_none()
        if row is None:
            raise NotFound(f"No version {version} of template {name!r}")
        return _to_version(row)

    @staticmethod
    async def _row(conn: AsyncConnection, name: str) -> Any:
        return (await conn.execute(select(templates).where(templates.c.name == name))).one_or_none()

    @staticmethod
    async def _current(conn: AsyncConnection, name: str, *, for_update: bool = False) -> Template:
        query = _joined().where(templates.c.name == name)
        row = (await conn.execute(query.with_for_update(of=templates) if for_update else query)).one_or_none()
        if row is None or row.deleted_at is not None:
            raise NotFound(f"No template {name!r}")
        return _to_template(row)


def _check(doc: TemplateDoc, version: int) -> None:
    errors = template_errors(doc, version)
    if errors:
        raise SemanticError(errors)


def _name_error(name: str) -> FieldError:
    return FieldError(field="document.name", message=f"must be {name!r}, the template this path names "
                                                     f"(templates are not renamed: create another)")


async def experiments_naming(conn: AsyncConnection, name: str) -> list[str]:
    """Ids of the live experiments whose variants name template ``name`` (any version)."""
    rows = (await live_experiment_rows(conn)).all()
    return [r.id for r in rows
            if any(v.get("template") and parse_template_ref(v["template"])[0] == name
                   for v in r.document.get("variants", ()))]
