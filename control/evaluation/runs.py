"""Run writes: create (validated, resolved, recorded), cancel, and the ``EVALUATIONS`` starter for training.

Create checks what the schema cannot (``metric_sets.create_errors``), then, in one transaction, reads the
dataset version through ``DATASET_READER`` (it must be ready, with the mapped columns), resolves every target
and the judge to a gateway route (``targets``), and writes the run (``queued``), its models (for the list
filter), a ``created`` event and the audit entry; the worker is woken after the commit. Every refusal is
one 422 listing each field at fault.

Cancel moves a queued (or waiting) run straight to ``cancelled`` and a running one to ``cancelling``: its
worker stops starting items, lets those in flight finish, and then marks it ``cancelled`` (``worker``).

``start_for_model`` (``EVALUATIONS``, called when a training job registers a model) creates the run of the
nearest gate with ``autoEvaluate`` along the model's lineage (``lineage``) on that model alone. The new model is
usually a draft nothing serves yet: then the run is created ``waiting`` (its target's route null, a
``waiting_for_route`` event naming the model) rather than refused, and the worker queues it once a route the
gateway has serves the model (``waiting``); a waiting run is cancelled at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import msgspec
from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import Actor, Conflict, FieldError, ModuleContext, NotFound, Principal, Role, SemanticError
from adapters.adminapi.seams import DATASET_READER, CatalogDatasetVersion
from adapters.adminapi.services import MissingService
from adapters.store import new_id, utcnow
from control.evaluation.lineage import inherited_auto_evaluation
from control.evaluation.metric_sets import column_errors, create_errors, metrics_for
from control.evaluation.protocol import Run, RunCreate, Target
from control.evaluation.settings import EvaluationSettings, load_settings
from control.evaluation.tables import events, run_models, runs
from control.evaluation.targets import (
    Resolved,
    TargetError,
    Unserved,
    published_routes,
    resolve,
    resolve_served,
)
from control.evaluation.views import RunReader

__all__ = ["RunService"]

ACTIVE = ("queued", "running", "cancelling")


class RunService(RunReader):
    """The module's service (``EVALUATION``); also ``EVALUATIONS`` for training (``start_for_model``)."""

    def __init__(self, ctx: ModuleContext, settings: EvaluationSettings) -> None:
        super().__init__(ctx.store)
        self.ctx = ctx
        self.settings = settings
        self.wake: Callable[[], None] = lambda: None  # the worker's, once it runs
        self._live: tuple[Any, EvaluationSettings] | None = None

    def live_settings(self) -> EvaluationSettings:
        """The settings with the gateway's current ``gateway_url``/``gateway_routes`` (a reload changes them;
        decoded again only when the control plane's settings object changed)."""
        cfg = self.ctx.settings
        if self._live is not None and self._live[0] is cfg:
            return self._live[1]
        try:
            current = load_settings(cfg)
        except SemanticError:
            return self.settings
        live = msgspec.structs.replace(self.settings, gateway_url=current.gateway_url or self.settings.gateway_url,
                                       gateway_routes=current.gateway_routes)
        self._live = (cfg, live)
        return live

    # -- create ---------------------------------------------------------------------------------

    async def create(self, actor: Actor, data: RunCreate, *, trigger: str | None = None,
                     gate: str | None = None, wait: bool = False) -> Run:
        """``trigger``: what started the run; ``gate``: the gate whose ``autoEvaluate`` it is (``model/<id>``),
        both shown in the ``created`` event. ``wait``: a ``model`` target no route serves yet makes the run
        ``waiting`` instead of a 422 (automatic runs only: a person asking for a run wants to hear it now)."""
        errors = create_errors(data)
        if errors:
            raise SemanticError(errors)
        run_id, now, who = new_id("run"), utcnow(), actor.principal.name
        async with self.store.begin() as conn:
            version = await self._dataset(conn, data)
            resolved, judge_route = await self._targets(conn, data, wait=wait)
            unserved = [r.id for r in resolved if r.route is None]
            rows = min(version.row_count, data.limit) if data.limit is not None else version.row_count
            model_ids = list(dict.fromkeys(r.model_id for r in resolved if r.model_id))
            await conn.execute(insert(runs).values(
                id=run_id, name=data.name, type=data.type, status="waiting" if unserved else "queued",
                targets=[r.wire() for r in resolved], model_ids=model_ids, dataset_id=version.dataset_id,
                dataset_version=version.version, dataset_name=version.name, mapping=msgspec.to_builtins(data.mapping),
                metrics=metrics_for(data), params=dict(data.params),
                judge=msgspec.to_builtins(data.judge) if data.judge else None,
                review=msgspec.to_builtins(data.review) if data.review else None, concurrency=data.concurrency,
                row_limit=data.limit, done=0, failed=0, total=rows * len(resolved), judge_status=None,
                trigger=trigger, created_at=now, created_by=who, updated_at=now))
            if model_ids:
                await conn.execute(insert(run_models), [{"run_id": run_id, "model_id": m} for m in model_ids])
            await conn.execute(insert(events).values(
                run_id=run_id, at=now, event="created", actor=who,
                detail={"targets": [r.wire() for r in resolved], "rows": rows, "judgeRoute": judge_route,
                        **({"trigger": trigger} if trigger else {}), **({"gate": gate} if gate else {})}))
            if unserved:
                await conn.execute(insert(events).values(
                    run_id=run_id, at=now, event="waiting_for_route", actor=who,
                    detail={"modelId": unserved[0], "reason": f"model {unserved[0]!r} is served by no route yet: "
                                                              "the run starts once it is (deploy it with serving)"}))
            run = await self.view(conn, run_id)
            await self.ctx.audit.record(conn, actor, action="evaluation.run.create", resource_type="evaluation_run",
                                        resource_id=run_id, after=run,
                                        detail=f"run {data.name!r} ({data.type}) on dataset {version.dataset_id} "
                                               f"v{version.version}")
        self.wake()
        return run

    async def _dataset(self, conn: AsyncConnection, data: RunCreate) -> CatalogDatasetVersion:
        sel = data.dataset
        field = "dataset.version" if sel.version is not None else "dataset.datasetId"
        try:
            reader = self.ctx.services[DATASET_READER]
        except MissingService:
            raise SemanticError([FieldError(field="dataset.datasetId",
                                            message="datasets need the catalog module, which is not enabled")]
                                ) from None
        try:
            version = await reader.version(conn, sel.dataset_id, sel.version)
        except NotFound as err:
            raise SemanticError([FieldError(field=field, message=err.message)]) from None
        except Conflict as err:
            raise SemanticError([FieldError(field=field, message=f"not ready: {err.message}")]) from None
        errors = column_errors(data, version.columns)
        if errors:
            raise SemanticError(errors)
        return version

    async def _targets(self, conn: AsyncConnection, data: RunCreate, *, wait: bool = False
                       ) -> tuple[list[Resolved | Unserved], str | None]:
        """Every target and the judge resolved to a route; with ``wait``, a ``model`` target not served yet comes
        back with route ``None`` (the judge never waits)."""
        settings = self.live_settings()
        published = await published_routes(conn)
        found: list[Resolved | Unserved] = []
        errors: list[FieldError] = []
        wanted: list[tuple[Target, str]] = [(t, f"targets[{i}].id") for i, t in enumerate(data.targets)]
        if data.judge is not None:
            wanted.append((data.judge.model, "judge.model.id"))
        for i, (target, field) in enumerate(wanted):
            try:
                if wait and target.kind == "model" and i < len(data.targets):
                    found.append(await resolve_served(self.ctx, conn, target, field, settings.gateway_routes,
                                                      published) or Unserved(target.id))
                else:
                    found.append(await resolve(self.ctx, conn, target, field, settings.gateway_routes, published))
            except TargetError as err:
                errors.append(err.error)
            except MissingService:
                errors.append(FieldError(field=field, message="models need the catalog module, which is not "
                                                              "enabled"))
        if errors:
            raise SemanticError(errors)
        judge = found.pop().route if data.judge is not None else None
        return found, judge

    # -- cancel ---------------------------------------------------------------------------------

    async def cancel(self, actor: Actor, run_id: str) -> tuple[Run, str]:
        async with self.store.begin() as conn:
            row = await self.row(conn, run_id, lock=True)
            if row.status in ("cancelled", "cancelling"):
                return await self.view(conn, run_id), "No changes: the run is already cancelled or cancelling"
            if row.status not in (*ACTIVE, "waiting"):
                raise Conflict(f"Run {run_id!r} has already finished ({row.status})")
            before = await self.view(conn, run_id)
            now = utcnow()
            status = "cancelled" if row.status in ("queued", "waiting") else "cancelling"
            values: dict[str, Any] = {"status": status, "updated_at": now}
            if status == "cancelled":
                values.update(finished_at=now, lease_owner=None, lease_until=None)
            await conn.execute(update(runs).where(runs.c.id == run_id).values(**values))
            await conn.execute(insert(events).values(run_id=run_id, at=now, event=status, actor=actor.principal.name,
                                                     detail={}))
            after = await self.view(conn, run_id)
            await self.ctx.audit.record(conn, actor, action="evaluation.run.cancel", resource_type="evaluation_run",
                                        resource_id=run_id, before=before, after=after)
        self.wake()
        return after, ("Run cancelled" if status == "cancelled"
                       else "Cancelling: items in flight finish, no new ones start")

    # -- EVALUATIONS ----------------------------------------------------------------------------

    async def start_for_model(self, *, model_id: str, trigger: str, actor: str) -> str | None:
        """The ``autoEvaluate`` run of the nearest gate along the model's lineage (its own, else its parent's, …;
        ``lineage``), its targets replaced by the model, the gate recorded in the ``created`` event (``gate``);
        ``None`` when no gate has one. A model no route serves yet gets its run all the same, ``waiting`` for one.
        Raises only admin errors: ``NotFound`` for an unknown model, a 422 whose message names the gate and what is
        wrong when the run cannot be created (e.g. the gate's dataset is gone)."""
        async with self.store.read() as conn:
            found = await inherited_auto_evaluation(self.ctx, conn, model_id)
        if found is None:
            return None
        gate_model, auto = found
        data = msgspec.structs.replace(auto, targets=[Target(kind="model", id=model_id)])
        who = Actor(principal=Principal(key_id=actor, name=actor, role=Role.developer),
                    request_id=f"evaluation-{uuid.uuid4().hex}")
        try:
            return (await self.create(who, data, trigger=trigger, gate=f"model/{gate_model}", wait=True)).id
        except SemanticError as err:
            raise SemanticError(err.errors, _not_started(err, model_id, gate_model)) from None


def _not_started(err: SemanticError, model_id: str, gate_model: str) -> str:
    """The refusal in words the training timeline can show an operator: which gate, and what is wrong."""
    gate = "its own gate" if gate_model == model_id else f"the gate of model {gate_model!r}"
    return f"the evaluation configured on {gate} cannot start on model {model_id!r}: {err.message}"
