"""The real ``mlflow`` client (mlflow-skinny) against the control plane on a loopback socket, both databases.

The client is synchronous (``requests``), so its calls run in a thread while the app serves in the test's loop.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException, RestException
from mlflow.tracking import fluent

from adapters.adminapi.testing import AdminTestApp
from tests.control.training.tracking.support import add_job, make_key, tracking_app

T = TypeVar("T")


@pytest.fixture
async def app(database_url: str, tmp_path: Path) -> AsyncIterator[AdminTestApp]:
    async with tracking_app(database_url, tmp_path, real_socket=True) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The client keeps its tracking URI, active experiment and run stack in globals: start and end clean."""
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "MLFLOW_TRACKING_USERNAME",
                 "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a refusal is an answer, not an outage
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()
    fluent._active_experiment_id = None
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # None: back to the environment's


def _use(monkeypatch: pytest.MonkeyPatch, app: AdminTestApp, token: str) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"{app.url}/llm-ops/v1/training/mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
    mlflow.set_tracking_uri(f"{app.url}/llm-ops/v1/training/mlflow")


async def _run(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


async def test_a_free_standing_run_with_an_admin_key(app: AdminTestApp, monkeypatch: pytest.MonkeyPatch) -> None:
    _use(monkeypatch, app, await make_key(app, "developer"))

    def train() -> str:
        mlflow.set_experiment("free-standing")
        with mlflow.start_run(run_name="baseline") as run:
            mlflow.log_param("lr", 0.01)
            mlflow.log_params({"batch": 8, "optimizer": "adamw"})
            for step in range(5):
                mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
            mlflow.log_metrics({"eval_loss": 0.7, "grad_norm": math.nan, "big": math.inf}, step=4)
            mlflow.set_tag("stage", "test")
            return run.info.run_id

    run_id = await _run(train)
    client = MlflowClient()
    run = await _run(lambda: client.get_run(run_id))
    assert run.info.status == "FINISHED" and run.info.end_time >= run.info.start_time
    assert run.info.run_name == "baseline" and run.info.lifecycle_stage == "active"
    assert run.data.params == {"lr": "0.01", "batch": "8", "optimizer": "adamw"}
    assert run.data.tags["stage"] == "test" and run.data.tags["mlflow.runName"] == "baseline"
    assert run.data.metrics["loss"] == 0.2 and run.data.metrics["eval_loss"] == 0.7
    assert math.isnan(run.data.metrics["grad_norm"]) and run.data.metrics["big"] == math.inf
    history = await _run(lambda: client.get_metric_history(run_id, "loss"))
    assert [(m.step, m.value) for m in history] == [(s, 1.0 / (s + 1)) for s in range(5)]

    experiment = await _run(lambda: client.get_experiment_by_name("free-standing"))
    assert experiment is not None
    found = await _run(lambda: client.search_runs([experiment.experiment_id], "metrics.loss < 0.5"))
    assert [r.info.run_id for r in found] == [run_id]
    assert await _run(lambda: client.search_runs([experiment.experiment_id], "metrics.loss > 0.5")) == []
    found = await _run(lambda: client.search_runs([experiment.experiment_id],
                                                  "attributes.status = 'FINISHED' and tags.stage = 'test'",
                                                  order_by=["metrics.loss DESC"]))
    assert [r.info.run_id for r in found] == [run_id]


async def test_search_orders_and_pages(app: AdminTestApp, monkeypatch: pytest.MonkeyPatch) -> None:
    _use(monkeypatch, app, await make_key(app, "developer"))
    client = MlflowClient()

    def make_runs() -> tuple[str, list[str]]:
        experiment_id = client.create_experiment("paged")
        ids = []
        for i in range(5):
            run = client.create_run(experiment_id, run_name=f"r{i}")
            client.log_metric(run.info.run_id, "acc", float(i), step=0)
            client.log_param(run.info.run_id, "i", str(i))
            client.set_terminated(run.info.run_id, "FAILED" if i == 2 else "FINISHED")
            ids.append(run.info.run_id)
        return experiment_id, ids

    experiment_id, ids = await _run(make_runs)
    best = await _run(lambda: client.search_runs([experiment_id], order_by=["metrics.acc DESC"], max_results=2))
    assert [r.info.run_id for r in best] == [ids[4], ids[3]] and best.token
    rest = await _run(lambda: client.search_runs([experiment_id], order_by=["metrics.acc DESC"], max_results=2,
                                                 page_token=best.token))
    assert [r.info.run_id for r in rest] == [ids[2], ids[1]]
    failed = await _run(lambda: client.search_runs([experiment_id], "attributes.status = 'FAILED'"))
    assert [r.info.run_id for r in failed] == [ids[2]]
    named = await _run(lambda: client.search_runs([experiment_id], "params.i = '3' AND attributes.run_name LIKE 'r%'"))
    assert [r.info.run_id for r in named] == [ids[3]]
    assert await _run(lambda: client.search_runs([experiment_id], "attributes.run_name LIKE 'R%'")) == []
    with pytest.raises(MlflowException) as bad:
        await _run(lambda: client.search_runs([experiment_id], "metrics.acc >> 1"))
    assert bad.value.error_code == "INVALID_PARAMETER_VALUE"


async def test_mlflow_semantics_and_errors(app: AdminTestApp, monkeypatch: pytest.MonkeyPatch) -> None:
    _use(monkeypatch, app, await make_key(app, "developer"))
    client = MlflowClient()
    experiment_id = await _run(lambda: client.create_experiment("sem"))
    with pytest.raises(MlflowException) as exists:
        await _run(lambda: client.create_experiment("sem"))
    assert exists.value.error_code == "RESOURCE_ALREADY_EXISTS"
    run_id = (await _run(lambda: client.create_run(experiment_id))).info.run_id
    await _run(lambda: client.log_param(run_id, "lr", "0.1"))
    with pytest.raises(MlflowException) as changed:
        await _run(lambda: client.log_param(run_id, "lr", "0.2"))
    assert changed.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(RestException) as missing:
        await _run(lambda: client.get_run("0" * 32))
    assert missing.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as long_value:
        await _run(lambda: client.log_param(run_id, "long", "x" * 6001))
    assert long_value.value.error_code == "INVALID_PARAMETER_VALUE"
    assert await _run(lambda: client.get_experiment_by_name("no-such")) is None
    default = await _run(lambda: client.get_experiment("0"))
    assert default.name == "Default"


async def test_a_jobs_run_through_its_token_and_run_id(app: AdminTestApp, monkeypatch: pytest.MonkeyPatch) -> None:
    token = await add_job(app, "job_ml", experiment="tiny-exp")
    other = await add_job(app, "job_other", experiment="tiny-exp")
    developer = await make_key(app, "developer")
    # The jobs module makes the run when it creates the job; a first metrics post would too.
    _use(monkeypatch, app, developer)
    experiment_id = await _run(lambda: mlflow.set_experiment("tiny-exp").experiment_id)
    assert app.plane.store is not None
    from control.training.tracking.store import ensure_job_run  # the jobs module's call

    async with app.plane.store.begin() as conn:
        await ensure_job_run(conn, job_id="job_ml", experiment="tiny-exp", run_name="tiny", user="alice",
                             params={"lr": "0.01"})
        await ensure_job_run(conn, job_id="job_other", experiment="tiny-exp", run_name="other", user="alice",
                             params={})
    fluent._active_experiment_id = None

    # What a trainer in the job's pod does, with the job's environment and no code for us.
    _use(monkeypatch, app, token)
    monkeypatch.setenv("MLFLOW_RUN_ID", "job_ml")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tiny-exp")

    def train() -> None:
        """What Hugging Face's MLflowCallback does: set_experiment, start_run (MLFLOW_RUN_ID), params in
        batches of 100, metrics per logging step, end_run."""
        mlflow.set_experiment(os.environ["MLFLOW_EXPERIMENT_NAME"])
        run = mlflow.start_run(run_name="out/tiny", nested=False)
        assert run.info.run_id == "job_ml"
        arguments = {"lr": 0.01, **{f"arg_{i}": i for i in range(149)}}
        items = list(arguments.items())
        for i in range(0, len(items), 100):
            mlflow.log_params(dict(items[i:i + 100]))
        for step in range(3):
            mlflow.log_metrics({"train_loss": 2.0 - step, "learning_rate": 0.01}, step=step)
        mlflow.log_metrics({"eval_loss": 1.5}, step=2, synchronous=False)
        mlflow.set_tags({"trainer": "reference"})
        mlflow.end_run()

    await _run(train)
    client = MlflowClient()
    run = await _run(lambda: client.get_run("job_ml"))
    assert run.info.status == "FINISHED" and run.data.metrics["train_loss"] == 0.0
    assert run.data.metrics["eval_loss"] == 1.5 and run.info.run_name == "out/tiny"
    assert len(run.data.params) == 150 and run.data.params["lr"] == "0.01"
    assert run.info.experiment_id == experiment_id
    assert [m.value for m in await _run(lambda: client.get_metric_history("job_ml", "train_loss"))] == [2, 1, 0]
    mine = await _run(lambda: client.search_runs([experiment_id]))
    assert [r.info.run_id for r in mine] == ["job_ml"]  # a job's token sees its own run only

    # Another job's run, other runs and new experiments are out of reach of this token.
    for call in (lambda: client.get_run("job_other"), lambda: client.log_metric("job_other", "x", 1.0),
                 lambda: client.create_experiment("mine"), lambda: client.create_run(experiment_id)):
        with pytest.raises(MlflowException) as denied:
            await _run(call)
        assert denied.value.error_code == "PERMISSION_DENIED"
    # The other job's token on this job's run, and a made-up token, are refused too; no token ever echoed.
    _use(monkeypatch, app, other)
    with pytest.raises(MlflowException) as denied:
        await _run(lambda: MlflowClient().log_metric("job_ml", "x", 1.0))
    assert denied.value.error_code == "PERMISSION_DENIED" and other not in str(denied.value)
    _use(monkeypatch, app, token[:-2] + "zz")
    with pytest.raises(MlflowException) as unknown:
        await _run(lambda: MlflowClient().get_run("job_ml"))
    assert unknown.value.error_code == "UNAUTHENTICATED" and token[:-2] not in str(unknown.value)


async def test_a_jobs_run_is_there_even_before_the_jobs_module_made_it(app: AdminTestApp,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    token = await add_job(app, "job_early", experiment="early-exp", name="early")
    _use(monkeypatch, app, token)
    monkeypatch.setenv("MLFLOW_RUN_ID", "job_early")

    def train() -> None:
        with mlflow.start_run():
            mlflow.log_metric("grad_norm", math.nan, step=3)

    await _run(train)
    view = (await app.client.get("/llm-ops/v1/training/experiments/job_early")).json()["data"]
    assert view["experiment"] == "early-exp" and view["run"]["runName"] == "early"
    assert view["run"]["status"] == "FINISHED"
    assert view["latest"]["grad_norm"]["value"] == "NaN" and view["metrics"]["grad_norm"][0]["value"] == "NaN"


async def test_roles(app: AdminTestApp, monkeypatch: pytest.MonkeyPatch) -> None:
    _use(monkeypatch, app, await make_key(app, "viewer"))
    client = MlflowClient()
    with pytest.raises(MlflowException) as denied:
        await _run(lambda: client.create_experiment("viewer-cannot"))
    assert denied.value.error_code == "PERMISSION_DENIED"
    assert (await _run(lambda: client.get_experiment("0"))).name == "Default"
    _use(monkeypatch, app, "llmops_0123456789abcdef_" + "x" * 43)
    with pytest.raises(MlflowException) as unknown:
        await _run(lambda: client.get_experiment("0"))
    assert unknown.value.error_code == "UNAUTHENTICATED"


async def test_raw_protocol_edges(app: AdminTestApp) -> None:
    base = f"{app.url}/llm-ops/v1/training/mlflow/api/2.0/mlflow"
    token = await make_key(app, "developer")
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    client: Any = app.client
    bad = await client.post(f"{base}/runs/log-batch", content=b"{nope", headers=headers)
    assert bad.status_code == 400 and bad.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    deep = await client.post(f"{base}/runs/log-batch", content=b"[" * 100_000, headers=headers)
    assert deep.status_code == 400 and deep.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    big = await client.post(f"{base}/runs/log-batch", content=b" " * (2 << 20), headers=headers)
    assert big.status_code == 413 and "error_code" in big.json()
    nowhere = await client.post(f"{base}/runs/no-such-call", json={}, headers=headers)
    assert nowhere.status_code == 404 and nowhere.json()["error_code"] == "ENDPOINT_NOT_FOUND"
    experiment_id = (await client.post(f"{base}/experiments/create", json={"name": "raw"},
                                       headers=headers)).json()["experiment_id"]
    run_id = (await client.post(f"{base}/runs/create", json={"experiment_id": experiment_id},
                                headers=headers)).json()["run"]["info"]["run_id"]
    too_many = {"run_id": run_id, "params": [{"key": f"p{i}", "value": "1"} for i in range(101)]}
    resp = await client.post(f"{base}/runs/log-batch", json=too_many, headers=headers)
    assert resp.status_code == 400 and resp.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    metrics = {"run_id": run_id, "metrics": [{"key": "m", "value": 1, "timestamp": 1, "step": 0}] * 1001}
    assert (await client.post(f"{base}/runs/log-batch", json=metrics, headers=headers)).status_code == 400
    strings = {"run_id": run_id, "metrics": [{"key": "m", "value": "-Infinity", "timestamp": "5", "step": "2"}]}
    assert (await client.post(f"{base}/runs/log-batch", json=strings, headers=headers)).status_code == 200
    history = await client.get(f"{base}/metrics/get-history", params={"run_id": run_id, "metric_key": "m"},
                               headers=headers)
    assert history.json() == {"metrics": [{"key": "m", "value": "-Infinity", "timestamp": 5, "step": 2}]}
