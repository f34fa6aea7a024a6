"""The supervisor on the real ``LocalTrainingRuntime``, with small ``python -c`` commands for trainers (the
reference trainer end to end is the lead's test): success and registration, retries of a failing process, cancel
while it runs, and a restart of the control plane while an attempt runs."""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.adminapi import ControlCfg
from adapters.adminapi.testing import AdminTestApp, admin_test_app
from adapters.training.local import LocalTrainingRuntime
from control.training import TrainingModule
from tests.control.training.support import (
    API,
    API_BASE_URL,
    FakeCatalog,
    catalog_with_data,
    create,
    fast_settings,
    status_is,
    store_output,
    until,
)

SHOW_ENV = "import os; print(os.environ['LLMOPS_JOB_ID'], os.environ['LLMOPS_ATTEMPT'], " \
           "os.environ['LLMOPS_JOB_TOKEN'], flush=True)"


@contextlib.asynccontextmanager
async def _app(database_url: str, data_dir: Path, catalog: FakeCatalog) -> AsyncIterator[AdminTestApp]:
    cfg = ControlCfg(database_url=database_url, data_dir=str(data_dir), change_feed="poll", poll_interval_s=0.1)
    settings = fast_settings()
    runtime = LocalTrainingRuntime(settings, state_dir=data_dir.parent / "attempts")
    module = TrainingModule(settings=settings, runtime=runtime, api_base_url=API_BASE_URL)
    async with admin_test_app(cfg, modules=[catalog, module]) as app:
        yield app


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def catalog() -> FakeCatalog:
    return catalog_with_data()


async def test_a_local_job_succeeds_and_is_registered(database_url: str, tmp_path: Path, catalog: FakeCatalog
                                                      ) -> None:
    async with _app(database_url, tmp_path / "cp", catalog) as app:
        created = await create(app, command=["python", "-c", SHOW_ENV])
        await store_output(app, created["id"])  # what the trainer would have PUT under output/
        done = await status_is(app, created["id"], "succeeded", "failed")
        assert done["status"] == "succeeded" and done["resultModelId"] == f"model_{created['id']}", done
        assert [e["event"] for e in done["timeline"] if e["status"]][:2] == ["queued", "scheduled"]
        logs = (await app.client.get(f"{API}/jobs/{created['id']}/logs")).json()["data"]["logs"]
        assert f"{created['id']} 1 ljt_" in logs  # the last attempt stays after a success, for its logs
    assert catalog.registered[0][0].training_job_id == created["id"]


async def test_a_failing_process_is_retried_then_fails_with_its_exit_code(database_url: str, tmp_path: Path,
                                                                          catalog: FakeCatalog) -> None:
    async with _app(database_url, tmp_path / "cp", catalog) as app:
        created = await create(app, command=["python", "-c", f"{SHOW_ENV}; raise SystemExit(3)"],
                               retryPolicy={"maxRetries": 1})
        done = await status_is(app, created["id"], "succeeded", "failed")
        assert done["status"] == "failed" and done["exitCode"] == 3 and done["attempt"] == 2, done
        assert [a["exitCode"] for a in done["attempts"]] == [3, 3]
        logs = (await app.client.get(f"{API}/jobs/{created['id']}/logs", params={"attempt": 1})).json()["data"]
        assert f"{created['id']} 1 ljt_" in logs["logs"]  # the trainer printed its token ...
        assert not re.search(r"ljt_[A-Za-z0-9_-]{20}", logs["logs"])  # ... which the answer masks
        second = (await app.client.get(f"{API}/jobs/{created['id']}/logs")).json()["data"]
        assert second["attempt"] == 2 and f"{created['id']} 2 " in second["logs"]
        assert catalog.refs == set()


async def test_cancel_stops_a_running_process(database_url: str, tmp_path: Path, catalog: FakeCatalog) -> None:
    async with _app(database_url, tmp_path / "cp", catalog) as app:
        code = "import os, time; print(os.getpid(), flush=True); time.sleep(60)"
        created = await create(app, command=["python", "-c", code])
        await status_is(app, created["id"], "running")
        pid = int(await until(lambda: _first_line(app, created["id"])))
        resp = await app.client.post(f"{API}/jobs/{created['id']}/cancel")
        assert resp.status_code == 200 and resp.json()["data"]["cancelRequested"], resp.text
        done = await status_is(app, created["id"], "cancelled")
        assert done["reason"].startswith("Cancelled")
        assert not _alive(pid)


async def _first_line(app: AdminTestApp, job_id: str) -> str | None:
    logs = (await app.client.get(f"{API}/jobs/{job_id}/logs")).json()["data"]["logs"]
    digits = [w for w in logs.split() if w.isdigit()]
    return digits[0] if digits else None


async def test_a_restart_finds_the_running_attempt_again(database_url: str, tmp_path: Path, catalog: FakeCatalog
                                                         ) -> None:
    marker = tmp_path / "go"
    code = (f"import os, time, pathlib; print(os.getpid(), flush=True)\n"
            f"while not pathlib.Path({str(marker)!r}).exists(): time.sleep(0.05)")
    created: dict[str, Any] = {}
    async with _app(database_url, tmp_path / "cp", catalog) as app:
        created = await create(app, command=["python", "-c", code])
        await status_is(app, created["id"], "running")
        pid = int(await until(lambda: _first_line(app, created["id"])))
    assert _alive(pid)  # the control plane stopped; the attempt did not
    try:
        async with _app(database_url, tmp_path / "cp", catalog) as app:
            await store_output(app, created["id"])
            marker.touch()
            done = await status_is(app, created["id"], "succeeded", "failed")
            assert done["status"] == "succeeded" and done["attempt"] == 1, done
            assert [e["event"] for e in done["timeline"]].count("adopted") == 1
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
