"""GET training/jobs (paging, filters), GET one, and the 404s and 409s of the jobs API."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select, update

from adapters.adminapi.tables import audit_log
from control.training.tables import jobs
from tests.control.training.runtime_double import Cluster
from tests.control.training.support import API, FakeCatalog, create, job, store_output, training_app


async def test_list_filters_by_status_type_and_model(database_url: str, tmp_path: Path) -> None:
    catalog = FakeCatalog()
    catalog.add_model("base-1")
    catalog.add_model("base-2")
    catalog.add_dataset("ds", v1="ready")
    cluster = Cluster()
    async with training_app(database_url, tmp_path, catalog=catalog, cluster=cluster) as (app, module):
        ft1 = (await create(app, name="ft-1"))["id"]
        ft2 = (await create(app, name="ft-2", baseModelId="base-2"))["id"]
        scratch = (await create(app, name="scratch", jobType="from_scratch", baseModelId=None,
                                architecture={"layers": 1}))["id"]
        assert module.supervisor is not None
        await module.supervisor.sync_once()
        await store_output(app, ft1)
        cluster.move(ft1, 1, "succeeded", exit_code=0)
        await module.supervisor.sync_once()
        await app.client.post(f"{API}/jobs/{scratch}/cancel")
        await module.supervisor.sync_once()

        async def ids(**params: str | int) -> list[str]:
            resp = await app.client.get(f"{API}/jobs", params=params)
            assert resp.status_code == 200, resp.text
            return [j["id"] for j in resp.json()["data"]["items"]]

        assert await ids() == [scratch, ft2, ft1]  # newest first
        assert await ids(status="succeeded") == [ft1]
        assert await ids(status="scheduled") == [ft2]
        assert await ids(jobType="from_scratch") == [scratch]
        assert await ids(modelId="base-2") == [ft2]
        assert await ids(modelId=f"model_{ft1}") == [ft1]  # the model a job produced
        assert await ids(modelId="base-1") == [ft1]
        assert await ids(jobType="finetune", status="cancelled") == []
        assert await ids(jobType="from_scratch", status="cancelled") == [scratch]
        page = (await app.client.get(f"{API}/jobs", params={"pageSize": 2, "page": 2})).json()["data"]
        assert page["total"] == 3 and [j["id"] for j in page["items"]] == [ft1]
        listed = page["items"][0]
        assert listed["timeline"] is None and listed["attempts"][0]["status"] == "succeeded"
        bad = await app.client.get(f"{API}/jobs", params={"status": "sleeping"})
        assert bad.status_code == 400 and bad.json()["data"]["errors"][0]["field"] == "status"


async def test_unknown_jobs_are_404s_and_finished_ones_cannot_be_cancelled(database_url: str,
                                                                           tmp_path: Path) -> None:
    async with training_app(database_url, tmp_path) as (app, _module):
        for method, path in [("GET", "jobs/job_nope"), ("POST", "jobs/job_nope/cancel"),
                             ("GET", "jobs/job_nope/logs")]:
            resp = await app.client.request(method, f"{API}/{path}")
            assert resp.status_code == 404, (path, resp.text)
            assert resp.json()["status"] == "fail" and "job_nope" in resp.json()["message"]
        job_id = (await create(app))["id"]
        store = app.plane.store
        assert store is not None
        async with store.begin() as conn:
            await conn.execute(update(jobs).where(jobs.c.id == job_id).values(status="succeeded"))
        resp = await app.client.post(f"{API}/jobs/{job_id}/cancel")
        assert resp.status_code == 409 and resp.json()["data"] == {"status": "succeeded"}, resp.text
        assert (await job(app, job_id))["status"] == "succeeded"


async def test_cancel_is_audited_with_before_and_after(database_url: str, tmp_path: Path) -> None:
    async with training_app(database_url, tmp_path) as (app, _module):
        job_id = (await create(app))["id"]
        await app.client.post(f"{API}/jobs/{job_id}/cancel")
        store = app.plane.store
        assert store is not None
        async with store.read() as conn:
            entry = (await conn.execute(select(audit_log).where(audit_log.c.action == "training.job.cancel"))).one()
    assert entry.resource_id == job_id and entry.before["status"] == "queued"
    assert entry.after["status"] == "cancelled"


async def test_a_job_being_launched_is_cancelled_by_its_supervisor(database_url: str, tmp_path: Path) -> None:
    """A queued job whose lease is live (a supervisor is submitting it) is not ended under it."""
    cluster = Cluster()
    async with training_app(database_url, tmp_path, cluster=cluster) as (app, module):
        job_id = (await create(app))["id"]
        assert module.supervisor is not None
        assert await module.supervisor.claim(job_id, ("queued",))
        resp = await app.client.post(f"{API}/jobs/{job_id}/cancel")
        assert resp.json()["data"]["status"] == "queued" and resp.json()["data"]["cancelRequested"] is True
        await module.supervisor.sync_once()
        done = await job(app, job_id)
    assert done["status"] == "cancelled" and cluster.submits == []
