"""What the serving service, its lifecycle operations and the reconciler share: rows, rules, runtime calls.

The write order every operation follows: one transaction (``lock`` first) holds the row changes, the
model reference, the audit entry, the change-feed mark and the ``endpoints`` publish; only after it
committed is the runtime asked to act. So a database outage refuses the call (503) before anything runs,
and a crash between the commit and the runtime call leaves a record the reconciler completes (it applies
what the record wants and the runtime does not have).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import Actor, Conflict, ModuleContext, NotFound, Principal, Role
from adapters.adminapi.seams import MODEL_CATALOG, CatalogModel
from adapters.serving import DeploymentSpec, RuntimeFailure, ServingRuntime, Slot
from adapters.serving.settings import ServingSettings
from adapters.store import utcnow
from control.serving.health import SlotState
from control.serving.protocol import Endpoint
from control.serving.publishing import lock, publish_if_changed
from control.serving.runtimes import ApplyLog, EndpointLocks, Ownership
from control.serving.specs import for_environment
from control.serving.tables import SERVING_TOPIC, endpoints, revisions
from control.serving.views import slot_states, to_endpoint

__all__ = ["Core", "system_actor"]

log = logging.getLogger("llmops.serving")


def system_actor(name: str) -> Actor:
    """The actor of changes nobody requested (the canary judge): audited under ``name``."""
    return Actor(principal=Principal(key_id=name, name=name, role=Role.operator), request_id=uuid.uuid4().hex)


class Core:
    def __init__(self, ctx: ModuleContext, settings: ServingSettings, runtime: ServingRuntime,
                 owner: Ownership) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.settings = settings
        self.runtime = runtime
        self.owner = owner
        self.applies = ApplyLog()
        self.locks = EndpointLocks()
        self.touched: dict[str, int] = {}  # endpoint -> count of runtime calls made for it by requests here
        self.wake: Callable[[], None] = lambda: None  # the reconciler's, once it runs

    # -- rows ------------------------------------------------------------------------------------

    async def endpoint_row(self, conn: AsyncConnection, endpoint_id: str, *, lock_row: bool = False) -> Any:
        query = select(endpoints).where(endpoints.c.id == endpoint_id)
        row = (await conn.execute(query.with_for_update() if lock_row else query)).one_or_none()
        if row is None:
            raise NotFound(f"No endpoint {endpoint_id!r}")
        return row

    async def revision_row(self, conn: AsyncConnection, endpoint_id: str, revision: int) -> Any:
        row = (await conn.execute(select(revisions).where(revisions.c.endpoint_id == endpoint_id,
                                                          revisions.c.revision == revision))).one_or_none()
        if row is None:
            raise NotFound(f"Endpoint {endpoint_id!r} has no revision {revision}")
        return row

    async def next_revision(self, conn: AsyncConnection, endpoint_id: str) -> int:
        top = (await conn.execute(select(func.max(revisions.c.revision))
                                  .where(revisions.c.endpoint_id == endpoint_id))).scalar_one_or_none()
        return int(top or 0) + 1

    async def view(self, conn: AsyncConnection, endpoint_id: str) -> Endpoint:
        return to_endpoint(await self.endpoint_row(conn, endpoint_id))

    async def get_view(self, endpoint_id: str) -> Endpoint:
        async with self.store.read() as conn:
            return await self.view(conn, endpoint_id)

    @staticmethod
    def not_deleting(row: Any) -> None:
        if row.status == "deleting":
            raise Conflict(f"Endpoint {row.id!r} is being deleted; retry DELETE to finish", {"status": "deleting"})

    # -- rules -----------------------------------------------------------------------------------

    async def deployable_model(self, conn: AsyncConnection, model_id: str, environment: str) -> CatalogModel:
        """The model, row-locked in ``conn``, if it may run in ``environment`` (approved for STG and PROD)."""
        model = await self.ctx.services[MODEL_CATALOG].get(conn, model_id, lock=True)
        if model.status == "retired":
            raise Conflict(f"Model {model_id!r} is retired and cannot be deployed", {"modelStatus": model.status})
        if environment in ("STG", "PROD") and model.status != "approved":
            raise Conflict(f"Only approved models deploy to {environment}; model {model_id!r} is {model.status}",
                           {"modelStatus": model.status, "environment": environment})
        return model

    # -- writes ----------------------------------------------------------------------------------

    async def finish(self, conn: AsyncConnection) -> None:
        """The end of every serving write: mark the topic, republish when routing changed."""
        await self.ctx.changes.mark(conn, SERVING_TOPIC)
        await publish_if_changed(self.ctx, conn)

    async def set_revision_state(self, conn: AsyncConnection, endpoint_id: str, revision: int, state: str,
                                 reason: str | None = None) -> None:
        """``superseded`` and ``rolled_back`` leave a ``failed`` revision failed: it never served."""
        values: dict[str, Any] = {"state": state}
        if reason is not None:
            values["reason"] = reason[:1000]
        query = update(revisions).where(revisions.c.endpoint_id == endpoint_id, revisions.c.revision == revision)
        if state in ("superseded", "rolled_back"):
            query = query.where(revisions.c.state != "failed")
        await conn.execute(query.values(values))

    async def drop_canary(self, conn: AsyncConnection, row: Any, actor: Actor) -> int:
        """Take the canary's traffic away (revision ``rolled_back``); the reconciler confirms its slot is gone.
        Returns the dropped revision."""
        revision = int(row.canary_revision)
        await self.set_revision_state(conn, row.id, revision, "rolled_back")
        slots = dict(row.slots or {})
        if row.runtime == "external":
            slots.pop("canary", None)
        await conn.execute(update(endpoints).where(endpoints.c.id == row.id).values(
            canary_revision=None, canary_percent=0, canary_started_at=None, slots=slots,
            updated_at=utcnow(), updated_by=actor.principal.name))
        return revision

    # -- the runtime -----------------------------------------------------------------------------

    def touch(self, endpoint_id: str) -> None:
        """A request acts on the endpoint's runtime (called under its lock, after the commit): a reconciler
        pass that read the record before must read it again before acting on it."""
        self.touched[endpoint_id] = self.touched.get(endpoint_id, 0) + 1

    async def stored_spec(self, conn: AsyncConnection, endpoint_id: str, revision: int,
                          environment: Any) -> DeploymentSpec:
        row = await self.revision_row(conn, endpoint_id, revision)
        return for_environment(msgspec.convert(row.spec, DeploymentSpec), environment)

    async def apply(self, spec: DeploymentSpec, slot: Slot, actor: Actor) -> str | None:
        """Hand ``spec`` to the runtime's ``slot`` (after the commit); a refusal fails the revision.
        Returns the runtime's reason when it refused or could not be reached."""
        if not self.owner.held():
            return None  # the process that runs the local servers applies it
        self.applies.note(spec.endpoint_id, slot, spec.revision)
        try:
            async with self.locks.hold(spec.endpoint_id):
                self.touch(spec.endpoint_id)
                await self.runtime.apply(spec, slot)
        except RuntimeFailure as err:
            await self.refused(spec.endpoint_id, spec.revision, slot, err, actor)
            return err.reason
        finally:
            self.wake()
        return None

    async def delete_slot(self, endpoint_id: str, name: str, slot: Slot) -> None:
        """Remove a slot no record wants any more, now; what fails is left to the reconciler."""
        if not self.owner.held():
            return
        async with self.locks.hold(endpoint_id):
            self.touch(endpoint_id)
            report = await self.runtime.delete(endpoint_id, name, slot)
        if not report.complete:
            log.warning("endpoint %s: %s slot not fully deleted yet (%s); the reconciler retries", endpoint_id,
                        slot, ", ".join(report.failed))
        self.wake()

    async def refused(self, endpoint_id: str, revision: int, slot: Slot, err: RuntimeFailure, actor: Actor) -> None:
        """Record a runtime refusal: the revision ``failed`` (unless retryable) and the endpoint's reason."""
        async with self.store.begin() as conn:
            await lock(conn)
            row = (await conn.execute(select(endpoints).where(endpoints.c.id == endpoint_id))).one_or_none()
            if row is None or row.status == "deleting":
                return
            values: dict[str, Any] = {"status_reason": err.reason[:1000]}
            if not err.retryable:
                await self.set_revision_state(conn, endpoint_id, revision, "failed", err.reason)
                slots = slot_states(row)
                serving = slots.get("stable")
                if slot == "stable" and revision == row.current_revision and not (serving and serving.base_url):
                    values["status"] = "failed"
                elif row.status in ("ready", "deploying"):
                    values["status"] = "degraded"
                slots[slot] = SlotState(revision=revision, wanted_revision=revision, phase="failed",
                                        reason=err.reason, message="the runtime refused it")
                if slot == "stable" and serving and serving.base_url:  # the old revision still serves
                    slots[slot] = msgspec.structs.replace(serving, wanted_revision=revision, reason=err.reason)
                values["slots"] = {k: msgspec.to_builtins(v) for k, v in slots.items()}
            await conn.execute(update(endpoints).where(endpoints.c.id == endpoint_id).values(values))
            await self.ctx.audit.record(conn, actor, action="serving.revision.fail", resource_type="endpoint",
                                        resource_id=endpoint_id,
                                        detail=f"revision {revision} ({slot}): {err.reason}"
                                               + (" (retryable)" if err.retryable else ""))
            await self.finish(conn)
        log.warning("endpoint %s revision %d (%s): runtime refused: %s", endpoint_id, revision, slot, err.reason)
