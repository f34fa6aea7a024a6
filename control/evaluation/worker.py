"""The evaluation worker: a lifespan task on every replica that claims runs and works on them.

A run is claimed with a conditional ``UPDATE`` (its lease free or expired), so two replicas never work on
one run; the holder renews the lease every ``progress_s`` (``RunJob._ticker``). A replica that dies stops
renewing, and the next worker to look takes the run over once ``lease_s`` has passed; a replica that stops
cleanly gives its leases back at once, so its successor resumes without waiting. Claimed: active runs
(queued, running, cancelling) and finished runs whose judging was asked for (``judge_status`` queued or
running). At most ``max_runs`` at a time per replica; a new run on this replica wakes the worker at once,
others find it within ``poll_s``. Before claiming, each pass looks at the ``waiting`` runs (``waiting``): one
whose model is served now is queued, and claimed in the same pass.

The worker owns the one aiohttp session and the service key (``ServiceCredential``) every gateway call uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
from sqlalchemy import and_, or_, select, update

from adapters.adminapi import ModuleContext
from adapters.store import StoreError, utcnow
from control.evaluation.credential import ServiceCredential
from control.evaluation.gateway_client import GatewayClient
from control.evaluation.job import LeaseLost, RunJob
from control.evaluation.runs import ACTIVE, RunService
from control.evaluation.settings import EvaluationSettings
from control.evaluation.tables import events, runs
from control.evaluation.waiting import release_waiting

__all__ = ["Worker"]

log = logging.getLogger("llmops.evaluation")


class Worker:
    def __init__(self, ctx: ModuleContext, service: RunService, settings: EvaluationSettings,
                 credential: ServiceCredential) -> None:
        self.ctx = ctx
        self.service = service
        self.settings = settings
        self.credential = credential
        self.owner = f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(3)}"
        self.jobs: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self.client: GatewayClient
        self._warm: asyncio.Future[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    def warm_up(self) -> None:
        """Import the metric libraries in a thread while the first run generates (sacrebleu, numpy, nltk
        through rouge-score: seconds), rather than at start-up, where every gateway would pay for them."""
        if self._warm is None:
            self._warm = asyncio.ensure_future(asyncio.to_thread(_import_metrics))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(total=self.settings.request_timeout_s, sock_connect=10)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
            self.client = GatewayClient(session, lambda: self.service.live_settings().gateway_url, self.credential,
                                        self.settings)
            loop = asyncio.create_task(self._loop(), name="evaluation-worker")
            try:
                yield
            finally:
                loop.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loop
                await self._stop_jobs()

    async def _loop(self) -> None:
        while True:
            try:
                await release_waiting(self.ctx, yaml_routes=self.service.live_settings().gateway_routes,
                                      wait_s=self.settings.route_wait_s, actor=f"worker:{self.owner}")
            except Exception as err:  # the database is down: look again later
                log.warning("evaluation worker: could not look at waiting runs (%s)", err)
            try:
                await self._claim()
            except Exception as err:  # the database is down: look again later
                log.warning("evaluation worker: could not look for runs (%s)", err)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_s)

    def _claimable(self, now: Any) -> Any:
        free = or_(runs.c.lease_until.is_(None), runs.c.lease_until < now)
        wanted = or_(runs.c.status.in_(ACTIVE), runs.c.judge_status.in_(("queued", "running")))
        return and_(wanted, free)

    async def _claim(self) -> None:
        room = self.settings.max_runs - len(self.jobs)
        if room <= 0:
            return
        now = utcnow()
        async with self.ctx.store.read() as conn:
            candidates = (await conn.execute(select(runs.c.id).where(
                self._claimable(now), runs.c.id.not_in(list(self.jobs) or [""]))
                .order_by(runs.c.created_at, runs.c.id).limit(room))).scalars().all()
        for run_id in candidates:
            now = utcnow()
            async with self.ctx.store.begin() as conn:
                taken = await conn.execute(update(runs).where(runs.c.id == run_id, self._claimable(now)).values(
                    lease_owner=self.owner, lease_until=now + timedelta(seconds=self.settings.lease_s)))
            if taken.rowcount:
                self.jobs[run_id] = asyncio.create_task(self._work(run_id), name=f"evaluation-run-{run_id}")

    async def _work(self, run_id: str) -> None:
        try:
            await self.credential.prepare()
            await RunJob(self, run_id).run()
        except (LeaseLost, asyncio.CancelledError):
            pass
        except Exception as err:
            await self._failed(run_id, err)
        finally:
            self.jobs.pop(run_id, None)
            self.wake()

    async def _failed(self, run_id: str, err: Exception) -> None:
        """A database error leaves the run to be taken over once the lease lapses; anything else is a bug,
        and fails the run (a retaken run would only fail again)."""
        if isinstance(err, StoreError):
            log.warning("evaluation run %s stopped by a database error (%s); it resumes later", run_id, err)
            return
        log.exception("evaluation run %s failed", run_id, exc_info=err)
        now = utcnow()
        with contextlib.suppress(Exception):
            async with self.ctx.store.begin() as conn:
                await conn.execute(update(runs).where(runs.c.id == run_id, runs.c.lease_owner == self.owner).values(
                    status="failed", error=f"internal error ({type(err).__name__}); see the server log",
                    finished_at=now, updated_at=now, lease_owner=None, lease_until=None))
                await conn.execute(events.insert().values(run_id=run_id, at=now, event="finished",
                                                          actor=f"worker:{self.owner}",
                                                          detail={"status": "failed", "error": type(err).__name__}))

    async def _stop_jobs(self) -> None:
        """Shutdown: stop every job (items in flight are dropped, not stored) and give the leases back."""
        jobs = list(self.jobs.values())
        for task in jobs:
            task.cancel()
        if jobs:
            _, stuck = await asyncio.wait(jobs, timeout=10)
            for task in stuck:
                log.error("evaluation worker: run task %s did not stop within 10 s", task.get_name())
        with contextlib.suppress(Exception):
            async with self.ctx.store.begin() as conn:
                await conn.execute(update(runs).where(runs.c.lease_owner == self.owner).values(
                    lease_owner=None, lease_until=None))


def _import_metrics() -> None:
    import importlib

    for name in ("control.evaluation.scoring", "rouge_score.rouge_scorer"):
        importlib.import_module(name)
