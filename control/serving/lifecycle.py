"""Redeploy, canary traffic, rollback and promotion of an endpoint.

* **redeploy**: a new revision from the model's current version; unset fields keep the current revision's.
  Without ``canaryPercent`` it replaces the stable slot's revision (the old one is ``superseded``; the slot
  keeps serving it until the new one is ready, or ``Recreate`` when no GPU is spare); with it, the new revision
  runs in the canary slot and takes that share once ready. Refused (409) while a canary runs.
* **traffic**: the canary's share. 100 promotes it: its revision becomes current and is applied to the
  stable slot; the route sends everything to the canary slot until the stable slot runs that revision, then
  the reconciler deletes the canary slot. 0 drops the canary (``rolled_back``).
* **rollback**: with a canary, drops it. Otherwise the stable slot is given an older revision's stored spec
  again (``revision``, or the newest ``superseded`` one): revisions are immutable, ``current_revision`` moves,
  the revision rolled back from becomes ``rolled_back``. The model's status is not checked: a rollback must
  work in an emergency.
* **promote**: DEV → STG → PROD, one step, approved models only, PROD by an admin. When a promotion gate is
  installed (``PROMOTION_GATE``) it judges first; a failed verdict refuses (409, its reason) unless an admin
  overrides it with a reason. The verdict is audited either way. No pod changes: the next revision carries
  the new environment.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from sqlalchemy import insert, select, update

from adapters.adminapi import Actor, Conflict, FieldError, Forbidden, Role, SemanticError, ServiceUnavailable
from adapters.adminapi.seams import PROMOTION_GATE, GateVerdict, PromotionRequest
from adapters.serving import DeploymentSpec, Slot
from adapters.store import utcnow
from control.serving.core import Core
from control.serving.health import routable
from control.serving.protocol import AutoscalingPolicy, Endpoint, Promote, Redeploy, Rollback, TrafficChange
from control.serving.publishing import lock
from control.serving.records import external_errors, external_slot, revision_values
from control.serving.specs import Choices, arg_errors, build_spec, external_provider, render, replica_errors
from control.serving.tables import endpoints, revisions
from control.serving.views import slot_states

__all__ = ["NEXT_ENVIRONMENT", "drop_canary_now", "promote", "redeploy", "rollback", "traffic"]

log = logging.getLogger("llmops.serving")
NEXT_ENVIRONMENT = {"DEV": "STG", "STG": "PROD"}


def _mirror(rev: Any) -> dict[str, Any]:
    """The endpoint's deployment columns as revision ``rev`` has them."""
    return {"image": rev.image, "use_gpu": rev.use_gpu, "gpu_count": rev.gpu_count,
            "min_replicas": rev.min_replicas, "max_replicas": rev.max_replicas, "autoscaling": rev.autoscaling,
            "vllm_args": rev.vllm_args}


def _choices(core: Core, row: Any, current: Any, data: Redeploy) -> Choices:
    if row.runtime == "external":
        errors = external_errors(data)
        if errors:
            raise SemanticError(errors)
        return Choices(image=None, use_gpu=False, gpu_count=0, min_replicas=1, max_replicas=1,
                       autoscaling=msgspec.convert(current.autoscaling, AutoscalingPolicy), vllm_args=[])
    use_gpu = current.use_gpu if data.use_gpu is None else data.use_gpu
    image = data.serving_runtime_image
    if image is None:  # a default image follows useGpu; a chosen one stays
        image = current.image if current.image != core.settings.image(current.use_gpu) else core.settings.image(use_gpu)
    low = current.min_replicas if data.min_replicas is None else data.min_replicas
    high = current.max_replicas if data.max_replicas is None else data.max_replicas
    args = list(current.vllm_args) if data.vllm_args is None else list(data.vllm_args)
    errors = replica_errors(core.settings, row.runtime, low, high) + arg_errors(args)
    if errors:
        raise SemanticError(errors)
    gpus = (data.gpu_count or current.gpu_count or core.settings.gpu_count) if use_gpu else 0
    return Choices(image=image, use_gpu=use_gpu, gpu_count=gpus, min_replicas=low, max_replicas=high,
                   autoscaling=msgspec.convert(current.autoscaling, AutoscalingPolicy), vllm_args=args)


async def redeploy(core: Core, actor: Actor, endpoint_id: str, data: Redeploy) -> tuple[Endpoint, str]:
    slot: Slot = "canary" if data.canary_percent else "stable"
    async with core.store.begin() as conn:
        await lock(conn)
        row = await core.endpoint_row(conn, endpoint_id, lock_row=True)
        core.not_deleting(row)
        if row.canary_revision is not None:
            raise Conflict(f"Endpoint {endpoint_id!r} runs a canary (revision {row.canary_revision}); set its traffic "
                           "to 100 (promote) or 0 (drop) first", {"canaryRevision": row.canary_revision})
        before = await core.view(conn, endpoint_id)
        model = await core.deployable_model(conn, row.model_id, row.environment)
        current = await core.revision_row(conn, endpoint_id, row.current_revision)
        choices = _choices(core, row, current, data)
        number = await core.next_revision(conn, endpoint_id)
        spec: DeploymentSpec | dict[str, Any]
        if row.runtime == "external":
            provider = external_provider(model)
            spec, manifests = {"provider": provider, "served_model_name": provider["model"]}, []
        else:
            spec = build_spec(core.settings, endpoint_id=endpoint_id, endpoint_name=row.name, route=row.route,
                              revision=number, environment=row.environment, model=model, choices=choices)
            manifests = render(core.runtime, spec, slot)
        rev = revision_values(endpoint_id, number, "canary" if data.canary_percent else "active", model, choices,
                              spec, manifests, actor, data.reason or "redeploy")
        await conn.execute(insert(revisions).values(rev))
        now, values = utcnow(), {"updated_at": utcnow(), "updated_by": actor.principal.name}
        slots = dict(row.slots or {})
        if data.canary_percent:
            values.update(canary_revision=number, canary_percent=data.canary_percent, canary_started_at=now)
        else:
            await core.set_revision_state(conn, endpoint_id, row.current_revision, "superseded")
            values.update(current_revision=number, model={**row.model, "version": model.version,
                                                          "status": model.status},
                          **{k: rev[k] for k in ("image", "use_gpu", "gpu_count", "min_replicas", "max_replicas",
                                                 "autoscaling", "vllm_args")})
        if isinstance(spec, dict):
            slots[slot] = msgspec.to_builtins(external_slot(number, spec))
            values["slots"] = slots
        await conn.execute(update(endpoints).where(endpoints.c.id == endpoint_id).values(values))
        after = await core.view(conn, endpoint_id)
        await core.ctx.audit.record(conn, actor, action="serving.endpoint.redeploy", resource_type="endpoint",
                                    resource_id=endpoint_id, before=before, after=after,
                                    detail=f"revision {number} ({slot}" + (f", {data.canary_percent}%" if
                                                                           data.canary_percent else "")
                                           + f"): {data.reason or 'redeploy'}")
        await core.finish(conn)
    if isinstance(spec, DeploymentSpec):
        refused = await core.apply(spec, slot, actor)
        after = await core.get_view(endpoint_id)
        if refused:
            return after, f"Revision {number} was not taken by the runtime: {refused}"
    return after, f"Revision {number} on the {slot} slot"


async def traffic(core: Core, actor: Actor, endpoint_id: str, data: TrafficChange) -> tuple[Endpoint, str]:
    share = data.canary_percent
    promoted: DeploymentSpec | None = None
    dropped = False
    async with core.store.begin() as conn:
        await lock(conn)
        row = await core.endpoint_row(conn, endpoint_id, lock_row=True)
        core.not_deleting(row)
        if row.canary_revision is None or row.canary_revision == row.current_revision:
            raise Conflict(f"Endpoint {endpoint_id!r} has no canary to shift traffic to"
                           + (" (its promotion is finishing)" if row.canary_revision is not None else ""))
        before = await core.view(conn, endpoint_id)
        canary = int(row.canary_revision)
        if share == 0:
            await core.drop_canary(conn, row, actor)
            dropped = True
            message = f"Canary revision {canary} dropped"
        elif share == 100:
            if not routable(slot_states(row).get("canary")):
                raise Conflict(f"Canary revision {canary} is not serving yet; wait for it, or drop it",
                               {"canaryRevision": canary})
            promoted = await _promote_canary(core, conn, row, actor)
            message = f"Canary revision {canary} promoted to stable"
        else:
            await conn.execute(update(endpoints).where(endpoints.c.id == endpoint_id).values(
                canary_percent=share, updated_at=utcnow(), updated_by=actor.principal.name))
            message = f"Canary revision {canary} takes {share}% of the traffic"
        after = await core.view(conn, endpoint_id)
        await core.ctx.audit.record(conn, actor, action="serving.endpoint.traffic", resource_type="endpoint",
                                    resource_id=endpoint_id, before=before, after=after,
                                    detail=f"canary revision {canary}: {share}%" + (f": {data.reason}"
                                                                                     if data.reason else ""))
        await core.finish(conn)
    if dropped:
        await core.delete_slot(endpoint_id, row.name, "canary")
    if promoted is not None:
        await core.apply(promoted, "stable", actor)
    return await core.get_view(endpoint_id), message


async def _promote_canary(core: Core, conn: Any, row: Any, actor: Actor) -> DeploymentSpec | None:
    """The canary's revision becomes current; returns the spec the stable slot must now run (None: external)."""
    canary = int(row.canary_revision)
    rev = await core.revision_row(conn, row.id, canary)
    await core.set_revision_state(conn, row.id, row.current_revision, "superseded")
    await core.set_revision_state(conn, row.id, canary, "active")
    values: dict[str, Any] = {"current_revision": canary, "canary_percent": 100, **_mirror(rev),
                              "model": {**row.model, "version": rev.model_version},
                              "updated_at": utcnow(), "updated_by": actor.principal.name}
    if row.runtime == "external":  # nothing to roll: the canary's provider is the stable one now
        slots = dict(row.slots or {})
        slots["stable"] = msgspec.to_builtins(external_slot(canary, rev.spec))
        slots.pop("canary", None)
        values.update(canary_revision=None, canary_percent=0, canary_started_at=None, slots=slots)
    await conn.execute(update(endpoints).where(endpoints.c.id == row.id).values(values))
    if row.runtime == "external":
        return None
    return await core.stored_spec(conn, row.id, canary, row.environment)


async def drop_canary_now(core: Core, actor: Actor, endpoint_id: str, revision: int, *, action: str,
                          detail: str, after_extra: dict[str, Any] | None = None) -> bool:
    """Drop the canary ``revision`` if it is still the endpoint's canary (the judge's compare-and-set);
    returns whether it did."""
    async with core.store.begin() as conn:
        await lock(conn)
        row = (await conn.execute(select(endpoints).where(endpoints.c.id == endpoint_id)
                                  .with_for_update())).one_or_none()
        if (row is None or row.status == "deleting" or row.canary_revision != revision
                or row.canary_revision == row.current_revision):
            return False
        before = await core.view(conn, endpoint_id)
        await core.drop_canary(conn, row, actor)
        after = await core.view(conn, endpoint_id)
        await core.ctx.audit.record(conn, actor, action=action, resource_type="endpoint", resource_id=endpoint_id,
                                    before=before, detail=detail,
                                    after={"endpoint": msgspec.to_builtins(after), **(after_extra or {})})
        await core.finish(conn)
    await core.delete_slot(endpoint_id, row.name, "canary")
    return True


async def rollback(core: Core, actor: Actor, endpoint_id: str, data: Rollback) -> tuple[Endpoint, str]:
    target_spec: DeploymentSpec | None = None
    drop_slot = False
    async with core.store.begin() as conn:
        await lock(conn)
        row = await core.endpoint_row(conn, endpoint_id, lock_row=True)
        core.not_deleting(row)
        before = await core.view(conn, endpoint_id)
        canary_running = row.canary_revision is not None and row.canary_revision != row.current_revision
        if canary_running and data.revision in (None, row.current_revision):
            dropped = await core.drop_canary(conn, row, actor)
            drop_slot, message = True, f"Canary revision {dropped} dropped; revision {row.current_revision} serves"
        else:
            if canary_running:
                raise Conflict(f"Endpoint {endpoint_id!r} runs a canary (revision {row.canary_revision}); roll back "
                               "without a revision to drop it first", {"canaryRevision": row.canary_revision})
            target = data.revision or await _previous(conn, endpoint_id, row.current_revision)
            if target is None:
                raise Conflict(f"Endpoint {endpoint_id!r} has no earlier revision to roll back to")
            if target == row.current_revision:
                raise Conflict(f"Endpoint {endpoint_id!r} already runs revision {target}")
            rev = await core.revision_row(conn, endpoint_id, target)
            if rev.state == "failed":
                raise Conflict(f"Revision {target} failed ({rev.reason}); roll back to a revision that served",
                               {"revision": target, "state": "failed"})
            if row.canary_revision is not None:  # a promotion in progress: its canary slot goes too
                drop_slot = True
            await core.set_revision_state(conn, endpoint_id, row.current_revision, "rolled_back")
            await core.set_revision_state(conn, endpoint_id, target, "active")
            values: dict[str, Any] = {"current_revision": target, "canary_revision": None, "canary_percent": 0,
                                      "canary_started_at": None, **_mirror(rev),
                                      "model": {**row.model, "version": rev.model_version},
                                      "updated_at": utcnow(), "updated_by": actor.principal.name}
            if row.runtime == "external":
                values["slots"] = {"stable": msgspec.to_builtins(external_slot(target, rev.spec))}
            else:
                target_spec = await core.stored_spec(conn, endpoint_id, target, row.environment)
            await conn.execute(update(endpoints).where(endpoints.c.id == endpoint_id).values(values))
            message = f"Rolled back from revision {row.current_revision} to {target}"
        after = await core.view(conn, endpoint_id)
        await core.ctx.audit.record(conn, actor, action="serving.endpoint.rollback", resource_type="endpoint",
                                    resource_id=endpoint_id, before=before, after=after,
                                    detail=message + (f": {data.reason}" if data.reason else ""))
        await core.finish(conn)
    if target_spec is not None:
        await core.apply(target_spec, "stable", actor)
    if drop_slot and row.runtime != "external":
        await core.delete_slot(endpoint_id, row.name, "canary")
    return await core.get_view(endpoint_id), message


async def _previous(conn: Any, endpoint_id: str, current: int) -> int | None:
    """The newest revision that served before ``current`` and was replaced by a later one."""
    found = (await conn.execute(select(revisions.c.revision).where(
        revisions.c.endpoint_id == endpoint_id, revisions.c.revision < current, revisions.c.state == "superseded")
        .order_by(revisions.c.revision.desc()).limit(1))).scalar_one_or_none()
    return int(found) if found is not None else None


async def promote(core: Core, actor: Actor, endpoint_id: str, data: Promote) -> tuple[Endpoint, str]:
    role = actor.principal.role
    if data.environment == "PROD" and role < Role.admin:
        raise Forbidden(f"Promotion to PROD needs role admin; key {actor.principal.key_id} is {role.name}")
    if data.override and role < Role.admin:
        raise Forbidden(f"Overriding the promotion gate needs role admin; key {actor.principal.key_id} is {role.name}")
    if data.override and not data.reason.strip():
        raise SemanticError([FieldError(field="reason", message="an override needs a reason (it is audited)")])
    async with core.store.read() as conn:
        row = await core.endpoint_row(conn, endpoint_id)
        rev = await core.revision_row(conn, endpoint_id, row.current_revision)
    core.not_deleting(row)
    step = NEXT_ENVIRONMENT.get(row.environment)
    if step != data.environment:
        raise Conflict(f"Endpoint {endpoint_id!r} is in {row.environment}; it can be promoted to "
                       f"{step or 'nothing (PROD is the last)'} only, one step at a time",
                       {"environment": row.environment})
    verdict = await _judge(core, PromotionRequest(
        endpoint_id=endpoint_id, endpoint_name=row.name, route=row.route, model_id=row.model_id,
        model_version=rev.model_version, revision=row.current_revision, from_environment=row.environment,
        to_environment=data.environment))
    if verdict is not None and not verdict.passed and not data.override:
        raise Conflict(f"The promotion gate refused: {verdict.reason}", {"gate": msgspec.to_builtins(verdict)})
    async with core.store.begin() as conn:
        await lock(conn)
        locked = await core.endpoint_row(conn, endpoint_id, lock_row=True)
        core.not_deleting(locked)
        if (locked.environment, locked.current_revision) != (row.environment, row.current_revision):
            raise Conflict(f"Endpoint {endpoint_id!r} changed while the gate judged it; retry")
        await core.deployable_model(conn, locked.model_id, data.environment)
        before = await core.view(conn, endpoint_id)
        await conn.execute(update(endpoints).where(endpoints.c.id == endpoint_id).values(
            environment=data.environment, updated_at=utcnow(), updated_by=actor.principal.name))
        after = await core.view(conn, endpoint_id)
        gate = "no gate" if verdict is None else f"gate {'passed' if verdict.passed else 'failed'}: {verdict.reason}"
        detail = f"{row.environment} -> {data.environment}; {gate}"
        if verdict is not None and not verdict.passed:
            detail += f"; overridden: {data.reason}"
        elif data.reason:
            detail += f"; {data.reason}"
        await core.ctx.audit.record(
            conn, actor, action="serving.endpoint.promote", resource_type="endpoint", resource_id=endpoint_id,
            before=before, after={"endpoint": msgspec.to_builtins(after),
                                  "gate": msgspec.to_builtins(verdict) if verdict is not None else None,
                                  "override": bool(data.override and verdict is not None and not verdict.passed)},
            detail=detail)
        await core.finish(conn)
    return after, f"Promoted to {data.environment}" + (" (gate overridden)" if verdict and not verdict.passed else "")


async def _judge(core: Core, request: PromotionRequest) -> GateVerdict | None:
    if PROMOTION_GATE not in core.ctx.services:
        return None
    try:
        return await core.ctx.services[PROMOTION_GATE].check(request)
    except Exception as err:  # the gate's contract is not to raise; one that does must not pass silently
        log.exception("promotion gate raised for endpoint %s", request.endpoint_id)
        raise ServiceUnavailable("The promotion gate could not judge this promotion; retry later") from err
