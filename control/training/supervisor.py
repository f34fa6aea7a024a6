"""The supervisor: one per replica, started in the module's lifespan; it launches, follows and ends jobs.

**Leases.** A replica manages a job only while it holds the job's lease (``lease_owner``/``lease_until``),
taken with a conditional ``UPDATE`` (free, lapsed, or already its own), renewed at every pass; two
supervisors never both launch or follow a job. A replica that dies stops renewing, and another takes its jobs
over once ``lease_s`` has passed; a clean shutdown gives its leases back at once and leaves the attempts
running (Kubernetes keeps them; the local runtime's attempts outlive this process), to be adopted.

**A pass** (``sync_once``; every ``sync_interval_s``, at once after ``wake()``, which create and cancel call):

1. the first pass sweeps ``runtime.active()``: an attempt of a finished job still running is cancelled, one
   older than its job's current attempt too; a succeeded job's earlier attempts are cleaned up;
2. renew the leases; a job whose lease went elsewhere is dropped here;
3. adopt scheduled and running jobs of this runtime whose lease is free or lapsed (a restart, a dead replica);
4. reconcile each followed job: a cancel request (``runtime.cancel``, then ``cancelled``), a passed deadline
   (``failed``, ``DeadlineExceeded``), else the attempt's ``status`` (``follow.apply``): this poll backs up
   the runtime's ``watch()``, whose events are applied as they come;
5. launch queued and due retrying jobs while fewer than ``max_concurrent_jobs`` are followed here
   (``attempts.launch``).

Per job, an ``asyncio.Lock`` keeps the pass and the watch from applying two changes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update

from adapters.adminapi import ModuleContext
from adapters.store import StoreError, utcnow
from adapters.training.base import AttemptStatus, RuntimeFailure, TrainingRuntime
from adapters.training.settings import TrainingSettings
from control.training import attempts, follow
from control.training.besteffort import quietly
from control.training.tables import jobs
from control.training.tokens import FINISHED
from control.training.transitions import ACTIVE
from control.training.views import job_row, record

__all__ = ["Supervisor"]

log = logging.getLogger("llmops.training")
WAITING = ("queued", "retrying")


class Supervisor:
    def __init__(self, ctx: ModuleContext, settings: TrainingSettings, runtime: TrainingRuntime,
                 api_base_url: Callable[[], str | None]) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.settings = settings
        self.runtime = runtime
        self.api_base_url = api_base_url
        self.owner = f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(3)}"
        self.actor = f"supervisor:{self.owner}"[:100]
        self.followed: dict[str, int] = {}  # job id -> the attempt followed here
        self._locks: dict[str, asyncio.Lock] = {}
        self._wake = asyncio.Event()
        self._swept = False
        self.passes = 0  # completed passes (tests wait for the first)
        self._stopping = False

    def wake(self) -> None:
        self._wake.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(self._loop(), name="training-supervisor"),
                 asyncio.create_task(self._watch(), name="training-watch")]
        try:
            yield
        finally:
            # The flag as well as the cancel: a cancel that lands inside a database call can come back as the
            # driver's error (PostgreSQL: the connection is invalidated), which a pass logs and goes on from.
            self._stopping = True
            self._wake.set()
            for task in tasks:
                task.cancel()
            _, stuck = await asyncio.wait(tasks, timeout=15)
            for task in stuck:
                log.error("training supervisor: task %s did not stop within 15 s", task.get_name())
            await self.give_back()

    async def give_back(self) -> None:
        """Shutdown: hand every lease back (the attempts keep running, for the next supervisor to adopt)."""
        with contextlib.suppress(Exception):
            async with self.store.begin() as conn:
                await conn.execute(update(jobs).where(jobs.c.lease_owner == self.owner).values(
                    lease_owner=None, lease_until=None))
        self.followed.clear()

    # -- the loop and the watch -----------------------------------------------------------------

    async def _loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                await self.sync_once()
            except Exception as err:  # the database is down: look again later
                log.warning("training supervisor: pass failed (%s: %s); trying again", type(err).__name__, err)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.sync_interval_s)

    async def _watch(self) -> None:
        while not self._stopping:
            try:
                async for status in self.runtime.watch():
                    if self._stopping:
                        return
                    await self.on_status(status)
                return  # the runtime was closed
            except Exception as err:
                log.warning("training supervisor: runtime watch broke (%s); polling until it is back", err)
                await asyncio.sleep(self.settings.sync_interval_s)

    async def on_status(self, status: AttemptStatus) -> None:
        """One change the runtime reported: applied when this replica follows that attempt."""
        if self.followed.get(status.job_id) != status.attempt:
            return

        async def apply(job_id: str) -> None:
            row = await self._current(job_id)
            if row is not None and int(row.attempt) == status.attempt and not row.cancel_requested:
                await follow.apply(self, row, status)

        await self.guarded(status.job_id, apply)

    # -- one pass -------------------------------------------------------------------------------

    async def sync_once(self) -> None:
        if not self._swept:
            try:
                await self._sweep()
            except Exception as err:  # the runtime is unreachable: the rest of the pass still runs
                log.warning("training supervisor: could not list the runtime's attempts (%s); next pass", err)
        await self._renew()
        await self._adopt()
        for job_id in list(self.followed):
            await self.guarded(job_id, self._reconcile)
        await self._launch_due()
        self.passes += 1

    async def guarded(self, job_id: str, work: Callable[[str], Awaitable[None]]) -> None:
        """``work(job_id)`` under the job's lock; an error is logged and leaves the job for the next pass."""
        try:
            async with self._locks.setdefault(job_id, asyncio.Lock()):
                await work(job_id)
        except StoreError as err:
            log.warning("training job %s: database error (%s); next pass", job_id, err)
        except RuntimeFailure as err:
            log.warning("training job %s: the runtime failed (%s); next pass", job_id, err.reason)
        except Exception:
            log.exception("training job %s: supervisor error; next pass", job_id)

    def drop(self, job_id: str) -> None:
        self.followed.pop(job_id, None)
        self._locks.pop(job_id, None)

    def _claimable(self, now: datetime) -> Any:
        return or_(jobs.c.lease_owner.is_(None), jobs.c.lease_until < now, jobs.c.lease_owner == self.owner)

    async def claim(self, job_id: str, statuses: tuple[str, ...]) -> bool:
        now = utcnow()
        async with self.store.begin() as conn:
            taken = await conn.execute(update(jobs).where(
                jobs.c.id == job_id, jobs.c.status.in_(statuses), self._claimable(now)).values(
                lease_owner=self.owner, lease_until=now + timedelta(seconds=self.settings.lease_s)))
        return bool(taken.rowcount)

    async def _current(self, job_id: str) -> Any | None:
        """The job's row while this replica manages it; None (and dropped) once it does not."""
        async with self.store.read() as conn:
            row = await job_row(conn, job_id)
        if row.lease_owner != self.owner or row.status in FINISHED:
            self.drop(job_id)
            return None
        return row

    async def _sweep(self) -> None:
        """What the runtime still has that no job should run: cancelled, or, for a succeeded job, its attempts
        before the last cleaned up (as ``finalize`` does; the last keeps its logs)."""
        refs = await self.runtime.active()
        async with self.store.read() as conn:
            rows = {r.id: r for r in await conn.execute(select(jobs.c.id, jobs.c.status, jobs.c.attempt).where(
                jobs.c.id.in_(list({r.job_id for r in refs}) or [""])))}
        for ref in refs:
            row = rows.get(ref.job_id)
            if row is None:
                log.warning("training: the runtime has attempt %d of unknown job %s; left alone", ref.attempt,
                            ref.job_id)
            elif row.status == "succeeded":
                if ref.attempt < row.attempt:
                    await quietly(self.runtime.cleanup(ref.job_id, ref.attempt), "cleanup", ref.job_id)
            elif row.status in FINISHED or ref.attempt < row.attempt:
                status = await self.runtime.status(ref.job_id, ref.attempt)
                if status.phase in ("pending", "running"):
                    stop = self.runtime.cancel(ref.job_id, ref.attempt, grace_s=self.settings.cancel_grace_s)
                    await quietly(stop, "cancel", ref.job_id)
        self._swept = True

    async def _renew(self) -> None:
        if not self.followed:
            return
        now = utcnow()
        async with self.store.begin() as conn:
            await conn.execute(update(jobs).where(jobs.c.lease_owner == self.owner,
                                                  jobs.c.id.in_(list(self.followed))).values(
                lease_until=now + timedelta(seconds=self.settings.lease_s)))
            held = set((await conn.execute(select(jobs.c.id).where(jobs.c.lease_owner == self.owner))).scalars())
        for job_id in list(self.followed):
            if job_id not in held:
                log.info("training job %s: no longer managed here (finished, or taken over)", job_id)
                self.drop(job_id)

    async def _adopt(self) -> None:
        now = utcnow()
        async with self.store.read() as conn:
            found = (await conn.execute(select(jobs.c.id, jobs.c.attempt, jobs.c.lease_owner).where(
                jobs.c.runtime == self.runtime.name, jobs.c.status.in_(ACTIVE), self._claimable(now),
                jobs.c.id.not_in(list(self.followed) or [""])).order_by(jobs.c.created_at))).all()
        for job_id, attempt, previous in found:
            if await self.claim(job_id, ACTIVE):
                self.followed[job_id] = int(attempt)
                async with self.store.begin() as conn:
                    await record(conn, job_id, "adopted", attempt=int(attempt), actor=self.actor,
                                 reason=f"followed by {self.owner}" + (f" after {previous}" if previous else ""))

    async def _reconcile(self, job_id: str) -> None:
        row = await self._current(job_id)
        if row is None:
            return
        if row.status not in ACTIVE:
            self.drop(job_id)
            return
        if row.cancel_requested:
            await follow.stop(self, row, "cancelled", "Cancelled", "the attempt was stopped on request")
            return
        if row.deadline_at is not None and utcnow() >= row.deadline_at:
            await follow.stop(self, row, "failed", "DeadlineExceeded", "the job's deadline passed")
            return
        await follow.apply(self, row, await self.runtime.status(job_id, int(row.attempt)))

    async def _launch_due(self) -> None:
        room = self.settings.max_concurrent_jobs - len(self.followed)
        if room <= 0:
            return
        now = utcnow()
        async with self.store.read() as conn:
            due = (await conn.execute(select(jobs.c.id).where(
                jobs.c.runtime == self.runtime.name, jobs.c.status.in_(WAITING),
                or_(jobs.c.next_attempt_at.is_(None), jobs.c.next_attempt_at <= now), self._claimable(now),
                jobs.c.id.not_in(list(self.followed) or [""]))
                .order_by(jobs.c.created_at, jobs.c.id).limit(room))).scalars().all()
        for job_id in due:
            if len(self.followed) >= self.settings.max_concurrent_jobs:
                return
            if await self.claim(job_id, WAITING):
                await self.guarded(job_id, lambda j: attempts.launch(self, j))
