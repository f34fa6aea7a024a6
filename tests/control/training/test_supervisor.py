"""The supervisor's state machine, pass by pass (``sync_once``) on a scripted runtime: launch, follow, register,
evaluate, retry with backoff, fail, deadline, cancel, a lost attempt."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from adapters.adminapi.testing import AdminTestApp
from adapters.store import utcnow
from adapters.training.base import RuntimeFailure
from control.training import TrainingModule
from control.training.supervisor import Supervisor
from control.training.tables import jobs, runs
from control.training.tokens import hash_token, job_for_token
from tests.control.training.runtime_double import Cluster
from tests.control.training.support import (
    API,
    API_BASE_URL,
    FakeEvaluation,
    catalog_with_data,
    create,
    fast_settings,
    job,
    log_lines,
    status_is,
    store_output,
    training_app,
    until,
)


def _sup(module: TrainingModule) -> Supervisor:
    assert module.supervisor is not None
    return module.supervisor


async def _row(app: AdminTestApp, job_id: str) -> Any:
    store = app.plane.store
    assert store is not None
    async with store.read() as conn:
        return (await conn.execute(select(jobs).where(jobs.c.id == job_id))).one()


async def _run_status(app: AdminTestApp, job_id: str) -> str:
    store = app.plane.store
    assert store is not None
    async with store.read() as conn:
        return str((await conn.execute(select(runs.c.status).where(runs.c.run_id == job_id))).scalar_one())


async def test_a_job_runs_is_registered_evaluated_and_cleaned_up(database_url: str, tmp_path: Path) -> None:
    catalog, cluster, evaluation = catalog_with_data(), Cluster(), FakeEvaluation("run_42")
    with log_lines() as logs:
        await _runs_and_registers(database_url, tmp_path, catalog, cluster, evaluation)
    [spec] = cluster.submits
    assert "the log capture works" in logs.text and spec.secret_env["LLMOPS_JOB_TOKEN"] not in logs.text


async def _runs_and_registers(database_url: str, tmp_path: Path, catalog: Any, cluster: Cluster,
                              evaluation: FakeEvaluation) -> None:
    async with training_app(database_url, tmp_path, catalog=catalog, cluster=cluster,
                            evaluation=evaluation) as (app, module):
        created = await create(app, hyperparameters={"steps": 20, "lr": 0.01}, env={"EXTRA": "1"})
        job_id = created["id"]
        await _sup(module).sync_once()
        scheduled = await job(app, job_id)
        assert scheduled["status"] == "scheduled" and scheduled["attempt"] == 1
        [spec] = cluster.submits
        token = spec.secret_env["LLMOPS_JOB_TOKEN"]
        assert spec.secret_env == {"LLMOPS_JOB_TOKEN": token, "MLFLOW_TRACKING_TOKEN": token}
        assert (await _row(app, job_id)).token_hash == hash_token(token)  # the attempt's token, stored hashed
        assert spec.command == ["python", "-m", "adapters.training.trainer"] and spec.job_name == "ft-1"
        assert spec.env["API_BASE_URL"] == API_BASE_URL and spec.env["LLMOPS_ATTEMPT"] == "1"
        assert spec.env["MLFLOW_TRACKING_URI"] == f"{API_BASE_URL}/training/mlflow"
        assert spec.env["MLFLOW_RUN_ID"] == job_id and spec.env["MLFLOW_EXPERIMENT_NAME"] == "ft-1"
        assert spec.env["LLMOPS_HYPERPARAMETERS"] == '{"lr":0.01,"steps":20}'  # sorted: the same on both databases
        assert spec.env["LLMOPS_BASE_MODEL_ID"] == "base-1" and spec.env["EXTRA"] == "1"
        assert token not in str(spec.env) and spec.resources.gpus_per_node == 0
        assert 86000 < (spec.deadline_s or 0) <= 86400

        cluster.move(job_id, 1, "running")
        await _sup(module).sync_once()
        assert (await job(app, job_id))["status"] == "running"
        assert await _run_status(app, job_id) == "RUNNING"

        await store_output(app, job_id)
        cluster.move(job_id, 1, "succeeded", exit_code=0)
        await _sup(module).sync_once()
        done = await job(app, job_id)
        assert done["status"] == "succeeded" and done["exitCode"] == 0 and done["reason"] is None
        assert done["resultModelId"] == f"model_{job_id}" and done["evaluationRunId"] == "run_42"
        [(registration, actor)] = catalog.registered
        assert registration.type == "fine-tuned" and registration.parent_model_id == "base-1"
        assert registration.dataset_id == "ds" and registration.dataset_version == 1
        assert registration.training_job_id == job_id and registration.format == "safetensors"
        assert sorted(f.name for f in registration.files) == ["config.json", "model.safetensors"]
        assert actor == created["createdBy"]
        assert evaluation.calls == [{"model_id": f"model_{job_id}", "trigger": f"training:{job_id}",
                                     "actor": created["createdBy"]}]
        events = [(e["event"], e["attempt"]) for e in done["timeline"]]
        assert events == [("queued", 0), ("scheduled", 1), ("running", 1), ("registered", 1),
                          ("evaluation_started", 1), ("succeeded", 1)]
        assert done["attempts"][0]["status"] == "succeeded" and done["attempts"][0]["exitCode"] == 0
        assert catalog.refs == set()  # the base model's reference went with the job
        assert cluster.cleanups == []  # the last attempt stays, for its logs
        assert await _run_status(app, job_id) == "FINISHED"
        store = app.plane.store
        assert store is not None
        async with store.read() as conn:
            assert await job_for_token(conn, token) is None  # a finished job's token is dead
        listed = (await app.client.get(f"{API}/jobs")).text + (await app.client.get(f"{API}/jobs/{job_id}")).text
        assert token not in listed
        logging.getLogger("llmops.training").info("the log capture works")


async def test_a_from_scratch_job_registers_a_base_model(database_url: str, tmp_path: Path) -> None:
    catalog, cluster = catalog_with_data(), Cluster()
    async with training_app(database_url, tmp_path, catalog=catalog, cluster=cluster) as (app, module):
        created = await create(app, name="scratch", jobType="from_scratch", baseModelId=None,
                               architecture={"layers": 2}, register={"name": "tiny", "tags": ["lm"]})
        await _sup(module).sync_once()
        assert "LLMOPS_BASE_MODEL_ID" not in cluster.submits[0].env
        assert cluster.submits[0].env["LLMOPS_ARCHITECTURE"] == '{"layers":2}'
        await store_output(app, created["id"], ("config.json", "model.safetensors", "tokenizer.json"))
        cluster.move(created["id"], 1, "succeeded", exit_code=0)
        await _sup(module).sync_once()
        done = await job(app, created["id"])
    assert done["status"] == "succeeded" and done["evaluationRunId"] is None  # no evaluation module here
    [(registration, _actor)] = catalog.registered
    assert registration.type == "base" and registration.parent_model_id is None
    assert registration.name == "tiny" and registration.tags == ["lm"]


async def test_a_failed_attempt_is_retried_after_its_backoff(database_url: str, tmp_path: Path) -> None:
    cluster = Cluster()
    async with training_app(database_url, tmp_path, cluster=cluster) as (app, module):
        created = await create(app, retryPolicy={"maxRetries": 2, "backoffS": 0.4, "backoffMaxS": 10})
        job_id = created["id"]
        await _sup(module).sync_once()
        cluster.move(job_id, 1, "failed", exit_code=1, reason="ProcessExited", message="exit status 1")
        await _sup(module).sync_once()
        retrying = await job(app, job_id)
        assert retrying["status"] == "retrying" and retrying["exitCode"] == 1
        assert retrying["reason"].startswith("ProcessExited (exit code 1)")
        waited = (await _row(app, job_id)).next_attempt_at - utcnow()
        assert timedelta(seconds=0.2) < waited <= timedelta(seconds=0.4)
        await _sup(module).sync_once()
        assert len(cluster.submits) == 1  # the backoff holds the next attempt back
        await asyncio.sleep(waited.total_seconds())
        await _sup(module).sync_once()
        again = await job(app, job_id)
        assert again["status"] == "scheduled" and again["attempt"] == 2
        first, second = cluster.submits
        assert second.attempt == 2 and second.env["LLMOPS_ATTEMPT"] == "2"
        assert second.secret_env["LLMOPS_JOB_TOKEN"] != first.secret_env["LLMOPS_JOB_TOKEN"]  # the old one is dead
        await store_output(app, job_id, attempt=2)
        cluster.move(job_id, 2, "succeeded", exit_code=0)
        await _sup(module).sync_once()
        done = await job(app, job_id)
    assert done["status"] == "succeeded" and done["attempt"] == 2
    # attempt 2 was first seen succeeded: it still ran, so the job passed through "running" (attempt 1 never did)
    assert [(e["status"], e["attempt"]) for e in done["timeline"] if e["status"]] == [
        ("queued", 0), ("scheduled", 1), ("retrying", 1), ("scheduled", 2), ("running", 2), ("succeeded", 2)]
    retry_event = next(e for e in done["timeline"] if e["status"] == "retrying")
    assert retry_event["detail"]["retryInS"] == 0.4 and "attempt 2 in 0.4 s" in retry_event["reason"]
    assert [(a["attempt"], a["status"], a["exitCode"]) for a in done["attempts"]] == [(1, "failed", 1),
                                                                                       (2, "succeeded", 0)]
    assert cluster.cleanups == [(job_id, 1)]  # the earlier attempt; the last keeps its logs


async def test_a_non_retryable_exit_code_fails_the_job_at_once(database_url: str, tmp_path: Path) -> None:
    catalog, cluster = catalog_with_data(), Cluster()
    async with training_app(database_url, tmp_path, catalog=catalog, cluster=cluster) as (app, module):
        job_id = (await create(app))["id"]
        await _sup(module).sync_once()
        cluster.move(job_id, 1, "failed", exit_code=2, reason="ProcessExited", message="no usable text")
        await _sup(module).sync_once()
        await _sup(module).sync_once()
        done = await job(app, job_id)
        assert await _run_status(app, job_id) == "FAILED"
    assert done["status"] == "failed" and done["exitCode"] == 2 and len(cluster.submits) == 1
    assert done["reason"].startswith("ProcessExited (exit code 2): no usable text")
    assert "exit code 2 is not retried" in done["reason"]
    assert catalog.refs == set() and catalog.registered == []
    assert cluster.cleanups == []  # a failed job's attempts stay, for their logs


async def test_retries_run_out(database_url: str, tmp_path: Path) -> None:
    cluster = Cluster()
    async with training_app(database_url, tmp_path, cluster=cluster) as (app, module):
        job_id = (await create(app, retryPolicy={"maxRetries": 1}))["id"]
        for attempt in (1, 2):
            await _sup(module).sync_once()
            cluster.move(job_id, attempt, "failed", exit_code=137, reason="OOMKilled")
            await _sup(module).sync_once()
        await _sup(module).sync_once()
        done = await job(app, job_id)
    assert done["status"] == "failed" and done["attempt"] == 2 and len(cluster.submits) == 2
    assert done["reason"].startswith("OOMKilled (exit code 137)") and "no retries left" in done["reason"]


async def test_an_attempt_seen_first_failed_ran_only_if_the_runtime_says_it_started(database_url: str,
                                                                                       tmp_path: Path) -> None:
    cluster = Cluster()
    async with training_app(database_url, tmp_path, cluster=cluster) as (app, module):
        job_id = (await create(app, retryPolicy={"maxRetries": 1}))["id"]
        await _sup(module).sync_once()
        cluster.move(job_id, 1, "failed", exit_code=1, reason="ProcessExited", started_at=time.time())
        await _sup(module).sync_once()
        await _sup(module).sync_once()
        cluster.move(job_id, 2, "failed", reason="ImagePullBackOff")  # its containers never started
        await _sup(module).sync_once()
        done = await job(app, job_id)
    assert done["status"] == "failed" and len(cluster.submits) == 2
    assert [(e["status"], e["attempt"]) for e in done["timeline"] if e["status"]] == [
        ("queued", 0), ("scheduled", 1), ("running", 1), ("retrying", 1), ("scheduled", 2), ("failed", 2)]


async def test_a_lost_attempt_counts_as_a_failed_one(database_url: str, tmp_path: Path) -> None:
    cluster = Cluster()
    async with training_app(database_url, tmp_path, cluster=cluster) as (app, module):
        job_id = (await create(app, retryPolicy={"backoffS": 0.2, "backoffMaxS": 1}))["id"]
        await _sup(module).sync_once()
        cluster.move(job_id, 1, "running")
        await _sup(module).sync_once()
        cluster.lose(job_id, 1)
        await _sup(module).sync_once()
        lost = await job(app, job_id)
        assert lost["status"] == "retrying" and lost["reason"].startswith("Lost: the runtime has no trace")
        await asyncio.sleep(0.2)
        await _sup(module).sync_once()
        assert (await job(app, job_id))["attempt"] == 2 and len(cluster.submits) == 2


async def test_a_pending_reason_is_shown_while_scheduled(database_url: str, tmp_path: Path) -> None:
    cluster = Cluster()
    async with training_app(database_url, tmp_path, cluster=cluster) as (app, module):
        job_id = (await create(app))["id"]
        await _sup(module).sync_once()
        cluster.move(job_id, 1, "pending", reason="ImagePullBackOff", message="Back-off pulling image")
        await _sup(module).sync_once()
        await _sup(module).sync_once()  # said once, not at every pass
        pending = await job(app, job_id)
    assert pending["status"] == "scheduled" and pending["reason"] == "ImagePullBackOff"
    said = [e for e in pending["timeline"] if e["event"] == "pending"]
    assert len(said) == 1 and said[0]["detail"] == {"message": "Back-off pulling image"}


async def test_the_deadline_stops_the_attempt_and_fails_the_job(database_url: str, tmp_path: Path) -> None:
    cluster = Cluster()
    async with training_app(database_url, tmp_path, cluster=cluster) as (app, module):
        job_id = (await create(app, deadlineS=60))["id"]
        await _sup(module).sync_once()
        assert 50 < (cluster.submits[0].deadline_s or 0) <= 60  # the attempt is told what is left
        cluster.move(job_id, 1, "running")
        store = app.plane.store
        assert store is not None
        async with store.begin() as conn:  # a minute later
            await conn.execute(update(jobs).where(jobs.c.id == job_id).values(
                deadline_at=utcnow() - timedelta(seconds=1)))
        await _sup(module).sync_once()
        done = await job(app, job_id)
    assert done["status"] == "failed" and done["reason"].startswith("DeadlineExceeded")
    assert cluster.cancels == [(job_id, 1)]


async def test_no_retry_starts_after_the_deadline(database_url: str, tmp_path: Path) -> None:
    cluster = Cluster()
    async with training_app(database_url, tmp_path, cluster=cluster) as (app, module):
        job_id = (await create(app, deadlineS=10, retryPolicy={"backoffS": 30, "backoffMaxS": 30}))["id"]
        await _sup(module).sync_once()
        cluster.move(job_id, 1, "failed", exit_code=1, reason="ProcessExited")
        await _sup(module).sync_once()
        done = await job(app, job_id)
    assert done["status"] == "failed" and done["reason"].startswith("DeadlineExceeded: ProcessExited")
    assert len(cluster.submits) == 1


async def test_cancel_a_queued_job_at_once(database_url: str, tmp_path: Path) -> None:
    catalog, cluster = catalog_with_data(), Cluster()
    async with training_app(database_url, tmp_path, catalog=catalog, cluster=cluster) as (app, module):
        job_id = (await create(app))["id"]
        resp = await app.client.post(f"{API}/jobs/{job_id}/cancel")
        assert resp.status_code == 200, resp.text
        assert resp.json()["data"]["status"] == "cancelled" and resp.json()["message"] == "Job cancelled"
        await _sup(module).sync_once()
        assert cluster.submits == []
        assert await _run_status(app, job_id) == "KILLED"
        again = await app.client.post(f"{API}/jobs/{job_id}/cancel")
        assert again.status_code == 200 and "already" in again.json()["message"]
    assert catalog.refs == set()


async def test_cancel_a_running_job_stops_its_attempt(database_url: str, tmp_path: Path) -> None:
    cluster = Cluster()
    async with training_app(database_url, tmp_path, cluster=cluster) as (app, module):
        job_id = (await create(app))["id"]
        await _sup(module).sync_once()
        cluster.move(job_id, 1, "running")
        await _sup(module).sync_once()
        resp = await app.client.post(f"{API}/jobs/{job_id}/cancel")
        assert resp.status_code == 200, resp.text
        body = resp.json()["data"]
        assert body["status"] == "running" and body["cancelRequested"] is True
        await _sup(module).sync_once()
        done = await job(app, job_id)
        assert await _run_status(app, job_id) == "KILLED"
        finished = await app.client.post(f"{API}/jobs/{job_id}/cancel")
        assert finished.status_code == 200  # already cancelled: answered as it is
    assert done["status"] == "cancelled" and done["reason"].startswith("Cancelled")
    assert cluster.cancels == [(job_id, 1)] and cluster.attempt(job_id, 1).phase == "failed"
    assert [e["event"] for e in done["timeline"]][-2:] == ["cancel_requested", "cancelled"]


async def test_a_runtime_that_is_down_leaves_the_job_queued_and_a_refusal_fails_it(database_url: str,
                                                                                   tmp_path: Path) -> None:
    cluster = Cluster(refusals=[RuntimeFailure("connection refused", retryable=True),
                                RuntimeFailure("connection refused", retryable=True)])
    async with training_app(database_url, tmp_path, cluster=cluster) as (app, module):
        job_id = (await create(app))["id"]
        await _sup(module).sync_once()
        waiting = await job(app, job_id)
        assert waiting["status"] == "queued" and waiting["reason"] == "LaunchFailed: connection refused"
        store = app.plane.store
        assert store is not None
        async with store.begin() as conn:
            await conn.execute(update(jobs).values(next_attempt_at=utcnow()))
        await _sup(module).sync_once()
        async with store.begin() as conn:
            await conn.execute(update(jobs).values(next_attempt_at=utcnow()))
        await _sup(module).sync_once()
        up = await job(app, job_id)
        assert up["status"] == "scheduled" and up["attempt"] == 1
        assert [e["event"] for e in up["timeline"]].count("launch_failed") == 1  # said once per reason
        cluster.refusals.append(RuntimeFailure("forbidden: quota exceeded"))
        other = (await create(app, name="ft-2"))["id"]
        await _sup(module).sync_once()
        refused = await job(app, other)
    assert refused["status"] == "failed" and refused["reason"] == "RuntimeRefused: forbidden: quota exceeded"


@pytest.mark.parametrize("names, why", [((), "NoOutput: the job stored nothing under output/"),
                                        (("model.safetensors",), "NoOutput: output/ holds safetensors weights but "
                                                                 "no config.json")])
async def test_success_without_a_model_fails_no_output(database_url: str, tmp_path: Path, names: tuple[str, ...],
                                                       why: str) -> None:
    catalog, cluster = catalog_with_data(), Cluster()
    async with training_app(database_url, tmp_path, catalog=catalog, cluster=cluster) as (app, module):
        job_id = (await create(app))["id"]
        await _sup(module).sync_once()
        await store_output(app, job_id, names)
        cluster.move(job_id, 1, "succeeded", exit_code=0)
        await _sup(module).sync_once()
        done = await job(app, job_id)
    assert done["status"] == "failed" and done["reason"] == why and catalog.registered == []


async def test_a_refused_registration_fails_the_job_and_a_refused_evaluation_does_not(database_url: str,
                                                                                      tmp_path: Path) -> None:
    catalog, cluster, evaluation = catalog_with_data(), Cluster(), FakeEvaluation()
    evaluation.refuse = "model 'x' is not served by any route"
    catalog.refuse_registration = "config.json is missing"
    async with training_app(database_url, tmp_path, catalog=catalog, cluster=cluster,
                            evaluation=evaluation) as (app, module):
        bad, good = (await create(app))["id"], (await create(app, name="ft-2"))["id"]
        await _sup(module).sync_once()
        for job_id in (bad, good):
            await store_output(app, job_id)
        cluster.move(bad, 1, "succeeded", exit_code=0)
        await _sup(module).sync_once()
        catalog.refuse_registration = None
        cluster.move(good, 1, "succeeded", exit_code=0)
        await _sup(module).sync_once()
        failed, succeeded = await job(app, bad), await job(app, good)
    assert failed["status"] == "failed" and failed["reason"] == "RegistrationFailed: config.json is missing"
    assert succeeded["status"] == "succeeded" and succeeded["evaluationRunId"] is None
    note = next(e for e in succeeded["timeline"] if e["event"] == "evaluation_failed")
    assert "not served by any route" in note["reason"]


async def test_at_most_max_concurrent_jobs_run_here(database_url: str, tmp_path: Path) -> None:
    cluster = Cluster()
    async with training_app(database_url, tmp_path, cluster=cluster,
                            settings=fast_settings(max_concurrent_jobs=2)) as (app, module):
        ids = [(await create(app, name=f"ft-{i}"))["id"] for i in range(3)]
        await _sup(module).sync_once()
        assert [s.job_id for s in cluster.submits] == ids[:2]  # oldest first
        assert (await job(app, ids[2]))["status"] == "queued"
        cluster.move(ids[0], 1, "failed", exit_code=2)
        await _sup(module).sync_once()
        assert [s.job_id for s in cluster.submits] == ids


async def test_the_watch_and_wake_move_jobs_without_waiting_for_a_poll(database_url: str, tmp_path: Path) -> None:
    cluster = Cluster()
    settings = fast_settings(sync_interval_s=30)  # only the first pass, wake() and the watch can do it
    async with training_app(database_url, tmp_path, cluster=cluster, settings=settings,
                            background=True) as (app, module):
        await until(lambda: _passes(module))  # the first pass has run: from now on only wake() and the watch
        job_id = (await create(app))["id"]
        await status_is(app, job_id, "scheduled", within_s=5)
        cluster.move(job_id, 1, "running")
        await status_is(app, job_id, "running", within_s=5)
        await store_output(app, job_id)
        cluster.move(job_id, 1, "succeeded", exit_code=0)
        done = await status_is(app, job_id, "succeeded", within_s=5)
        assert done["resultModelId"] == f"model_{job_id}"
        other = (await create(app, name="ft-2"))["id"]
        await status_is(app, other, "scheduled", within_s=5)
        await app.client.post(f"{API}/jobs/{other}/cancel")
        await status_is(app, other, "cancelled", within_s=5)
        await until(lambda: _no_lease(app, other), within_s=5)


async def _passes(module: TrainingModule) -> int:
    return _sup(module).passes


async def _no_lease(app: AdminTestApp, job_id: str) -> bool:
    return (await _row(app, job_id)).lease_owner is None


async def test_logs_come_from_the_runtime_with_tokens_scrubbed(database_url: str, tmp_path: Path) -> None:
    cluster = Cluster()
    async with training_app(database_url, tmp_path, cluster=cluster) as (app, module):
        job_id = (await create(app))["id"]
        early = await app.client.get(f"{API}/jobs/{job_id}/logs")
        assert early.status_code == 409, early.text
        await _sup(module).sync_once()
        token = cluster.submits[0].secret_env["LLMOPS_JOB_TOKEN"]
        cluster.attempt(job_id, 1).logs = f"step 1 loss 2.0\nLLMOPS_JOB_TOKEN={token}\nstep 2 loss 1.5"
        resp = await app.client.get(f"{API}/jobs/{job_id}/logs", params={"tailLines": 2})
        assert resp.status_code == 200, resp.text
        assert resp.json()["data"] == {"jobId": job_id, "attempt": 1,
                                       "logs": "LLMOPS_JOB_TOKEN=ljt_[redacted]\nstep 2 loss 1.5"}
        missing = await app.client.get(f"{API}/jobs/{job_id}/logs", params={"attempt": 2})
        assert missing.status_code == 404, missing.text


async def test_an_unreachable_runtime_changes_nothing_until_it_is_back(database_url: str, tmp_path: Path) -> None:
    cluster = Cluster(down=True)
    with log_lines() as logs:
        await _down_then_up(database_url, tmp_path, cluster)
    assert "the runtime failed (connection refused)" in logs.text and "Traceback" not in logs.text


async def _down_then_up(database_url: str, tmp_path: Path, cluster: Cluster) -> None:
    async with training_app(database_url, tmp_path, cluster=cluster) as (app, module):
        job_id = (await create(app))["id"]
        await _sup(module).sync_once()  # the first pass cannot list the runtime's attempts, nor launch
        waiting = await job(app, job_id)
        assert waiting["status"] == "queued" and waiting["reason"].startswith("LaunchFailed: the runtime did not")
        cluster.down = False
        store = app.plane.store
        assert store is not None
        async with store.begin() as conn:
            await conn.execute(update(jobs).values(next_attempt_at=utcnow()))
        await _sup(module).sync_once()
        cluster.move(job_id, 1, "running")
        cluster.down = True
        await app.client.post(f"{API}/jobs/{job_id}/cancel")
        await _sup(module).sync_once()  # neither the status nor the cancel gets through
        stuck = await job(app, job_id)
        assert stuck["status"] == "scheduled" and stuck["cancelRequested"] is True
        assert (await _row(app, job_id)).lease_owner == _sup(module).owner
        cluster.down = False
        await _sup(module).sync_once()
        done = await job(app, job_id)
    assert done["status"] == "cancelled" and cluster.cancels == [(job_id, 1)]
