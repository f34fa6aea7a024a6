"""Deleting an endpoint: the route goes first, then every runtime resource, then the record.

1. One transaction marks the endpoint ``deleting`` and republishes the ``endpoints`` snapshot without its
   route (the gateway stops sending it traffic), audited ``serving.endpoint.delete``.
2. The runtime deletes both slots; resources already gone are fine.
3. Complete: the revisions, the row and the model reference go in one transaction (the model can be
   deleted from the catalog again), audited ``serving.endpoint.deleted``; the answer is the
   ``DeleteResult``. Partial: the row stays ``deleting`` with the failures as its reason, audited
   ``serving.endpoint.delete_failed``, and the answer is 502 with the ``DeleteResult`` in ``data``; calling
   DELETE again retries, and finishes once the runtime lets it.

While ``deleting``, nothing re-applies the endpoint and no other change is accepted (409).
"""

from __future__ import annotations

from sqlalchemy import delete as sql_delete
from sqlalchemy import update

from adapters.adminapi import Actor, AdminError
from adapters.adminapi.seams import MODEL_REFS
from adapters.serving import DeleteReport
from adapters.store import utcnow
from control.serving.core import Core
from control.serving.protocol import DeleteResult
from control.serving.publishing import lock
from control.serving.tables import endpoints, revisions

__all__ = ["DeleteIncomplete", "delete"]


class DeleteIncomplete(AdminError):
    """502: the runtime could not delete every resource; ``data`` is the ``DeleteResult``."""

    status = 502


def _result(endpoint_id: str, report: DeleteReport, deleted: bool) -> DeleteResult:
    return DeleteResult(endpoint_id=endpoint_id, deleted=deleted, resources_deleted=list(report.deleted),
                        resources_already_gone=list(report.already_gone), resources_failed=dict(report.failed))


async def delete(core: Core, actor: Actor, endpoint_id: str) -> DeleteResult:
    async with core.store.begin() as conn:
        await lock(conn)
        row = await core.endpoint_row(conn, endpoint_id, lock_row=True)
        before = await core.view(conn, endpoint_id)
        if row.status != "deleting":
            await conn.execute(update(endpoints).where(endpoints.c.id == endpoint_id).values(
                status="deleting", status_reason="deleting runtime resources", updated_at=utcnow(),
                updated_by=actor.principal.name))
        await core.ctx.audit.record(conn, actor, action="serving.endpoint.delete", resource_type="endpoint",
                                    resource_id=endpoint_id, before=before,
                                    detail="route withdrawn; deleting runtime resources")
        await core.finish(conn)  # the route is gone from the snapshot with this commit
    report = DeleteReport()
    if row.runtime != "external" and core.owner.held():  # else the owner's reconciler sweeps what it runs
        async with core.locks.hold(endpoint_id):
            core.touch(endpoint_id)
            report = await core.runtime.delete(endpoint_id, row.name, None)
    if not report.complete:
        failures = "; ".join(f"{what}: {why}" for what, why in sorted(report.failed.items()))
        async with core.store.begin() as conn:
            await lock(conn)
            await conn.execute(update(endpoints).where(endpoints.c.id == endpoint_id).values(
                status_reason=f"delete incomplete: {failures}"[:1000], updated_at=utcnow(),
                updated_by=actor.principal.name))
            await core.ctx.audit.record(conn, actor, action="serving.endpoint.delete_failed",
                                        resource_type="endpoint", resource_id=endpoint_id, detail=failures)
            await core.finish(conn)
        result = _result(endpoint_id, report, deleted=False)
        raise DeleteIncomplete(f"Endpoint {endpoint_id!r} is not fully deleted ({failures}); retry DELETE",
                               result)
    async with core.store.begin() as conn:
        await lock(conn)
        await conn.execute(sql_delete(revisions).where(revisions.c.endpoint_id == endpoint_id))
        gone = (await conn.execute(sql_delete(endpoints).where(endpoints.c.id == endpoint_id))).rowcount
        if gone:
            await core.ctx.services[MODEL_REFS].remove(conn, row.model_id, "endpoint", endpoint_id)
            await core.ctx.audit.record(conn, actor, action="serving.endpoint.deleted", resource_type="endpoint",
                                        resource_id=endpoint_id, before=before,
                                        detail=f"deleted: {', '.join(report.deleted) or 'nothing'}; already gone: "
                                               f"{', '.join(report.already_gone) or 'nothing'}")
        await core.finish(conn)
    core.applies.forget(endpoint_id)
    return _result(endpoint_id, report, deleted=True)
