"""The reconciler: runtime status onto the records, records onto the runtime, routes onto the gateway.

A lifespan task. Each pass (every ``SERVING_RECONCILE_INTERVAL_S``; every 0.25 s locally, 1 s on
Kubernetes, while something is changing; at once when a change here or on another replica marks the
``serving.endpoints`` topic):

* for each runtime-backed endpoint not being deleted, read ``status`` of the slots its record wants;
  apply a slot the runtime reports ``absent`` (local servers after a control-plane restart, an apply lost
  to a crash) or running another revision than the record wants (at most every ``REAPPLY_S`` per
  revision); a revision whose slot reports ``failed`` (or whose rollout next to the old revision failed,
  ``details["rollout"]``) becomes ``failed``, and ``active``/``canary`` again should it recover; a failed
  revision is never re-applied;
* delete a canary slot no record wants any more (a dropped canary whose delete failed); finish a
  promotion (traffic 100) by deleting the canary slot once the stable slot runs the promoted revision;
* delete every slot of an endpoint whose record vanished since the last pass (a delete that raced an
  apply, another replica's delete): the orphan sweep;
* write each endpoint's slots, status, reason and ``checked_at`` in one transaction, as a compare-and-set
  on the record's wanted revisions (a change made meanwhile wins; the next pass reads it), and publish
  the ``endpoints`` snapshot when its content changed;
* judge running canaries (``control.serving.canary.judge_canaries``, when installed) and drop those whose
  verdict is ``rollback``: revision ``rolled_back``, audited ``serving.canary.auto_rollback`` by
  ``system:canary`` with the verdict's numbers.

Several replicas may run it: applies are idempotent, writes compare-and-set, publishing compares
content. A database outage or an unreachable runtime is logged once and retried on the next pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
from sqlalchemy import select, update

from adapters.serving import DeploymentSpec, RuntimeFailure, RuntimeStatus, Slot
from adapters.store import StoreError, utcnow
from control.serving.core import Core, system_actor
from control.serving.health import SlotState, endpoint_status, routable
from control.serving.lifecycle import drop_canary_now
from control.serving.publishing import lock, provider_name, publish_if_changed
from control.serving.specs import for_environment
from control.serving.tables import SERVING_TOPIC, endpoints, revisions

__all__ = ["ABSENT_REAPPLY_S", "REAPPLY_S", "PassReport", "Reconciler"]

log = logging.getLogger("llmops.serving.reconciler")

REAPPLY_S = 30.0  # a slot running another revision than wanted: apply again at most this often
ABSENT_REAPPLY_S = 5.0  # a slot the runtime does not have: at once after a restart, then at most this often
_PARALLEL = 16  # runtime status reads in flight at once


@dataclass
class _Seen:
    """One endpoint as this pass found it; ``key`` is what the write compares before it writes."""

    endpoint_id: str
    key: tuple[int, int | None, int]
    slots: dict[str, SlotState]
    wants_canary: bool
    promotion_done: bool = False
    revision_states: dict[int, tuple[str, str | None]] = field(default_factory=dict)  # revision -> (state, why)
    refused: str | None = None
    canary_since: Any = None


@dataclass
class PassReport:
    """What one pass did (for tests and the log)."""

    owner: bool = True
    endpoints: int = 0
    applied: list[tuple[str, str, int]] = field(default_factory=list)  # (endpoint, slot, revision)
    deleted: list[tuple[str, str]] = field(default_factory=list)  # (endpoint, slot or "all")
    changed: list[str] = field(default_factory=list)
    published: bool = False
    rolled_back: list[str] = field(default_factory=list)
    transitional: bool = False


async def _revisions(conn: Any, endpoint_ids: list[str]) -> dict[str, dict[int, Any]]:
    """endpoint -> revision -> (revision, state, reason, spec, served_model_name), in one query."""
    out: dict[str, dict[int, Any]] = {}
    if not endpoint_ids:
        return out
    rows = (await conn.execute(select(revisions.c.endpoint_id, revisions.c.revision, revisions.c.state,
                                      revisions.c.reason, revisions.c.spec, revisions.c.served_model_name)
                               .where(revisions.c.endpoint_id.in_(endpoint_ids)))).all()
    for r in rows:
        out.setdefault(r.endpoint_id, {})[r.revision] = r
    return out


def _load_judge() -> tuple[Any, Any, Any] | None:
    """``(CanaryCandidate, CanaryBounds, judge_canaries)`` when the canary judge is installed."""
    try:
        canary = importlib.import_module("control.serving.canary")
        bounds = importlib.import_module("policies.serving.canary")
        return canary.CanaryCandidate, bounds.CanaryBounds, canary.judge_canaries
    except (ImportError, AttributeError):
        return None


def _state(status: RuntimeStatus, wanted: int, served: dict[int, str]) -> SlotState:
    revision = status.revision if status.revision is not None else wanted
    return SlotState(revision=revision, wanted_revision=wanted, phase=status.phase, reason=status.reason,
                     message=status.message[:500], ready_replicas=status.ready_replicas,
                     desired_replicas=status.desired_replicas, base_url=status.base_url,
                     served_model_name=served.get(revision, served.get(wanted, "")), details=dict(status.details))


def _short(reason: str) -> str:
    """A machine-readable reason from a runtime's text: ``ErrImagePull: …`` -> ``ErrImagePull``."""
    head = reason.split(":", 1)[0].strip()
    return head if head and len(head) <= 40 and " " not in head else "RuntimeRefused"


def _significant(slots: Any) -> Any:
    """What of the slots is worth waking anyone for (not the runtime's free-form details and message)."""
    return {name: {k: v for k, v in dict(s).items() if k not in ("details", "message")}
            for name, s in (slots or {}).items()}


_JUDGE_DUTY = 20  # judging waits 20x its own duration before it runs again…
_JUDGE_FREE_S = 0.1  # …when it took longer than this (a cheap pass runs every time)


class Reconciler:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._event = asyncio.Event()
        self._known: dict[str, str] = {}  # endpoint id -> name, runtime-backed, as of the last pass
        self._judge = _load_judge()
        self._judge_after = 0.0  # time.monotonic() before which judging waits (its duty cycle)
        self._down = False
        self._one_at_a_time = asyncio.Lock()  # a pass never writes what it saw before another pass wrote
        self._stopping = False

    def wake(self) -> None:
        self._event.set()

    @contextlib.asynccontextmanager
    async def running(self, stop_grace_s: float = 10.0) -> Any:
        """Run the loop; on exit, let a pass in progress finish (up to ``stop_grace_s``), then cancel."""
        loop = asyncio.create_task(self._loop(), name="llmops-serving-reconciler")
        feed = asyncio.create_task(self._follow(), name="llmops-serving-feed")
        try:
            yield self
        finally:
            self._stopping = True
            self._event.set()
            feed.cancel()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(loop), stop_grace_s)
            for task in (loop, feed):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _follow(self) -> None:
        with self.core.ctx.changes.subscribe(SERVING_TOPIC) as sub:
            async for _topics in sub:
                self._event.set()

    async def _loop(self) -> None:
        settings = self.core.settings
        fast = min(settings.reconcile_interval_s, 0.25 if self.core.runtime.name == "local" else 1.0)
        while not self._stopping:
            delay = settings.reconcile_interval_s
            try:
                report = await self.pass_once()
                delay = fast if report.transitional else delay
                if self._down:
                    log.info("serving reconciler: the database is back")
                self._down = False
            except StoreError as err:
                if not self._down:
                    log.warning("serving reconciler: database unavailable, retrying: %s", err)
                self._down = True
            except Exception:  # a bug must not stop reconciling for good: log it, try again next pass
                current = asyncio.current_task()
                if current is not None and current.cancelling():  # a cancellation a driver turned into an error
                    raise asyncio.CancelledError from None
                log.exception("serving reconciler pass failed")
            self._event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), delay)

    async def pass_once(self) -> PassReport:
        async with self._one_at_a_time:
            return await self._pass()

    async def _pass(self) -> PassReport:
        core, report = self.core, PassReport()
        if not core.owner.held():
            report.owner = False
            return report
        stamps = dict(core.touched)  # before the read: a runtime call after it makes _observe read again
        async with core.store.read() as conn:
            rows = (await conn.execute(select(endpoints).where(endpoints.c.runtime != "external"))).all()
            revs = await _revisions(conn, [r.id for r in rows if r.status != "deleting"])
        live = {r.id: r.name for r in rows}
        await self._sweep(live, report)
        gate = asyncio.Semaphore(_PARALLEL)

        async def observe(row: Any) -> _Seen | None:
            async with gate:
                return await self._observe(row, revs.get(row.id, {}), stamps.get(row.id, 0), report)

        found = await asyncio.gather(*(observe(r) for r in rows if r.status != "deleting"))
        seen = [s for s in found if s is not None]
        report.endpoints = len(seen)
        await self._write(seen, report)
        await self._judge_canaries(seen, report)
        return report

    async def _sweep(self, live: dict[str, str], report: PassReport) -> None:
        for endpoint_id, name in list(self._known.items()):
            if endpoint_id in live:
                continue
            try:
                async with self.core.locks.hold(endpoint_id):
                    result = await self.core.runtime.delete(endpoint_id, name, None)
            except RuntimeFailure as err:
                log.warning("endpoint %s is gone, its leftovers not yet: %s", endpoint_id, err.reason)
                continue
            if result.complete:  # its lock and counters go now: no request can name it any more
                self.core.applies.forget(endpoint_id)
                self.core.locks.forget(endpoint_id)
                self.core.touched.pop(endpoint_id, None)
                if result.deleted:
                    log.info("endpoint %s is gone: deleted its leftover %s", endpoint_id, ", ".join(result.deleted))
                    report.deleted.append((endpoint_id, "all"))
                del self._known[endpoint_id]
        self._known.update(live)

    async def _observe(self, row: Any, revs: dict[int, Any], stamp: int, report: PassReport) -> _Seen | None:
        core, endpoint_id = self.core, row.id
        async with core.locks.hold(endpoint_id):
            if core.touched.get(endpoint_id, 0) != stamp:  # a call acted on the runtime since the read: read again
                async with core.store.read() as conn:
                    row = (await conn.execute(select(endpoints).where(endpoints.c.id == endpoint_id))).one_or_none()
                    revs = (await _revisions(conn, [endpoint_id])).get(endpoint_id, {})
                if row is None or row.status == "deleting":
                    return None
            wanted: dict[Slot, int] = {"stable": row.current_revision}
            if row.canary_revision is not None:
                wanted["canary"] = row.canary_revision
            served = {n: r.served_model_name for n, r in revs.items()}
            seen = _Seen(endpoint_id=endpoint_id, key=(row.current_revision, row.canary_revision, row.canary_percent),
                         slots={}, wants_canary=row.canary_revision is not None, canary_since=row.canary_started_at)
            try:
                for slot, number in wanted.items():
                    seen.slots[slot] = await self._slot(row, slot, revs[number], served, seen, report)
                await self._unwanted_canary(row, seen, report)
                await self._finish_promotion(row, seen, report)
            except RuntimeFailure as err:  # unreachable: keep what the record says, try again next pass
                log.warning("endpoint %s: runtime status unavailable: %s", endpoint_id, err.reason)
                return None
        return seen

    async def _slot(self, row: Any, slot: Slot, rev: Any, served: dict[int, str], seen: _Seen,
                    report: PassReport) -> SlotState:
        core, number = self.core, rev.revision
        status = await core.runtime.status(row.id, row.name, slot)
        off_revision = status.revision is not None and status.revision != number
        if rev.state != "failed" and (status.phase == "absent" or off_revision) and core.applies.due(
                row.id, slot, number, ABSENT_REAPPLY_S if status.phase == "absent" else REAPPLY_S):
            spec = for_environment(msgspec.convert(rev.spec, DeploymentSpec), row.environment)
            core.applies.note(row.id, slot, number)
            report.applied.append((row.id, slot, number))
            try:
                await core.runtime.apply(spec, slot)
            except RuntimeFailure as err:
                seen.refused = err.reason
                if not err.retryable:
                    seen.revision_states[number] = ("failed", err.reason)
                    return SlotState(revision=number, wanted_revision=number, phase="failed", reason=err.reason,
                                     message="the runtime refused it", served_model_name=served.get(number, ""))
            status = await core.runtime.status(row.id, row.name, slot)
        state = _state(status, number, served)
        if status.phase == "absent" and rev.state == "failed":  # refused before: say why, as it was said
            state = msgspec.structs.replace(state, phase="failed", reason=_short(rev.reason), message=rev.reason[:500])
        on_wanted = status.revision in (None, number)
        rollout = status.details.get("rollout")  # a new revision starting next to the old (LocalRuntime's surge)
        rollout_failed = (isinstance(rollout, dict) and rollout.get("revision") == number
                          and rollout.get("phase") == "failed")
        if ((status.phase == "failed" and on_wanted) or rollout_failed) and rev.state in ("active", "canary"):
            seen.revision_states[number] = ("failed", f"{status.reason or 'Failed'}: {status.message}"[:1000])
        elif status.phase == "ready" and on_wanted and rev.state == "failed":
            seen.revision_states[number] = ("canary" if slot == "canary" and row.current_revision != number
                                            else "active", None)
        if status.phase != "ready" or off_revision:
            report.transitional = True
        return state

    async def _unwanted_canary(self, row: Any, seen: _Seen, report: PassReport) -> None:
        if row.canary_revision is not None or "canary" not in (row.slots or {}):
            return
        status = await self.core.runtime.status(row.id, row.name, "canary")
        if status.phase != "absent":
            result = await self.core.runtime.delete(row.id, row.name, "canary")
            report.deleted.append((row.id, "canary"))
            if not result.complete:
                seen.slots["canary"] = _state(status, status.revision or 0, {})
                report.transitional = True

    async def _finish_promotion(self, row: Any, seen: _Seen, report: PassReport) -> None:
        stable = seen.slots.get("stable")
        if row.canary_revision is None or row.canary_revision != row.current_revision or stable is None:
            return
        report.transitional = True
        if stable.phase != "ready" or stable.revision != row.current_revision:
            return
        result = await self.core.runtime.delete(row.id, row.name, "canary")
        report.deleted.append((row.id, "canary"))
        if result.complete:
            seen.promotion_done, seen.wants_canary = True, False
            seen.slots.pop("canary", None)

    async def _write(self, seen: list[_Seen], report: PassReport) -> None:
        """One transaction: each endpoint whose wanted revisions are still those observed gets what was seen
        (a row per changed endpoint, one statement for the others' ``checked_at``); then the snapshot."""
        now = utcnow()
        async with self.core.store.begin() as conn:
            await lock(conn)
            current = {r.id: r for r in (await conn.execute(select(endpoints).where(
                endpoints.c.id.in_([s.endpoint_id for s in seen])))).all()} if seen else {}
            significant, unchanged = False, []
            for s in seen:
                row = current.get(s.endpoint_id)
                if (row is None or row.status == "deleting"
                        or (row.current_revision, row.canary_revision, row.canary_percent) != s.key):
                    continue  # changed meanwhile: the next pass reads the new record
                slots = {name: msgspec.to_builtins(state) for name, state in s.slots.items()}
                status, reason = endpoint_status(s.slots, s.wants_canary)
                reason = reason or (s.refused if status != "ready" else None)
                for number, (state, why) in s.revision_states.items():
                    await self.core.set_revision_state(conn, s.endpoint_id, number, state, why)
                    significant = True
                if not (slots != row.slots or status != row.status or reason != row.status_reason
                        or s.promotion_done):
                    unchanged.append(s.endpoint_id)
                    continue
                values: dict[str, Any] = {"checked_at": now, "slots": slots, "status": status, "status_reason": reason}
                if s.promotion_done:
                    values.update(canary_revision=None, canary_percent=0, canary_started_at=None)
                if (_significant(slots) != _significant(row.slots) or status != row.status
                        or reason != row.status_reason or s.promotion_done):
                    significant = True
                    report.changed.append(s.endpoint_id)
                await conn.execute(update(endpoints).where(endpoints.c.id == s.endpoint_id).values(values))
            if unchanged:
                await conn.execute(update(endpoints).where(endpoints.c.id.in_(unchanged)).values(checked_at=now))
            if significant:
                await self.core.ctx.changes.mark(conn, SERVING_TOPIC)
            report.published = await publish_if_changed(self.core.ctx, conn)

    async def _judge_canaries(self, seen: list[_Seen], report: PassReport) -> None:
        if self._judge is None:
            return
        candidate_type, bounds_type, judge = self._judge
        candidates = [candidate_type(endpoint_id=s.endpoint_id, stable_provider=provider_name(s.endpoint_id, "stable"),
                                     canary_provider=provider_name(s.endpoint_id, "canary"), since=s.canary_since)
                      for s in seen if s.wants_canary and s.key[1] != s.key[0] and s.canary_since is not None
                      and routable(s.slots.get("canary")) and s.slots["canary"].phase == "ready"]
        # A judging pass reads the canaries' usage rows (100-300 ms at 200k requests in the window): it runs at
        # most 1/_JUDGE_DUTY of the time, so a busy endpoint's canary never costs the control plane a core.
        started = time.monotonic()
        if not candidates or started < self._judge_after:
            return
        settings = self.core.settings
        bounds = bounds_type(window_s=settings.canary_window_s, min_requests=settings.canary_min_requests,
                             max_error_rate_delta=settings.canary_max_error_rate_delta,
                             max_p95_ratio=settings.canary_max_p95_ratio)
        by_id = {s.endpoint_id: s for s in seen}
        verdicts = await judge(self.core.store, candidates, bounds)
        took = time.monotonic() - started
        self._judge_after = started + _JUDGE_DUTY * took if took > _JUDGE_FREE_S else 0.0
        for endpoint_id, verdict in verdicts:
            if verdict.action != "rollback":
                continue
            revision = by_id[endpoint_id].key[1]
            assert revision is not None
            stats = msgspec.to_builtins(getattr(verdict, "stats", {}))
            if await drop_canary_now(self.core, system_actor("system:canary"), endpoint_id, revision,
                                     action="serving.canary.auto_rollback",
                                     detail=f"canary revision {revision} rolled back: {verdict.reason}",
                                     after_extra={"verdict": {"reason": verdict.reason, "stats": stats}}):
                report.rolled_back.append(endpoint_id)
                log.warning("endpoint %s: canary revision %d rolled back automatically: %s", endpoint_id,
                            revision, verdict.reason)
