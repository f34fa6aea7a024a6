"""Issue 14 end to end on the embedded default: a real ``llmops serve`` (SQLite, the local object store,
``LocalTrainingRuntime``) running the reference trainer, driven over HTTP as an operator and the ``mlflow``
client would.

* A dataset is uploaded; a ``from_scratch`` job trains a model the catalog then holds as a draft ``base``
  model; once approved, a ``finetune`` of it runs, its loss falls (seen through ``GET experiments`` and
  through ``MlflowClient``), and the result is a ``fine-tuned`` catalog model with its lineage: parent,
  dataset version, training job, files in the object store. The evaluation its base's gate configures waits
  for the draft to be served, and runs by itself once it is deployed to DEV.
* Failures: an attempt that fails once and is retried from its checkpoint; an exit code the policy does not
  retry; a cancel while running (no process of the job is left); the control plane SIGKILLed while a job
  runs, and the job found again by the next one and finished, not orphaned.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadtests.eval_bench import data, upload_dataset
from loadtests.serving_bench import approve
from loadtests.training_live import (
    ADMIN_KEY,
    ARCH,
    TERMINAL,
    TrainingServer,
    explain,
    get_job,
    job_processes,
    losses,
    running_server,
    submit,
    until,
)
from loadtests.training_live import cat_rows as rows

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TrainingServer]:
    with running_server(tmp_path) as srv:
        yield srv
    logs = srv.logs()
    assert "Traceback" not in logs, logs[-4000:]
    assert "ljt_" not in logs  # no job token in any log line


def _job_processes(job_id: str) -> list[int]:
    return sorted(job_processes(job_id))


def finished(admin: httpx.Client, job_id: str, within_s: float = 90) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job = get_job(admin, job_id)
        return job if job["status"] in TERMINAL else None

    return dict(until(done, within_s, f"job {job_id} finished", poll_s=0.2))


def job_status(admin: httpx.Client, job_id: str) -> str:
    return str(get_job(admin, job_id)["status"])


def events(job: dict[str, Any]) -> list[str]:
    return [e["event"] for e in job["timeline"]]


def evaluation_finished(admin: httpx.Client, run_id: str) -> dict[str, Any] | None:
    run: dict[str, Any] = data(admin.get(f"/evaluation/runs/{run_id}"))
    return run if run["status"] in TERMINAL else None


def test_a_fine_tune_of_a_locally_trained_model_lands_in_the_catalog_with_lineage(
        server: TrainingServer, monkeypatch: pytest.MonkeyPatch) -> None:
    with server.admin() as admin:
        dataset = upload_dataset(admin, "cats", rows(200), owner_team="ml")
        scratch = submit(admin, name="cats-base", jobType="from_scratch", architecture=ARCH,
                         dataset={"datasetId": dataset}, hyperparameters={"steps": 150, "seed": 1})
        base_job = finished(admin, scratch)
        assert base_job["status"] == "succeeded", explain(admin, base_job)
        base_id = base_job["resultModelId"]
        base = data(admin.get(f"/catalog/models/{base_id}"))
        assert (base["type"], base["status"], base["trainingJobId"]) == ("base", "draft", scratch)
        # a draft cannot be fine-tuned: the catalog's approval comes first
        refused = admin.post("/training/jobs", json={"name": "too-early", "jobType": "finetune",
                                                     "baseModelId": base_id, "dataset": {"datasetId": dataset}})
        assert refused.status_code == 422 and "baseModelId" in refused.text, refused.text
        approve(admin, base_id)
        # an evaluation configured on the base applies to its fine-tunes (the gate is inherited along lineage)
        auto = {"name": "cats-suite", "targets": [{"kind": "route", "id": "demo"}], "dataset": {"datasetId": dataset},
                "mapping": {"input": "prompt", "reference": "completion"}}
        data(admin.put(f"/evaluation/gates/model/{base_id}", json={"autoEvaluate": auto}))

        job_id = submit(admin, name="cats-tuned", jobType="finetune", baseModelId=base_id,
                        dataset={"datasetId": dataset, "version": 1},
                        hyperparameters={"steps": 300, "logEvery": 10, "sleepPerStep": 0.01},
                        register={"name": "cats-tuned", "tags": ["e2e"]})
        # live: the loss is visible through the API while the job still runs
        seen_running = until(lambda: job_status(admin, job_id) == "running" and len(losses(admin, job_id)) >= 3,
                             60, "loss points while running")
        assert seen_running
        job = finished(admin, job_id)
        assert job["status"] == "succeeded", explain(admin, job)
        assert events(job)[:1] == ["queued"] and {"scheduled", "running", "succeeded"} <= set(events(job))
        # the new draft is served by no route yet: its evaluation run exists at once and waits for it to be served
        run_id = job["evaluationRunId"]
        assert run_id and "evaluation_started" in events(job), explain(admin, job)
        waiting = data(admin.get(f"/evaluation/runs/{run_id}"))
        assert waiting["status"] == "waiting", waiting
        assert waiting["targets"] == [{"kind": "model", "id": job["resultModelId"], "route": None}]
        curve = losses(admin, job_id)
        assert len(curve) >= 10 and curve[-1] < curve[0] * 0.8, curve

        # the same numbers through the real mlflow client, as any MLflow user would read them
        from mlflow.tracking import MlflowClient

        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", ADMIN_KEY)
        client = MlflowClient(tracking_uri=f"{server.url}/llm-ops/v1/training/mlflow")
        history = sorted(client.get_metric_history(job_id, "train_loss"), key=lambda m: m.step)
        assert [m.value for m in history] == pytest.approx(curve)
        run = client.get_run(job_id)
        assert run.info.status == "FINISHED" and run.data.params["steps"] == "300"

        # the result: a fine-tuned draft with its parent, dataset version, training job and files
        model_id = job["resultModelId"]
        model = data(admin.get(f"/catalog/models/{model_id}"))
        assert (model["name"], model["type"], model["status"]) == ("cats-tuned", "fine-tuned", "draft")
        assert model["parentModelId"] == base_id and model["trainingJobId"] == job_id
        assert model["trainingDatasets"] == [{"datasetId": dataset, "version": 1}] and model["tags"] == ["e2e"]
        lineage = data(admin.get(f"/catalog/models/{model_id}/lineage"))
        assert [a["id"] for a in lineage["ancestors"]] == [base_id]
        assert lineage["ancestors"][0]["trainingJobId"] == scratch
        files = data(admin.get(f"/catalog/models/{model_id}/files"))
        names = {f["filename"] for f in files["files"]}
        assert names == {"model.safetensors", "config.json"} and files["complete"], files
        assert all(f["sizeBytes"] > 0 for f in files["files"])
        stored = list((server.workdir / ".llmops").rglob("model.safetensors"))
        assert any(job_id in str(p) for p in stored), stored
        listed = data(admin.get("/training/jobs", params={"modelId": base_id}))
        assert job_id in [j["id"] for j in listed["items"]]

        # deployed to DEV (the local serving runtime answers with the mock upstream, a test double), the waiting
        # evaluation finds the endpoint's route and runs by itself
        endpoint = data(admin.post("/serving/endpoints", json={"name": "cats-tuned-dev", "modelId": model_id,
                                                               "environment": "DEV", "useGpu": False}), 201)
        done = until(lambda: evaluation_finished(admin, run_id), 120, f"evaluation run {run_id} finished", poll_s=0.3)
        assert done["status"] == "succeeded", done
        assert done["targets"] == [{"kind": "model", "id": model_id, "route": endpoint["route"]}]
        assert [e["event"] for e in done["timeline"]][:3] == ["created", "waiting_for_route", "route_found"]
        assert done["progress"]["done"] == done["progress"]["total"] > 0


def test_retries_a_non_retryable_exit_and_cancel(server: TrainingServer) -> None:
    with server.admin() as admin:
        dataset = upload_dataset(admin, "cats", rows(120), owner_team="ml")
        common = {"jobType": "from_scratch", "architecture": ARCH, "dataset": {"datasetId": dataset}}
        flaky = submit(admin, name="flaky", **common, hyperparameters={
            "steps": 120, "checkpointEvery": 40, "failAtStep": 90, "failOnAttempts": 1},
            retryPolicy={"maxRetries": 2, "backoffS": 0.5})
        broken = submit(admin, name="broken", **common, hyperparameters={
            "steps": 120, "failAtStep": 10, "exitCode": 2}, retryPolicy={"maxRetries": 3})
        slow = submit(admin, name="slow", **common, hyperparameters={"steps": 100000, "sleepPerStep": 0.02})

        until(lambda: job_status(admin, slow) == "running" and _job_processes(slow), 60, "the slow job running")
        cancelled = data(admin.post(f"/training/jobs/{slow}/cancel"))
        assert cancelled["status"] in ("running", "cancelled")
        slow_job = finished(admin, slow, 30)
        assert slow_job["status"] == "cancelled" and events(slow_job)[-1] == "cancelled"
        until(lambda: not _job_processes(slow), 10, "no process of the cancelled job")
        assert data(admin.post(f"/training/jobs/{slow}/cancel"))["status"] == "cancelled"  # idempotent

        flaky_job = finished(admin, flaky)
        assert flaky_job["status"] == "succeeded" and flaky_job["attempt"] == 2, explain(admin, flaky_job)
        assert "retrying" in events(flaky_job)
        assert admin.post(f"/training/jobs/{flaky}/cancel").status_code == 409  # finished: nothing to cancel
        attempts = flaky_job["attempts"]
        assert [a["status"] for a in attempts] == ["failed", "succeeded"] and attempts[0]["exitCode"] == 1
        # attempt 2 resumed from the step-80 checkpoint (its log says so) and reported to the end
        exp = data(admin.get(f"/training/experiments/{flaky}", params={"keys": "train_loss"}))
        assert max(p["step"] for p in exp["metrics"]["train_loss"]) >= 110
        logs = data(admin.get(f"/training/jobs/{flaky}/logs", params={"attempt": 2}))
        assert "step-80" in str(logs), logs

        broken_job = finished(admin, broken)
        assert (broken_job["status"], broken_job["attempt"], broken_job["exitCode"]) == ("failed", 1, 2)
        assert "retrying" not in events(broken_job)


def test_a_job_survives_the_control_plane_being_killed(server: TrainingServer) -> None:
    with server.admin() as admin:
        dataset = upload_dataset(admin, "cats", rows(120), owner_team="ml")
        job_id = submit(admin, name="survivor", jobType="from_scratch", architecture=ARCH,
                        dataset={"datasetId": dataset},
                        hyperparameters={"steps": 300, "sleepPerStep": 0.02, "checkpointEvery": 100})
        until(lambda: job_status(admin, job_id) == "running" and len(losses(admin, job_id)) >= 2, 60,
              "the job running and reporting")
    trainers = _job_processes(job_id)
    assert trainers
    server.kill()
    assert _job_processes(job_id) == trainers  # the attempt outlives the control plane
    server.start()  # same database, same data directory, same port
    with server.admin() as admin:
        job = finished(admin, job_id, 120)
        assert job["status"] == "succeeded", explain(admin, job)
        assert job["resultModelId"]
    assert not _job_processes(job_id)
