"""Restarts and replicas: a job is found again after a restart, never orphaned, never launched twice."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from adapters.adminapi.testing import AdminTestApp
from adapters.store import utcnow
from adapters.training.base import LaunchSpec
from control.training import TrainingModule
from control.training.supervisor import Supervisor
from control.training.tables import jobs
from tests.control.training.runtime_double import Cluster, FakeAttempt
from tests.control.training.support import (
    catalog_with_data,
    create,
    fast_settings,
    job,
    store_output,
    training_app,
    until,
)


def _sup(module: TrainingModule) -> Supervisor:
    assert module.supervisor is not None
    return module.supervisor


async def _leases(app: AdminTestApp) -> dict[str, Any]:
    store = app.plane.store
    assert store is not None
    async with store.read() as conn:
        return {r.id: r.lease_owner for r in await conn.execute(select(jobs.c.id, jobs.c.lease_owner))}


async def test_a_restarted_control_plane_adopts_a_running_job_and_finishes_it(database_url: str,
                                                                             tmp_path: Path) -> None:
    cluster = Cluster()
    catalog = catalog_with_data()
    async with training_app(database_url, tmp_path / "a", catalog=catalog, cluster=cluster) as (app, module):
        job_id = (await create(app))["id"]
        await _sup(module).sync_once()
        cluster.move(job_id, 1, "running")
        await _sup(module).sync_once()
        assert (await _leases(app))[job_id] == _sup(module).owner
    # a clean shutdown gave the lease back and left the attempt running
    assert cluster.cancels == [] and cluster.attempt(job_id, 1).phase == "running"
    async with training_app(database_url, tmp_path / "b", catalog=catalog, cluster=cluster) as (app, module):
        assert (await _leases(app))[job_id] is None
        await _sup(module).sync_once()
        assert _sup(module).followed == {job_id: 1}
        await store_output(app, job_id)
        cluster.move(job_id, 1, "succeeded", exit_code=0)
        await _sup(module).sync_once()
        done = await job(app, job_id)
    assert done["status"] == "succeeded" and len(cluster.submits) == 1 and len(catalog.registered) == 1
    adopted = [e for e in done["timeline"] if e["event"] == "adopted"]
    assert len(adopted) == 1 and adopted[0]["attempt"] == 1


async def test_a_dead_replicas_job_is_taken_over_once_its_lease_lapses(database_url: str, tmp_path: Path) -> None:
    cluster, catalog = Cluster(), catalog_with_data()
    async with training_app(database_url, tmp_path / "a", catalog=catalog, cluster=cluster) as (a, mod_a), \
            training_app(database_url, tmp_path / "b", catalog=catalog, cluster=cluster) as (_b, mod_b):
        job_id = (await create(a))["id"]
        await _sup(mod_a).sync_once()
        cluster.move(job_id, 1, "running")
        await _sup(mod_b).sync_once()
        assert _sup(mod_b).followed == {}  # a's lease is live
        store = a.plane.store
        assert store is not None
        async with store.begin() as conn:  # a stopped renewing lease_s ago
            await conn.execute(update(jobs).values(lease_until=utcnow() - timedelta(seconds=1)))
        await _sup(mod_b).sync_once()
        assert _sup(mod_b).followed == {job_id: 1}
        await _sup(mod_a).sync_once()  # a wakes up: the job is not its own any more, and it leaves it alone
        assert _sup(mod_a).followed == {} and (await _leases(a))[job_id] == _sup(mod_b).owner
        await store_output(a, job_id)
        cluster.move(job_id, 1, "succeeded", exit_code=0)
        await asyncio.gather(_sup(mod_a).sync_once(), _sup(mod_b).sync_once())
        done = await job(a, job_id)
        b_actor = _sup(mod_b).actor
    assert done["status"] == "succeeded" and len(catalog.registered) == 1 and len(cluster.submits) == 1
    assert [e["actor"] for e in done["timeline"] if e["event"] == "succeeded"] == [b_actor]


async def test_two_supervisors_never_both_launch_a_job(database_url: str, tmp_path: Path) -> None:
    cluster = Cluster()
    async with training_app(database_url, tmp_path / "a", cluster=cluster) as (a, mod_a), \
            training_app(database_url, tmp_path / "b", cluster=cluster) as (_b, mod_b):
        ids = [(await create(a, name=f"ft-{i}"))["id"] for i in range(6)]
        for _ in range(3):
            await asyncio.gather(_sup(mod_a).sync_once(), _sup(mod_b).sync_once())
        leases = await _leases(a)
        followed_a, followed_b = set(_sup(mod_a).followed), set(_sup(mod_b).followed)
        owners = {j: _sup(mod_a).owner if j in followed_a else _sup(mod_b).owner for j in ids}
    launched = [(s.job_id, s.attempt) for s in cluster.submits]
    assert sorted(launched) == sorted((j, 1) for j in ids)  # each once
    assert followed_a | followed_b == set(ids) and not followed_a & followed_b
    assert all(leases[j] == owners[j] for j in ids)


async def test_an_attempt_submitted_before_a_crash_is_adopted_not_submitted_again(database_url: str,
                                                                                 tmp_path: Path) -> None:
    cluster = Cluster()
    async with training_app(database_url, tmp_path, cluster=cluster) as (app, module):
        created = await create(app)
        job_id = created["id"]
        spec = LaunchSpec(job_id=job_id, job_name="ft-1", attempt=1, job_type="finetune", image="i", command=["x"])
        cluster.attempts[(job_id, 1)] = FakeAttempt(spec=spec, phase="running")  # the replica died right after
        await _sup(module).sync_once()
        found = await job(app, job_id)
    assert cluster.submits == []
    assert found["status"] == "running" and found["attempt"] == 1
    assert [e["reason"] for e in found["timeline"] if e["event"] == "scheduled"] == [
        "attempt 1 found on the runtime (adopted)"]


async def test_the_first_pass_cleans_up_what_finished_jobs_left_on_the_runtime(database_url: str,
                                                                              tmp_path: Path) -> None:
    cluster = Cluster()
    async with training_app(database_url, tmp_path / "a", cluster=cluster) as (app, module):
        done_id, failed_id, old_id = [(await create(app, name=f"ft-{i}"))["id"] for i in range(3)]
        await _sup(module).sync_once()
        for job_id in (done_id, failed_id, old_id):
            cluster.move(job_id, 1, "running")
        store = app.plane.store
        assert store is not None
        async with store.begin() as conn:  # as a crash in the middle of finishing them would leave them
            await conn.execute(update(jobs).where(jobs.c.id == done_id).values(status="succeeded", attempt=2))
            await conn.execute(update(jobs).where(jobs.c.id == failed_id).values(status="failed"))
            await conn.execute(update(jobs).where(jobs.c.id == old_id).values(attempt=2, status="retrying"))
    cluster.cancels.clear()
    async with training_app(database_url, tmp_path / "b", cluster=cluster) as (app, module):
        await _sup(module).sync_once()
    assert cluster.cleanups == [(done_id, 1)]  # an attempt before the one that succeeded
    assert sorted(cluster.cancels) == sorted([(failed_id, 1), (old_id, 1)])


async def test_shutdown_ends_the_supervisor_even_when_a_call_swallows_the_cancel(database_url: str,
                                                                                 tmp_path: Path) -> None:
    """PostgreSQL's driver may turn a cancel that lands mid-query into an error of its own; the supervisor's
    tasks still end (a stop flag, not the cancel alone), and shutdown gives the leases back."""
    cluster = Cluster()
    settings = fast_settings(sync_interval_s=0.05)
    async with asyncio.timeout(30):
        async with training_app(database_url, tmp_path, cluster=cluster, settings=settings,
                                background=True) as (app, module):
            job_id = (await create(app))["id"]
            await until(lambda: _followed(module, job_id))
            cluster.stall = True  # the next pass's status call hangs, and the shutdown's cancel lands in it
            await until(lambda: _stalled(module))
    async with training_app(database_url, tmp_path, cluster=cluster) as (app, _module):
        assert (await _leases(app))[job_id] is None


async def _followed(module: TrainingModule, job_id: str) -> bool:
    return job_id in _sup(module).followed


async def _stalled(module: TrainingModule) -> bool:
    before = _sup(module).passes
    await asyncio.sleep(0.2)  # several sync intervals: no pass completes while the status call hangs
    return _sup(module).passes == before
