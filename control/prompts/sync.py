"""GitOps: the gateway YAML's ``prompts:`` section applied to the store, whole or not at all.

``sync(declared)`` runs at start-up and on every reload, in every worker and replica, as ONE transaction
under the module's write lock, so N processes syncing the same file write it once (each compares with
what the previous one committed):

* a declared template is written as a new version only when its document differs from the latest
  version (or the name is new, or was deleted); an experiment gets a new revision only when its
  declaration differs, and only then is its YAML ``state`` applied (so a reload never undoes a rollback,
  a pause or a guardrail's stop made since). Both become ``source: config``, read-only through the API;
  the YAML takes over an API-made object of the same name the same way.
* an experiment the YAML no longer declares (and did before: ``source: config``) is deleted (a tombstone;
  its events stay), whatever its state: the file is the truth, and an experiment is named by nothing
  else. A template the YAML no longer declares is *released* instead: it stays, as ``source: api``
  (editable and deletable through the API), because YAML routes, served endpoints and experiments the
  control plane cannot all see may still name it.
* everything is checked before anything is kept: semantic rules, Jinja compilation, variant templates
  that exist (declared in the same file or stored), one running experiment per route. One refusal
  refuses the whole section (``SemanticError`` naming each ``prompts.…`` path); the reload that brought
  it is then rejected, and nothing changes.
* each snapshot whose content changed is published once, in the same transaction: a template and the
  experiment using it arrive at every gateway together.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import AuditWriter, FieldError, SemanticError
from adapters.store import Store, utcnow
from control.prompts.checks import experiment_errors, live_templates, template_errors, template_ref_errors
from control.prompts.experiments import system_actor, to_experiment, write_event, write_experiment
from control.prompts.lifecycle import declare_state, fresh_runtime, redeclared
from control.prompts.publishing import Publisher, live_experiment_rows, lock
from control.prompts.tables import experiments, template_versions, templates
from control.prompts.templates import write_version
from policies.prompts.documents import ExperimentDoc, ExperimentRuntime, PromptsCfg, TemplateDoc

__all__ = ["ConfigSync", "SyncReport"]

log = logging.getLogger("llmops.prompts")

CONFIG: Final = "config"
_STATE_EVENTS = {"running": "started", "paused": "paused", "stopped": "stopped", "draft": "drafted"}


@dataclass
class SyncReport:
    """What one sync changed, by name (empty everywhere: the store already matched the file)."""

    templates: list[str] = field(default_factory=list)  # new versions written
    released: list[str] = field(default_factory=list)  # no longer declared: handed to the API
    experiments: list[str] = field(default_factory=list)  # created or redeclared
    deleted: list[str] = field(default_factory=list)  # no longer declared: tombstoned
    adopted: list[str] = field(default_factory=list)  # API-made objects the YAML now owns
    published: list[str] = field(default_factory=list)  # snapshot kinds published

    @property
    def changed(self) -> bool:
        return bool(self.templates or self.released or self.experiments or self.deleted or self.adopted
                    or self.published)


def _duplicates(names: list[str], what: str, prefix: str) -> list[FieldError]:
    return [FieldError(field=f"{prefix}[{i}]", message=f"{what} {name!r} is declared twice")
            for i, name in enumerate(names) if name in names[:i]]


class ConfigSync:
    def __init__(self, store: Store, audit: AuditWriter, publisher: Publisher) -> None:
        self._store = store
        self._audit = audit
        self._publish = publisher

    async def sync(self, declared: PromptsCfg) -> SyncReport:
        """Apply ``declared``; raises ``SemanticError`` (nothing written) when any part is refused."""
        errors = _duplicates([t.name for t in declared.templates], "template", "prompts.templates")
        errors += _duplicates([e.id for e in declared.experiments], "experiment", "prompts.experiments")
        for i, exp in enumerate(declared.experiments):
            errors += experiment_errors(exp, f"prompts.experiments[{i}]")
        report = SyncReport()
        async with self._store.begin() as conn:
            await lock(conn)
            errors += await self._templates(conn, declared.templates, report)
            live = await live_templates(conn)
            for i, exp in enumerate(declared.experiments):
                errors += template_ref_errors(exp, live, f"prompts.experiments[{i}]")
            if not errors:
                await self._experiments(conn, declared.experiments, report)
                errors += await _route_conflicts(conn, declared.experiments)
            if errors:
                lines = "; ".join(f"{e.field}: {e.message}" for e in errors[:10])
                more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
                raise SemanticError(errors, f"prompts: refused, nothing changed: {lines}{more}")
            report.published = await self._publish.if_changed(conn)
        if report.changed:
            log.info("prompts config synced: %s", msgspec.to_builtins(report.__dict__))
        return report

    async def _templates(self, conn: AsyncConnection, docs: list[TemplateDoc], report: SyncReport
                         ) -> list[FieldError]:
        rows = {r.name: r for r in (await conn.execute(select(templates))).all()}
        latest = {r.name: msgspec.convert(r.document, TemplateDoc) for r in (await conn.execute(
            select(template_versions.c.name, template_versions.c.document).join(templates, (
                templates.c.name == template_versions.c.name) & (
                templates.c.latest_version == template_versions.c.version)))).all()}
        errors: list[FieldError] = []
        now = utcnow()
        seen: set[str] = set()
        for i, doc in enumerate(docs):
            if doc.name in seen:  # refused already (declared twice)
                continue
            seen.add(doc.name)
            row = rows.get(doc.name)
            if row is not None and row.deleted_at is None and latest.get(doc.name) == doc:
                if row.source != CONFIG:
                    await conn.execute(update(templates).where(templates.c.name == doc.name).values(
                        source=CONFIG, updated_at=now, updated_by=CONFIG))
                    await self._audit_template(conn, "adopt", doc.name, f"template {doc.name!r} is now owned by "
                                                                        f"the gateway config")
                    report.adopted.append(doc.name)
                continue
            version = 1 if row is None else row.latest_version + 1
            problems = template_errors(doc, version, f"prompts.templates[{i}]")
            if problems:
                errors += problems
                continue
            await write_version(conn, doc, row=row, source=CONFIG, who=CONFIG, at=now)
            verb = "create" if row is None or row.deleted_at is not None else "update"
            await self._audit_template(conn, verb, doc.name, f"template {doc.name!r} version {version} from the "
                                                             f"gateway config")
            report.templates.append(doc.name)
        declared = {d.name for d in docs}
        for name, row in rows.items():
            if row.source == CONFIG and row.deleted_at is None and name not in declared:
                await conn.execute(update(templates).where(templates.c.name == name).values(
                    source="api", updated_at=now, updated_by=CONFIG))
                await self._audit_template(conn, "release", name, f"template {name!r} is no longer in the gateway "
                                                                  f"config: kept, now editable through the API")
                report.released.append(name)
        return errors

    async def _experiments(self, conn: AsyncConnection, docs: list[ExperimentDoc], report: SyncReport) -> None:
        rows = {r.id: r for r in (await conn.execute(select(experiments))).all()}
        now, clock = utcnow(), time.time()
        for doc in docs:
            row = rows.get(doc.id)
            if row is None or row.deleted_at is not None:
                runtime = fresh_runtime(doc.state, 1 if row is None else row.revision + 1, clock)
                await self._write(conn, doc, runtime, row, "created", None, now)
                report.experiments.append(doc.id)
                continue
            before = to_experiment(row)
            if before.document != doc:
                runtime = declare_state(redeclared(before.runtime, doc, before.revision + 1), doc.state, clock)
                await self._write(conn, doc, runtime, row, "updated", before, now)
                report.experiments.append(doc.id)
            elif row.source != CONFIG:
                await conn.execute(update(experiments).where(experiments.c.id == doc.id).values(
                    source=CONFIG, updated_at=now, updated_by=CONFIG))
                await write_event(conn, doc.id, "adopted", CONFIG, "now owned by the gateway config", {}, now)
                await self._audit_experiment(conn, "adopt", doc.id, before, None, "now owned by the gateway config")
                report.adopted.append(doc.id)
        declared = {d.id for d in docs}
        for exp_id, row in rows.items():
            if row.source == CONFIG and row.deleted_at is None and exp_id not in declared:
                await conn.execute(update(experiments).where(experiments.c.id == exp_id).values(
                    deleted_at=now, updated_at=now, updated_by=CONFIG))
                await write_event(conn, exp_id, "deleted", CONFIG, "no longer in the gateway config", {}, now)
                await self._audit_experiment(conn, "delete", exp_id, to_experiment(row), None,
                                             "no longer in the gateway config")
                report.deleted.append(exp_id)

    async def _write(self, conn: AsyncConnection, doc: ExperimentDoc, runtime: ExperimentRuntime, row: Any,
                     kind: str, before: Any, now: Any) -> None:
        await write_experiment(conn, doc, runtime, row=row, source=CONFIG, who=CONFIG, at=now)
        await write_event(conn, doc.id, kind, CONFIG, f"revision {runtime.revision} from the gateway config",
                          {"revision": runtime.revision}, now)
        old_state = before.state if before is not None else "draft"
        if runtime.state != old_state:
            await write_event(conn, doc.id, _STATE_EVENTS[runtime.state], CONFIG,
                              f"state {runtime.state} from the gateway config", {"state": runtime.state}, now)
        after = to_experiment((await conn.execute(select(experiments).where(experiments.c.id == doc.id))).one())
        await self._audit_experiment(conn, "create" if kind == "created" else "update", doc.id, before, after,
                                     f"revision {runtime.revision} ({runtime.state}) from the gateway config")

    async def _audit_template(self, conn: AsyncConnection, verb: str, name: str, detail: str) -> None:
        await self._audit.record(conn, system_actor(CONFIG), action=f"prompts.template.{verb}",
                                 resource_type="prompt_template", resource_id=name, detail=detail)

    async def _audit_experiment(self, conn: AsyncConnection, verb: str, exp_id: str, before: Any, after: Any,
                                detail: str) -> None:
        await self._audit.record(conn, system_actor(CONFIG), action=f"prompts.experiment.{verb}",
                                 resource_type="experiment", resource_id=exp_id, before=before, after=after,
                                 detail=detail)


async def _route_conflicts(conn: AsyncConnection, docs: list[ExperimentDoc]) -> list[FieldError]:
    """After the sync's writes: each route runs at most one experiment (paths name the YAML's entries)."""
    running: dict[str, list[str]] = {}
    for row in (await live_experiment_rows(conn)).all():
        if row.runtime.get("state") == "running":
            running.setdefault(row.route, []).append(row.id)
    index = {d.id: i for i, d in enumerate(docs)}
    errors = []
    for route, ids in running.items():
        if len(ids) > 1:
            for exp_id in ids:
                if exp_id in index:
                    others = ", ".join(repr(o) for o in ids if o != exp_id)
                    errors.append(FieldError(field=f"prompts.experiments[{index[exp_id]}].state",
                                             message=f"route {route!r} would run {others} too: one running "
                                                     f"experiment per route"))
    return errors
