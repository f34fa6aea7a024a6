"""The tracking store on both databases: job runs, MLflow's param/tag/status rules, NaN and ±inf, latest points."""

from __future__ import annotations

import math

import pytest

from adapters.store import schema_drift
from adapters.training.contract import MetricPoint
from control.training.tables import experiments, metrics, params, runs, tags
from control.training.tracking import store as tracking
from control.training.tracking.errors import AlreadyExists, InvalidValue, ResourceMissing
from tests.control.training.tracking.support import insert_job, tracking_store


async def test_live_tables_match_the_migration(database_url: str) -> None:
    async with tracking_store(database_url) as store:
        assert await schema_drift(store, experiments, runs, params, tags, metrics) == []


async def test_job_run_is_made_once_and_follows_the_job(database_url: str) -> None:
    async with tracking_store(database_url) as store:
        async with store.begin() as conn:
            await insert_job(conn, "job_1")
            await tracking.ensure_job_run(conn, job_id="job_1", experiment="exp", run_name="tiny", user="alice",
                                          params={"lr": "0.01"})
            # Again (a retried launch): nothing doubles, new params are added, the same value is fine, and
            # what MLflow could not hold is left out rather than failing the job's transaction.
            await tracking.ensure_job_run(conn, job_id="job_1", experiment="exp", run_name="tiny", user="alice",
                                          params={"lr": "0.01", "epochs": "2", "x" * 251: "1", "huge": "y" * 6001})
        async with store.read() as conn:
            run = await tracking.run_row(conn, "job_1")
            assert (run.status, run.job_id, run.run_name, run.end_time) == ("SCHEDULED", "job_1", "tiny", None)
            exp = await tracking.experiment_by_name(conn, "exp")
            assert exp is not None and run.experiment_id == exp.experiment_id
            assert run.artifact_uri == f"mlflow-artifacts:/{exp.experiment_id}/job_1/artifacts"
            assert await tracking.run_params(conn, "job_1") == {"epochs": "2", "lr": "0.01"}
            assert (await tracking.run_tags(conn, "job_1"))[tracking.RUN_NAME_TAG] == "tiny"
        async with store.begin() as conn:
            await tracking.set_job_run_status(conn, "job_1", "RUNNING")
            assert (await tracking.run_row(conn, "job_1")).end_time is None
            await tracking.set_job_run_status(conn, "job_1", "FINISHED")
            finished = await tracking.run_row(conn, "job_1")
            assert finished.status == "FINISHED" and finished.end_time >= finished.start_time
            await tracking.set_job_run_status(conn, "job_unknown", "FAILED")  # no run: nothing to follow


async def test_params_never_change(database_url: str) -> None:
    async with tracking_store(database_url) as store:
        async with store.begin() as conn:
            await insert_job(conn, "job_1")
            await tracking.ensure_job_run(conn, job_id="job_1", experiment="exp", run_name="r", user="u",
                                          params={"lr": "0.01"})
        with pytest.raises(InvalidValue) as err:
            async with store.begin() as conn:
                await tracking.log_params(conn, "job_1", {"batch": "8", "lr": "0.02"})
        assert err.value.field == "params.lr" and "0.01" in err.value.message
        async with store.read() as conn:  # the whole call was refused
            assert await tracking.run_params(conn, "job_1") == {"lr": "0.01"}


async def test_experiments_and_runs_follow_mlflow(database_url: str) -> None:
    async with tracking_store(database_url) as store, store.begin() as conn:
        exp_id = await tracking.create_experiment(conn, "exp", tags={"team": "ml"})
        with pytest.raises(AlreadyExists):
            await tracking.create_experiment(conn, "exp")
        assert await tracking.ensure_experiment(conn, "exp") == exp_id
        default = await tracking.experiment_by_id(conn, 0)  # MLflow's Default, made on first mention
        assert default is not None and default.name == "Default"
        run_id = await tracking.create_run(conn, experiment_id=exp_id, user_id="bob", run_name=None,
                                           start_time=5, tags={tracking.RUN_NAME_TAG: "named-by-tag"})
        assert len(run_id) == 32
        assert (await tracking.run_row(conn, run_id)).run_name == "named-by-tag"
        with pytest.raises(InvalidValue):
            await tracking.create_run(conn, experiment_id=exp_id, user_id="bob", run_name="a", start_time=5,
                                      tags={tracking.RUN_NAME_TAG: "b"})
        with pytest.raises(ResourceMissing):
            await tracking.create_run(conn, experiment_id=999, user_id="bob", run_name=None, start_time=None,
                                      tags={})
        updated = await tracking.update_run(conn, run_id, status="KILLED", end_time=77, run_name="renamed")
        assert (updated.status, updated.end_time, updated.run_name) == ("KILLED", 77, "renamed")
        assert (await tracking.run_tags(conn, run_id))[tracking.RUN_NAME_TAG] == "renamed"
        await tracking.set_tags(conn, run_id, {"t": "1"})
        await tracking.set_tags(conn, run_id, {"t": "2"})
        assert (await tracking.run_tags(conn, run_id))["t"] == "2"
        with pytest.raises(ResourceMissing):
            await tracking.run_row(conn, "nope")


async def test_points_keep_nan_and_infinities_and_latest_is_mlflows(database_url: str) -> None:
    async with tracking_store(database_url) as store:
        async with store.begin() as conn:
            exp_id = await tracking.create_experiment(conn, "exp")
            run_id = await tracking.create_run(conn, experiment_id=exp_id, user_id="u", run_name="r",
                                               start_time=None, tags={})
            points = [
                MetricPoint(key="loss", value=2.0, step=0, timestamp=10),
                MetricPoint(key="loss", value=1.0, step=1, timestamp=20),
                MetricPoint(key="loss", value=0.5, step=1, timestamp=30),  # same step, later: the latest
                MetricPoint(key="odd", value=math.nan, step=0),
                MetricPoint(key="hi", value=math.inf, step=0, timestamp=1),
                MetricPoint(key="lo", value=-math.inf, step=0, timestamp=1),
            ]
            assert await tracking.log_points(conn, run_id, points) == 6
        async with store.read() as conn:
            latest = await tracking.latest_metrics(conn, run_id)
            assert (latest["loss"].value, latest["loss"].step, latest["loss"].timestamp) == (0.5, 1, 30)
            assert math.isnan(tracking.point_value(latest["odd"].value, latest["odd"].is_nan))
            assert latest["odd"].timestamp > 1_600_000_000_000  # the server's clock
            assert tracking.point_value(latest["hi"].value, latest["hi"].is_nan) == math.inf
            assert tracking.point_value(latest["lo"].value, latest["lo"].is_nan) == -math.inf
            assert list(await tracking.latest_metrics(conn, run_id, ["loss"])) == ["loss"]
