"""``POST training/jobs/{jobId}/metrics`` (job token only) and ``GET training/experiments/{jobId}``."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from adapters.adminapi.testing import AdminTestApp
from adapters.store import utcnow
from control.training.tables import events, jobs
from tests.control.training.tracking.support import API, add_job, bearer, make_key, tracking_app


@pytest.fixture
async def app(database_url: str, tmp_path: Path) -> AsyncIterator[AdminTestApp]:
    async with tracking_app(database_url, tmp_path) as running:
        yield running


def _points(n: int, key: str = "loss", start: int = 0) -> list[dict[str, Any]]:
    return [{"key": key, "value": 1.0 / (i + 1), "step": start + i, "timestamp": 1_000 + i} for i in range(n)]


async def _post(app: AdminTestApp, job_id: str, token: str, body: Any) -> Any:
    return await app.client.post(f"{API}/training/jobs/{job_id}/metrics", json=body, headers=bearer(token))


async def test_a_post_is_stored_and_shown(app: AdminTestApp) -> None:
    token = await add_job(app, "job_a", hyperparameters={"lr": 0.01, "epochs": 2, "name": "x"})
    resp = await _post(app, "job_a", token, {"metrics": _points(5) + _points(2, "eval_loss"),
                                              "params": {"lr": "0.01", "optimizer": "adamw"}})
    assert resp.status_code == 202, resp.text
    assert resp.json()["data"] == {"accepted": 7}
    # The run was made on the way (the jobs module had not made it here), then followed.
    view = (await app.client.get(f"{API}/training/experiments/job_a")).json()["data"]
    assert view["run"]["runId"] == "job_a" and view["run"]["status"] == "SCHEDULED"
    assert view["experiment"] == "tiny-exp" and view["jobStatus"] == "running"
    assert view["params"] == {"lr": "0.01", "epochs": "2", "name": "x", "optimizer": "adamw"}
    assert view["hyperparameters"] == {"lr": 0.01, "epochs": 2, "name": "x"}
    assert [p["step"] for p in view["metrics"]["loss"]] == [0, 1, 2, 3, 4]
    assert view["metrics"]["loss"][4] == {"step": 4, "value": 0.2, "timestamp": 1004}
    assert view["latest"] == {"loss": {"step": 4, "value": 0.2, "timestamp": 1004},
                              "eval_loss": {"step": 1, "value": 0.5, "timestamp": 1001}}
    only = (await app.client.get(f"{API}/training/experiments/job_a", params={"keys": "eval_loss"})).json()["data"]
    assert list(only["metrics"]) == ["eval_loss"] and list(only["latest"]) == ["eval_loss"]


async def test_first_posts_of_two_nodes_at_once_make_one_run(app: AdminTestApp) -> None:
    token = await add_job(app, "job_n")
    answers = await asyncio.gather(*(_post(app, "job_n", token, {"metrics": _points(50, f"node{i}")})
                                     for i in range(4)))
    assert [r.status_code for r in answers] == [202] * 4, [r.text for r in answers]
    view = (await app.client.get(f"{API}/training/experiments/job_n")).json()["data"]
    assert sorted(view["metrics"]) == ["node0", "node1", "node2", "node3"]


async def test_downsampling_is_even_and_keeps_both_ends(app: AdminTestApp) -> None:
    token = await add_job(app, "job_d")
    assert (await _post(app, "job_d", token, {"metrics": _points(1000)})).status_code == 202
    assert (await _post(app, "job_d", token, {"metrics": _points(1, start=1000)})).status_code == 202
    for max_points in (2, 3, 10, 1000):
        resp = await app.client.get(f"{API}/training/experiments/job_d", params={"maxPoints": max_points})
        steps = [p["step"] for p in resp.json()["data"]["metrics"]["loss"]]
        assert len(steps) == max_points and steps[0] == 0 and steps[-1] == 1000, (max_points, steps[:5])
        gaps = {b - a for a, b in itertools.pairwise(steps)}
        assert max(gaps) - min(gaps) <= 1, (max_points, gaps)  # evenly spread
    all_points = (await app.client.get(f"{API}/training/experiments/job_d", params={"maxPoints": 5000})).json()
    assert len(all_points["data"]["metrics"]["loss"]) == 1001
    bad = await app.client.get(f"{API}/training/experiments/job_d", params={"maxPoints": 1})
    assert bad.status_code == 400 and bad.json()["data"]["errors"][0]["field"] == "maxPoints"


async def test_timeline_is_the_jobs_events_oldest_first(app: AdminTestApp) -> None:
    await add_job(app, "job_t")
    assert app.plane.store is not None
    async with app.plane.store.begin() as conn:
        for status, reason in (("queued", "created"), ("scheduled", "attempt 1"), ("running", "pod started")):
            await conn.execute(events.insert().values(job_id="job_t", at=utcnow(), status=status, event=status,
                                                      attempt=1, reason=reason, actor="system", detail={}))
    view = (await app.client.get(f"{API}/training/experiments/job_t")).json()["data"]
    assert [(e["status"], e["reason"]) for e in view["timeline"]] == [
        ("queued", "created"), ("scheduled", "attempt 1"), ("running", "pod started")]
    assert view["run"] is None and view["metrics"] == {}  # nothing reported yet


async def test_unknown_job_is_a_404_envelope(app: AdminTestApp) -> None:
    resp = await app.client.get(f"{API}/training/experiments/job_nope")
    assert resp.status_code == 404 and resp.json()["status"] == "fail"


async def test_only_the_jobs_own_live_token_is_accepted(app: AdminTestApp, caplog: pytest.LogCaptureFixture) -> None:
    token = await add_job(app, "job_1")
    other = await add_job(app, "job_2")
    finished = await add_job(app, "job_3")
    assert app.plane.store is not None
    async with app.plane.store.begin() as conn:
        await conn.execute(update(jobs).where(jobs.c.id == "job_3").values(status="succeeded"))
    admin = await make_key(app, "admin")
    body = {"metrics": _points(1)}
    with caplog.at_level(logging.DEBUG):
        answers = [
            await _post(app, "job_1", other, body),  # another job's token
            await _post(app, "job_3", finished, body),  # a finished job's own token
            await _post(app, "job_1", token + "x", body),  # a wrong token
            await _post(app, "job_1", admin, body),  # an admin key is not a job token
            await _post(app, "job_1", app.bootstrap_key, body),
            await app.client.post(f"{API}/training/jobs/job_1/metrics", json=body, headers={"authorization": ""}),
        ]
    assert {r.status_code for r in answers} == {401}
    assert len({r.json()["message"] for r in answers}) == 1  # the same words whatever was wrong
    for secret in (token, other, finished):
        assert all(secret not in r.text for r in answers) and secret not in caplog.text
    assert (await _post(app, "job_1", token, body)).status_code == 202
    # A token is refused before its body is even read: a bad body with a bad token is a 401, not a 400.
    assert (await _post(app, "job_1", other, {"metrics": "nope"})).status_code == 401


async def test_bad_fields_are_named(app: AdminTestApp) -> None:
    token = await add_job(app, "job_v")
    resp = await _post(app, "job_v", token, {"metrics": [
        {"key": "ok", "value": 1.0, "step": 1},
        {"key": "../escape", "value": 1.0, "step": 1},
        {"key": "bad*char", "value": 1.0, "step": 1},
        {"key": "neg", "value": 1.0, "step": 1, "timestamp": -5},
    ], "params": {"a b/../c": "1", "long": "x" * 6001}})
    assert resp.status_code == 422, resp.text
    fields = [e["field"] for e in resp.json()["data"]["errors"]]
    assert fields == ["metrics[1].key", "metrics[2].key", "metrics[3].timestamp", "params.a b/../c", "params.long"]
    # Schema errors are 400s naming the field; nothing was stored by either.
    resp = await _post(app, "job_v", token, {"metrics": [{"key": "x", "value": "high", "step": 1}]})
    assert resp.status_code == 400 and resp.json()["data"]["errors"][0]["field"] == "metrics[0].value"
    resp = await _post(app, "job_v", token, {"metrics": [], "extra": 1})
    assert resp.status_code == 400 and resp.json()["data"]["errors"][0]["field"] == "extra"
    bad_json = await app.client.post(f"{API}/training/jobs/job_v/metrics", content=b"{not json",
                                     headers={**bearer(token), "content-type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["status"] == "fail"
    deep = await app.client.post(f"{API}/training/jobs/job_v/metrics", content=b"[" * 100_000,
                                 headers={**bearer(token), "content-type": "application/json"})
    assert deep.status_code == 400
    assert (await app.client.get(f"{API}/training/experiments/job_v")).json()["data"]["metrics"] == {}


async def test_too_many_points_and_changed_params_are_refused(app: AdminTestApp) -> None:
    token = await add_job(app, "job_m")
    resp = await _post(app, "job_m", token, {"metrics": _points(1001)})
    assert resp.status_code == 422 and resp.json()["data"]["errors"][0]["field"] == "metrics"
    assert (await _post(app, "job_m", token, {"metrics": _points(1000)})).status_code == 202
    assert (await _post(app, "job_m", token, {"params": {"lr": "0.1"}})).status_code == 202
    assert (await _post(app, "job_m", token, {"params": {"lr": "0.1"}})).status_code == 202  # same value again
    resp = await _post(app, "job_m", token, {"metrics": _points(3, "other"), "params": {"lr": "0.2"}})
    assert resp.status_code == 422 and resp.json()["data"]["errors"][0]["field"] == "params.lr"
    view = (await app.client.get(f"{API}/training/experiments/job_m", params={"maxPoints": 5000})).json()["data"]
    assert "other" not in view["metrics"] and len(view["metrics"]["loss"]) == 1000  # one transaction: none stored


async def test_reading_needs_a_viewer_key(app: AdminTestApp) -> None:
    token = await add_job(app, "job_r")
    assert (await app.client.get(f"{API}/training/experiments/job_r", headers=bearer(token))).status_code == 401
    viewer = await make_key(app, "viewer")
    assert (await app.client.get(f"{API}/training/experiments/job_r", headers=bearer(viewer))).status_code == 200
