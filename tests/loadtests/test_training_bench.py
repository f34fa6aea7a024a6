"""The training benchmark's parts (its bodies are what the two ingestion paths accept, percentiles, the posting
loop's accounting, a job's token found in its process's environment, the tables and the doc section) and one
short live round of the whole bench on a real ``llmops serve``."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from aiohttp import web

from adapters.training.contract import MAX_METRICS_PER_POST, MetricsPost
from control.training.tracking.mlflow_wire import LogBatch
from loadtests.docsection import write_section
from loadtests.training_bench import (
    IngestSide,
    JobRound,
    RestartRound,
    _section,
    bench_table,
    main,
    percentile,
    point_bodies,
    post_for,
    state_changes,
)
from loadtests.training_live import job_processes, job_token


def test_bodies_hold_the_same_points_in_each_paths_own_shape_at_steps_no_other_post_uses() -> None:
    mine = msgspec.json.decode(point_bodies(3), type=MetricsPost)
    mlflow = msgspec.json.decode(point_bodies(3, run_id="job_1"), type=LogBatch)
    assert len(mine.metrics) == MAX_METRICS_PER_POST and mlflow.run_id == "job_1"
    assert [(m.key, m.step, m.value) for m in mine.metrics] == [(m.key, m.step, m.value) for m in mlflow.metrics]
    assert all(m.timestamp for m in mlflow.metrics)  # MLflow's client always sends one
    keyed = {(m.key, m.step) for n in (0, 1, 2)
             for m in msgspec.json.decode(point_bodies(n, 10), type=MetricsPost).metrics}
    assert len(keyed) == 30  # three posts of 10 points: no (key, step) twice


def test_percentile_is_linear_between_the_closest_ranks() -> None:
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert (percentile(values, 0), percentile(values, 50), percentile(values, 100)) == (1.0, 3.0, 5.0)
    assert percentile(values, 99) == pytest.approx(4.96)
    assert percentile([7.0], 99) == 7.0 and math.isnan(percentile([], 50))


def test_state_changes_are_the_first_entry_of_each_state_from_the_timeline() -> None:
    job = {"timeline": [
        {"at": "2026-01-01T00:00:00Z", "status": "queued", "event": "queued"},
        {"at": "2026-01-01T00:00:01.5Z", "status": "running", "event": "running"},
        {"at": "2026-01-01T00:00:02Z", "status": None, "event": "adopted"},
        {"at": "2026-01-01T00:00:03Z", "status": "running", "event": "running"},
    ]}
    entered = state_changes(job)
    assert set(entered) == {"queued", "running"} and entered["running"] - entered["queued"] == 1.5


@pytest.fixture
def answering() -> Iterator[str]:
    """A server answering 202 to every post but each third (a 503), ~5 ms after it came."""
    seen = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal seen
        await request.read()
        seen += 1
        await asyncio.sleep(0.005)
        return web.Response(status=503 if seen % 3 == 0 else 202, text="{}")

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/post", handler)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/post"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_posting_counts_accepted_points_and_failures_and_stops_after_its_time(answering: str) -> None:
    started = time.monotonic()
    side = asyncio.run(post_for("metrics", answering, {}, lambda n: b"{}", posters=2, duration_s=0.3, ok=202,
                                points=10))
    assert time.monotonic() - started < 2
    assert side.posts >= 10 and side.points == side.posts * 10
    assert side.failed == pytest.approx(side.posts / 2, abs=2)  # one in three refused
    assert 4 <= side.p50_ms <= side.p99_ms < 1000 and side.wall_s >= 0.3
    assert side.points_per_s == pytest.approx(side.points / side.wall_s)


def test_posting_fails_loudly_when_nothing_is_accepted(answering: str) -> None:
    with pytest.raises(AssertionError, match="no post accepted"):
        asyncio.run(post_for("mlflow", answering, {}, lambda n: b"{}", posters=1, duration_s=0.1, ok=200, points=1))
    with pytest.raises(AssertionError, match=r"no post accepted \(\d+ failed, first: \['ClientConnectorError"):
        asyncio.run(post_for("mlflow", "http://127.0.0.1:9/none", {}, lambda n: b"{}", posters=1, duration_s=0.1,
                             ok=200, points=1))


def test_a_jobs_token_is_read_from_its_processes_environment() -> None:
    env = {**os.environ, "LLMOPS_JOB_ID": "job_bench_test", "LLMOPS_JOB_TOKEN": "ljt_not_a_real_token"}
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], env=env)
    try:
        assert list(job_processes("job_bench_test")) == [proc.pid]
        assert job_token("job_bench_test") == "ljt_not_a_real_token"
        assert job_processes("job_bench") == {}  # the whole id, not a prefix
    finally:
        proc.kill()
        proc.wait(10)
    with pytest.raises(AssertionError, match="holds its token"):
        job_token("job_bench_test")


def _job(to_succeeded: float, first: float = 5.5, last: float = 0.5) -> JobRound:
    return JobRound(to_running_s=0.2, to_succeeded_s=to_succeeded, to_trainer_s=0.1, trainer_s=0.4,
                    first_loss=first, last_loss=last, loss_points=21)


def _side(path: str, posters: int, points: int, p99: float) -> IngestSide:
    return IngestSide(path=path, posters=posters, posts=points // 1000, points=points,  # type: ignore[arg-type]
                      wall_s=1.0, p50_ms=8.0, p99_ms=p99, failed=1)


def test_table_reports_medians_and_ranges_and_the_platforms_share() -> None:
    jobs = [_job(0.7), _job(0.9, first=5.0, last=0.4), _job(0.8)]
    sides = [_side("metrics", 1, 90_000, 20.0), _side("metrics", 1, 100_000, 30.0), _side("mlflow", 4, 80_000, 70.0)]
    restarts = [RestartRound(5.0, 3.0, 0.05, 9.0, 0.1, "succeeded"), RestartRound(6.0, 3.2, 0.07, 8.0, 0.2,
                                                                                  "succeeded")]
    table = bench_table(jobs, sides, restarts, steps=200, rows=200)
    assert "| A `from_scratch` job, 200 rows, 200 steps (seconds) | median | min | max |" in table
    assert "| submit → `succeeded`, the model registered | 0.80 | 0.70 | 0.90 |" in table
    assert "minus the trainer's | 0.40 | 0.30 | 0.50 |" in table  # 0.8 - 0.4, per round
    assert "`succeeded` (detection, output registered in the catalog) | 0.30 | 0.20 | 0.40 |" in table
    assert "first 5.500 (range 5.000 to 5.500), last 0.500 (range 0.400 to 0.500)" in table
    metrics_1 = "| `POST training/jobs/{id}/metrics`, job token | 1 | 95,000 | 90,000 | 100,000 | 8.0 | 25.0 | 30.0 |"
    assert metrics_1 + " 190 |" in table  # p50 the median of 8 and 8; p99 the median and the max of 20, 30
    assert "| MLflow `runs/log-batch`, admin key | 4 | 80,000 |" in table and "admin key | 1 |" not in table
    assert "| ready → the job's next state change (`succeeded`), seen through the API | 8.50 | 8.00 | 9.00 |" in table
    assert "| SIGKILL → `adopted` on the job's timeline (its recorded time) | 3.10 | 3.00 | 3.20 |" in table
    assert "Rounds: 3. Failed posts: 3." in table
    with pytest.raises(ValueError, match="at least one round"):
        bench_table(jobs, [], restarts, steps=200, rows=200)


def test_section_replaces_its_own_part_of_the_doc_only(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n<!-- other:start -->\nkept\n<!-- other:end -->\n", encoding="utf-8")
    command = ".venv/bin/python -m loadtests.training_bench --rounds 3 --doc docs/benchmarks.md"
    for table in ("| first |", "| second |"):
        write_section(doc, "training", _section(table, command, steps=200, ingest_s=5))
    text = doc.read_text(encoding="utf-8")
    assert text.count("<!-- training:start") == 1 and "| second |" in text and "| first |" not in text
    assert "kept" in text and command in text and "`TRAINING_LEASE_S=3`" in text
    assert text.rstrip().endswith("<!-- training:end -->")


@pytest.mark.timeout(90)
def test_one_short_live_round_writes_its_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "benchmarks.md"
    assert main(["--rounds", "1", "--steps", "30", "--ingest-s", "0.3", "--points", "100", "--restart-sleep",
                 "0.005", "--doc", str(doc)]) == 0
    text = doc.read_text(encoding="utf-8")
    assert "## Training on the embedded default" in text
    assert "| Metrics ingestion, 100 points a post |" in text and text.count("job token | ") == 2
    assert "it fell in every round" in text and "Failed posts: 0." in text
    assert "ljt_" not in capsys.readouterr().err  # the token was never printed
