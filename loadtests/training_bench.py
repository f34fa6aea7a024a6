"""Training on the embedded default through a real ``llmops serve``: job latency, loss, metrics ingestion, restart.

`python -m loadtests.training_bench [--rounds 3] [--ingest-s 5] [--doc docs/benchmarks.md]`

One ``llmops serve`` on the embedded default (SQLite and the local object store under a temporary directory,
``LocalTrainingRuntime``, the reference trainer) with the end-to-end test's fast ``TRAINING_*`` settings
(``FAST``: a 0.3 s supervisor pass, 3 s leases), driven over HTTP as an operator and a trainer would. A
200-row catalog dataset is uploaded once. Each round:

1. **a job**: a ``from_scratch`` job (``--steps``, otherwise the reference trainer's defaults): submit →
   running and submit → succeeded from its timeline (the moments the API shows them), against the trainer's
   own wall time (its process started → exited, from the runtime's ``state.json``), so the platform's share
   (queue, launch, supervisor, output registration) is the difference; its first and last ``train_loss`` (the
   bench fails if the loss did not fall).
2. **metrics ingestion**: a job that sleeps between steps, so it stays running; its token read from its
   process's environment (``/proc/<pid>/environ``: the bench runs on the same machine); then, for
   ``--ingest-s`` each, 1 and 4 concurrent posters send 1,000-point bodies to ``POST training/jobs/{id}/metrics``
   (the job token) and the same points to MLflow's ``runs/log-batch`` (an admin key) into the job's run; which
   path goes first alternates round by round. The job is cancelled after.
3. **restart adoption**: a job that runs ~15 s; once it reports, the server is SIGKILLed and started again on
   the same directory and port: from the new server's readiness to the job found again (``adopted`` on its
   timeline) and to its next state change, as the API shows them.

The server, the job processes and this client share the machine's cores; nothing is pinned. The restartable
server and the job helpers are ``loadtests/training_live.py``; the dataset upload is the evaluation bench's.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import aiohttp
import httpx
import msgspec

from adapters.training.contract import MAX_METRICS_PER_POST, MLFLOW_PATH
from loadtests.docsection import write_section
from loadtests.eval_bench import upload_dataset
from loadtests.training_live import (
    ADMIN_KEY,
    ARCH,
    FAST,
    TERMINAL,
    TrainingServer,
    cat_rows,
    explain,
    get_job,
    job_processes,
    job_token,
    losses,
    ranks_span,
    running_server,
    submit,
    until,
)

__all__ = [
    "IngestSide", "JobRound", "RestartRound", "bench_table", "ingest_round", "job_round", "main", "percentile",
    "point_bodies", "post_for", "restart_round", "state_changes",
]

KEYS = 4  # metric keys per body, as a trainer logs a handful (loss, learning rate, ...)
POSTERS = (1, 4)
Path_ = Literal["metrics", "mlflow"]
_encode = msgspec.json.Encoder().encode


# -- 1. a job, submit to succeeded ------------------------------------------------------------------------

@dataclass(frozen=True)
class JobRound:
    """Seconds from the submit call's start, on this machine's clock (the server's and the runtime's too)."""

    to_running_s: float  # -> the timeline's "running": from then on the API shows it
    to_succeeded_s: float  # -> the timeline's "succeeded"
    to_trainer_s: float  # -> the trainer's process started
    trainer_s: float  # the trainer's process started -> exited
    first_loss: float
    last_loss: float
    loss_points: int

    @property
    def overhead_s(self) -> float:
        return self.to_succeeded_s - self.trainer_s

    @property
    def after_trainer_s(self) -> float:  # the trainer's process exited -> "succeeded"
        return self.to_succeeded_s - self.to_trainer_s - self.trainer_s


def state_changes(job: Mapping[str, Any]) -> dict[str, float]:
    """Epoch seconds each state was first entered, from the job's timeline (events with no state left out)."""
    entered: dict[str, float] = {}
    for event in job["timeline"]:
        if event["status"] is not None:
            entered.setdefault(event["status"], datetime.fromisoformat(event["at"]).timestamp())
    return entered


def job_round(server: TrainingServer, admin: httpx.Client, dataset_id: str, n: int,
              hyperparameters: Mapping[str, Any], within_s: float = 300.0) -> JobRound:
    """One ``from_scratch`` job, waited for by polling; its times from its timeline and its runtime record."""
    submitted = time.time()
    job_id = submit(admin, name=f"bench-scratch-{n}", jobType="from_scratch", architecture=ARCH,
                    dataset={"datasetId": dataset_id}, hyperparameters=dict(hyperparameters))
    job = until(lambda: (j := get_job(admin, job_id))["status"] in TERMINAL and j, within_s, f"job {job_id} done")
    if job["status"] != "succeeded" or job["attempt"] != 1:
        raise AssertionError(f"job {job_id} did not succeed at its first attempt: {explain(admin, job)}")
    entered = state_changes(job)
    started, exited = ranks_span(server, job_id, 1)
    assert exited is not None
    curve = losses(admin, job_id)
    if len(curve) < 2 or not curve[-1] < curve[0]:
        raise AssertionError(f"job {job_id}: train_loss did not fall: {curve}")
    return JobRound(to_running_s=entered["running"] - submitted, to_succeeded_s=entered["succeeded"] - submitted,
                    to_trainer_s=started - submitted, trainer_s=exited - started, first_loss=curve[0],
                    last_loss=curve[-1], loss_points=len(curve))


# -- 2. metrics ingestion ---------------------------------------------------------------------------------

def point_bodies(post: int, points: int = MAX_METRICS_PER_POST, *, run_id: str | None = None) -> bytes:
    """Post number ``post``'s body: ``points`` points over ``KEYS`` keys at steps no other post uses; with
    ``run_id`` MLflow's ``runs/log-batch`` body, else the metrics endpoint's (the same points)."""
    per_key = -(-points // KEYS)
    now_ms = int(time.time() * 1000)
    metrics = [{"key": f"bench_{i % KEYS}", "value": 1.0 / (1 + post + i), "step": post * per_key + i // KEYS,
                "timestamp": now_ms} for i in range(points)]
    return _encode({"run_id": run_id, "metrics": metrics} if run_id is not None else {"metrics": metrics})


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear between the closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class IngestSide:
    path: Path_
    posters: int
    posts: int  # accepted
    points: int  # accepted
    wall_s: float
    p50_ms: float
    p99_ms: float
    failed: int

    @property
    def points_per_s(self) -> float:
        return self.points / self.wall_s if self.wall_s > 0 else 0.0


async def post_for(path: Path_, url: str, headers: Mapping[str, str], body: Callable[[int], bytes], *,
                   posters: int, duration_s: float, ok: int, points: int, timeout_s: float = 30.0) -> IngestSide:
    """``posters`` loops posting ``body(n)`` back to back until ``duration_s`` has passed (each post bounded by
    ``timeout_s``); the accepted posts' latencies and throughput over the whole span."""
    latencies: list[float] = []
    failures: list[str] = []
    numbers = itertools.count()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        started = time.monotonic()
        end = started + duration_s

        async def poster() -> None:
            while time.monotonic() < end:
                payload = body(next(numbers))
                sent = time.monotonic()
                try:
                    async with session.post(url, data=payload, headers=headers) as resp:
                        answer = await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    failures.append(type(exc).__name__)
                    continue
                if status == ok:
                    latencies.append(time.monotonic() - sent)
                else:
                    failures.append(f"{status} {answer[:300]!r}")

        await asyncio.gather(*(poster() for _ in range(posters)))
        wall = time.monotonic() - started
    if not latencies:
        raise AssertionError(f"{path}: no post accepted ({len(failures)} failed, first: {failures[:1]})")
    if failures:
        print(f"{path}, {posters} posters: {len(failures)} posts failed, first: {failures[0]}", file=sys.stderr)
    return IngestSide(path=path, posters=posters, posts=len(latencies), points=len(latencies) * points,
                      wall_s=wall, p50_ms=percentile(latencies, 50) * 1000, p99_ms=percentile(latencies, 99) * 1000,
                      failed=len(failures))


def ingest_round(server: TrainingServer, admin: httpx.Client, dataset_id: str, n: int, *, duration_s: float,
                 points: int = MAX_METRICS_PER_POST) -> list[IngestSide]:
    """Both paths at 1 and 4 posters into one running job's run; the path going first alternates with ``n``."""
    job_id = submit(admin, name=f"bench-ingest-{n}", jobType="from_scratch", architecture=ARCH,
                     dataset={"datasetId": dataset_id},
                     hyperparameters={"steps": 1_000_000, "sleepPerStep": 1.0, "logEvery": 1000})
    try:
        until(lambda: get_job(admin, job_id)["status"] == "running" and job_processes(job_id), 120,
               f"job {job_id} running")
        token = job_token(job_id)
        api = server.url + "/llm-ops/v1"
        paths: dict[Path_, tuple[str, dict[str, str], Callable[[int], bytes], int]] = {
            "metrics": (f"{api}/training/jobs/{job_id}/metrics", {"authorization": f"Bearer {token}"},
                        lambda k: point_bodies(k, points), 202),
            "mlflow": (f"{api}/{MLFLOW_PATH}/api/2.0/mlflow/runs/log-batch", {"authorization": f"Bearer {ADMIN_KEY}"},
                       lambda k: point_bodies(k, points, run_id=job_id), 200),
        }
        order: list[Path_] = ["metrics", "mlflow"] if n % 2 == 0 else ["mlflow", "metrics"]
        sides = []
        for path in order:
            url, headers, body, ok = paths[path]
            headers = {**headers, "content-type": "application/json"}
            for posters in POSTERS:
                sides.append(asyncio.run(post_for(path, url, headers, body, posters=posters, duration_s=duration_s,
                                                  ok=ok, points=points)))
        return sides
    finally:
        admin.post(f"/training/jobs/{job_id}/cancel")
        until(lambda: get_job(admin, job_id)["status"] in TERMINAL and not job_processes(job_id), 60,
               f"job {job_id} cancelled, no process left")


# -- 3. restart adoption ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RestartRound:
    kill_to_ready_s: float  # SIGKILL -> the new server's /readyz 200
    kill_to_adopted_s: float  # SIGKILL -> the "adopted" event's time on the timeline
    ready_to_found_s: float  # -> "adopted" on the job's timeline, seen through the API
    ready_to_change_s: float  # -> the job's next state change seen through the API
    exit_to_change_s: float  # the ranks exited -> that change seen
    change: str  # the state it changed to


def restart_round(server: TrainingServer, dataset_id: str, n: int, *, sleep_per_step: float = 0.05,
                  within_s: float = 180.0) -> RestartRound:
    """A job of 300 steps sleeping ``sleep_per_step`` each, the server SIGKILLed once it reports, started again."""
    with server.admin() as admin:
        job_id = submit(admin, name=f"bench-restart-{n}", jobType="from_scratch", architecture=ARCH,
                         dataset={"datasetId": dataset_id},
                         hyperparameters={"steps": 300, "sleepPerStep": sleep_per_step, "checkpointEvery": 100})
        until(lambda: get_job(admin, job_id)["status"] == "running" and len(losses(admin, job_id)) >= 2, 120,
               f"job {job_id} running and reporting")
    before = set(job_processes(job_id))
    killed, killed_wall = time.monotonic(), time.time()
    server.kill()
    if set(job_processes(job_id)) != before:
        raise AssertionError(f"job {job_id}: its processes did not outlive the control plane")
    ready = server.start()
    found_s = None
    with server.admin() as admin:
        while True:
            job = get_job(admin, job_id)
            now, now_wall = time.monotonic(), time.time()
            adopted = [e["at"] for e in job["timeline"] if e["event"] == "adopted"]
            if found_s is None and adopted:
                found_s, adopted_at = now - ready, datetime.fromisoformat(adopted[-1]).timestamp()
            if job["status"] != "running":
                break
            if now - ready > within_s:
                raise TimeoutError(f"job {job_id} still running {within_s:g} s after the restart")
            time.sleep(0.05)
        if job["status"] != "succeeded" or found_s is None:
            raise AssertionError(f"job {job_id} not found again and finished: {explain(admin, job)}")
    _, exited = ranks_span(server, job_id, int(job["attempt"]))
    assert exited is not None
    return RestartRound(kill_to_ready_s=ready - killed, kill_to_adopted_s=adopted_at - killed_wall,
                        ready_to_found_s=found_s, ready_to_change_s=now - ready, exit_to_change_s=now_wall - exited,
                        change=str(job["status"]))


# -- the table and the section ----------------------------------------------------------------------------

def _spread(values: Sequence[float], digits: int = 2) -> str:
    return f"{statistics.median(values):.{digits}f} | {min(values):.{digits}f} | {max(values):.{digits}f}"


def _ranged(values: Sequence[float], digits: int = 3) -> str:
    return f"{statistics.median(values):.{digits}f} (range {min(values):.{digits}f} to {max(values):.{digits}f})"


def bench_table(jobs: Sequence[JobRound], sides: Sequence[IngestSide], restarts: Sequence[RestartRound], *,
                steps: int, rows: int, points: int = MAX_METRICS_PER_POST) -> str:
    """Markdown: medians and ranges over the rounds of each measurement."""
    if not jobs or not restarts or not sides:
        raise ValueError("at least one round of each measurement")
    labels = {"metrics": "`POST training/jobs/{id}/metrics`, job token",
              "mlflow": "MLflow `runs/log-batch`, admin key"}
    ingest = []
    for path, posters in itertools.product(("metrics", "mlflow"), POSTERS):
        mine = [s for s in sides if s.path == path and s.posters == posters]
        if mine:
            rate = [s.points_per_s for s in mine]
            ingest.append(f"| {labels[path]} | {posters} | {statistics.median(rate):,.0f} | {min(rate):,.0f} | "
                          f"{max(rate):,.0f} | {statistics.median(s.p50_ms for s in mine):.1f} | "
                          f"{statistics.median(s.p99_ms for s in mine):.1f} | {max(s.p99_ms for s in mine):.1f} | "
                          f"{sum(s.posts for s in mine):,} |")
    changes = sorted({r.change for r in restarts})
    return "\n".join([
        f"| A `from_scratch` job, {rows} rows, {steps} steps (seconds) | median | min | max |",
        "|---|---:|---:|---:|",
        f"| submit → `running` (on the job's timeline, so in the API) | {_spread([j.to_running_s for j in jobs])} |",
        f"| submit → `succeeded`, the model registered | {_spread([j.to_succeeded_s for j in jobs])} |",
        f"| the trainer's own wall time (its process started → exited) | {_spread([j.trainer_s for j in jobs])} |",
        f"| the platform's share: submit → `succeeded` minus the trainer's | {_spread([j.overhead_s for j in jobs])} |",
        f"| of it, submit → the trainer's process started (queue, launch, supervisor) "
        f"| {_spread([j.to_trainer_s for j in jobs])} |",
        f"| of it, the trainer exited → `succeeded` (detection, output registered in the catalog) "
        f"| {_spread([j.after_trainer_s for j in jobs])} |",
        "",
        f"Loss (`train_loss`, the mean over each `logEvery` window), median over rounds: first "
        f"{_ranged([j.first_loss for j in jobs])}, last {_ranged([j.last_loss for j in jobs])}; it fell in every "
        f"round ({statistics.median(j.loss_points for j in jobs):.0f} points a job).",
        "",
        f"| Metrics ingestion, {points:,} points a post | posters | points/s median | min | max | p50 ms a post "
        "| p99 ms (median) | p99 ms (max) | posts |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *ingest,
        "",
        "| Restart: SIGKILL the server while a job runs, start it again (seconds) | median | min | max |",
        "|---|---:|---:|---:|",
        f"| SIGKILL → the new server ready (`/readyz`) | {_spread([r.kill_to_ready_s for r in restarts])} |",
        f"| SIGKILL → `adopted` on the job's timeline (its recorded time) "
        f"| {_spread([r.kill_to_adopted_s for r in restarts])} |",
        f"| ready → the job found again (`adopted` on its timeline), seen through the API "
        f"| {_spread([r.ready_to_found_s for r in restarts])} |",
        f"| ready → the job's next state change (`{'`, `'.join(changes)}`), seen through the API "
        f"| {_spread([r.ready_to_change_s for r in restarts])} |",
        f"| the trainer exited → that change seen | {_spread([r.exit_to_change_s for r in restarts])} |",
        "",
        f"Rounds: {len(jobs)}. Failed posts: {sum(s.failed for s in sides)}.",
    ])


def _section(table: str, command: str, *, steps: int, ingest_s: float) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    fast = ", ".join(f"`{k}={v}`" for k, v in FAST.items())
    return "\n".join([
        "<!-- training:start (written by loadtests/training_bench.py --doc) -->",
        "## Training on the embedded default: job latency, metrics ingestion, restart adoption",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores, load {load}",
        f"- OS: {platform.platform()}; Python {platform.python_version()}",
        "- One `llmops serve` on the embedded default (SQLite, the local object store, `LocalTrainingRuntime`, the",
        "  reference trainer on CPU) with the end-to-end test's settings:",
        f"  {fast}.",
        "  Nothing is pinned: the server, the trainer processes and this client share the cores.",
        f"- The job: `from_scratch`, architecture `{_encode(ARCH).decode()}`,",
        f"  hyperparameters `steps` {steps}, the rest the reference trainer's defaults (`batchSize` 64,",
        "  `learningRate` 0.003 with warm-up and cosine decay, `logEvery` 10, `evalEvery` 50, `checkpointEvery`",
        "  100, `seed` 0), on the end-to-end test's dataset (short prompt/completion rows). Its times run from",
        "  the submit call's start to the state changes on its timeline (what the API shows from then on) and to",
        "  the trainer process's start and exit in the runtime's `state.json`, all on this machine's clock; the",
        "  trainer's wall time covers its Python start, imports, the dataset download, training and the output",
        "  upload. The trainer is seeded, so its loss curve is the same in every round.",
        f"- Ingestion: {ingest_s:g} s per line per round into a running job's run (a job sleeping 1 s a step);",
        f"  bodies of 1,000 points over {KEYS} keys with timestamps, the same points on both paths, posted back to",
        "  back by 1 or 4 concurrent aiohttp posters; each round alternates which path goes first. The job token",
        "  is read from the job's process environment. Points/s counts accepted points over the whole span.",
        "- Restart: a job of 300 steps sleeping 50 ms a step, the server SIGKILLed once the job reports and",
        "  started again on the same directory and port, then the job polled every 50 ms. The dead server's lease",
        "  lapses `TRAINING_LEASE_S` after its last renewal (3 s here, 30 s by default), and the new server's",
        "  first supervisor pass adopts the job; when the lease has lapsed by then, that pass runs during",
        "  start-up, so `adopted` can be recorded before `/readyz` answers and \"ready → found again\" is one",
        "  poll. The trainer keeps running meanwhile, so ready → the next state change is mostly the rest of",
        "  its run; the last row is the platform's part.",
        "- Other work ran on the machine meanwhile (the load average above).",
        "",
        "```",
        command,
        "```",
        "",
        table,
        "<!-- training:end -->",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="training_bench", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=200, help="the from_scratch job's steps (default 200)")
    p.add_argument("--rows", type=int, default=200, help="dataset rows (default 200)")
    p.add_argument("--ingest-s", type=float, default=5.0, help="seconds per ingestion line per round (at most 5)")
    p.add_argument("--points", type=int, default=MAX_METRICS_PER_POST, help=argparse.SUPPRESS)  # smaller: tests
    p.add_argument("--restart-sleep", type=float, default=0.05, help=argparse.SUPPRESS)  # shorter: tests
    p.add_argument("--doc", type=Path, help="write the tables into this markdown file's training section")
    args = p.parse_args(argv)
    if not 0 < args.ingest_s <= 5:
        p.error("--ingest-s must be in (0, 5]")
    jobs: list[JobRound] = []
    sides: list[IngestSide] = []
    restarts: list[RestartRound] = []
    with tempfile.TemporaryDirectory(prefix="llmops-training-bench-") as tmp, running_server(Path(tmp)) as server:
        with server.admin() as admin:
            dataset_id = upload_dataset(admin, "bench-cats", cat_rows(args.rows), owner_team="ml")
        for n in range(args.rounds):
            with server.admin() as admin:
                jobs.append(job_round(server, admin, dataset_id, n, {"steps": args.steps}))
                sides.extend(ingest_round(server, admin, dataset_id, n, duration_s=args.ingest_s,
                                          points=args.points))
            restarts.append(restart_round(server, dataset_id, n, sleep_per_step=args.restart_sleep))
            j, r = jobs[-1], restarts[-1]
            print(f"round {n + 1}: submit->running {j.to_running_s:.2f} s, ->succeeded {j.to_succeeded_s:.2f} s "
                  f"(trainer {j.trainer_s:.2f} s), loss {j.first_loss:.3f} -> {j.last_loss:.3f}; "
                  + ", ".join(f"{s.path}x{s.posters} {s.points_per_s:,.0f} points/s" for s in sides[-4:])
                  + f"; restart ready->found {r.ready_to_found_s:.2f} s, ->{r.change} {r.ready_to_change_s:.2f} s",
                  file=sys.stderr, flush=True)
        logs = server.logs()
    if "ljt_" in logs:
        raise AssertionError("a job token reached the server's log")
    if "Traceback" in logs:
        print(f"warning: the server's log holds a traceback:\n{logs[-3000:]}", file=sys.stderr)
    table = bench_table(jobs, sides, restarts, steps=args.steps, rows=args.rows, points=args.points)
    print(table)
    if args.doc:
        command = (f".venv/bin/python -m loadtests.training_bench --rounds {args.rounds} --steps {args.steps} "
                   f"--ingest-s {args.ingest_s:g} --doc {args.doc}")
        write_section(args.doc, "training", _section(table, command, steps=args.steps, ingest_s=args.ingest_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
