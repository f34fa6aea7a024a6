"""A restartable ``llmops serve`` on the embedded default and the job helpers the training benchmark drives it with.

``TrainingServer`` runs ``llmops serve`` with the end-to-end test's fast ``TRAINING_*`` settings (``FAST``) in a
directory it keeps across a SIGKILL and a fresh start on the same port, as ``tests/control/training/
test_end_to_end_local.py`` does; ``job_processes`` and ``job_token`` read a job's processes from ``/proc`` (the
bench runs on the same machine as the local runtime). Waits are bounded; nothing here prints a token.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec

from loadtests.eval_bench import data
from loadtests.procs import ProcessFailed, free_port, start_process, stop_process

__all__ = [
    "ADMIN_KEY", "ARCH", "FAST", "TERMINAL", "TrainingServer", "cat_rows", "explain", "get_job", "job_processes",
    "job_token", "losses", "ranks_span", "running_server", "submit", "until",
]

ADMIN_KEY = "training-bench-admin-key-not-a-secret"
FAST = {  # the end-to-end test's: a supervisor that reacts in tenths of a second and takes over a dead one's jobs fast
    "TRAINING_SYNC_INTERVAL_S": "0.3", "TRAINING_LEASE_S": "3", "TRAINING_DEFAULT_BACKOFF_S": "0.5",
    "TRAINING_CANCEL_GRACE_S": "2", "TRAINING_MAX_CONCURRENT_JOBS": "4",
}
ARCH = {"contextLength": 8, "embeddingDim": 16, "hiddenDim": 64}
TERMINAL = ("succeeded", "failed", "cancelled")


def cat_rows(n: int) -> list[dict[str, str]]:
    """The end-to-end test's dataset: short, regular prompt/completion pairs a byte-level model learns fast."""
    colours = ["red", "green", "blue", "black", "white"]
    return [{"prompt": f"The {colours[i % 5]} cat number {i} says", "completion": f" meow {i % 7}."}
            for i in range(n)]


# -- the live server, restartable on the same directory and port ------------------------------------------

@dataclass
class TrainingServer:
    workdir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url + "/llm-ops/v1", timeout=30,
                            headers={"authorization": f"Bearer {ADMIN_KEY}"})

    def start(self, within_s: float = 90.0) -> float:
        """``llmops serve`` with ``FAST``; the monotonic time ``/readyz`` first answered 200."""
        self.proc = start_process([sys.executable, "-m", "gateway.cli", "serve", "--port", str(self.port)],
                                  cwd=self.workdir, log=self.workdir / f"serve-{time.time_ns()}.log",
                                  env={"LLMOPS_ADMIN_KEY": ADMIN_KEY, **FAST})
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ProcessFailed(f"llmops serve exited {self.proc.returncode}:\n{self.logs()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return time.monotonic()
            time.sleep(0.02)
        raise ProcessFailed(f"llmops serve not ready in {within_s:g} s:\n{self.logs()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL, as a crashed node would: no lease given back, nothing flushed."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout_s=30)

    def state_dir(self) -> Path:
        return self.workdir / ".llmops" / "training"  # <data_dir>/training, data_dir's default .llmops

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("serve-*.log")))


@contextlib.contextmanager
def running_server(workdir: Path) -> Iterator[TrainingServer]:
    server = TrainingServer(workdir=workdir, port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
        _kill_leftovers(workdir)


def job_processes(job_id: str) -> dict[int, bytes]:
    """Live processes whose environment names the job (its supervisor and ranks): pid -> environment."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if f"LLMOPS_JOB_ID={job_id}".encode() in environ.split(b"\0") and state != "Z":
            found[int(proc.name)] = environ
    return found


def job_token(job_id: str) -> str:
    """The running job's token, from its processes' environment (never printed)."""
    for environ in job_processes(job_id).values():
        for item in environ.split(b"\0"):
            if item.startswith(b"LLMOPS_JOB_TOKEN="):
                return item.split(b"=", 1)[1].decode()
    raise AssertionError(f"no process of job {job_id} holds its token")


def _kill_leftovers(workdir: Path) -> None:
    """Whatever a failed run left running under this directory's runtime (nothing when it passed)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if str(workdir).encode() in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)


def until(check: Callable[[], Any], within_s: float, what: str, poll_s: float = 0.05) -> Any:
    deadline = time.monotonic() + within_s
    while not (value := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not seen within {within_s:g} s: {what}")
        time.sleep(poll_s)
    return value


def submit(admin: httpx.Client, **body: Any) -> str:
    return str(data(admin.post("/training/jobs", json=body), 201)["id"])


def get_job(admin: httpx.Client, job_id: str) -> dict[str, Any]:
    found: dict[str, Any] = data(admin.get(f"/training/jobs/{job_id}"))
    return found


def explain(admin: httpx.Client, found: dict[str, Any]) -> str:
    """What a failure shows about a job: its reason, timeline and last attempt's log (tokens masked there)."""
    logs = admin.get(f"/training/jobs/{found['id']}/logs").text
    timeline = [(e["event"], e["reason"]) for e in found["timeline"]]
    return f"{found['status']} ({found['reason']}): {timeline}\n{logs[-2000:]}"


def losses(admin: httpx.Client, job_id: str) -> list[float]:
    exp = data(admin.get(f"/training/experiments/{job_id}", params={"keys": "train_loss"}))
    return [float(p["value"]) for p in exp["metrics"].get("train_loss", [])]


def ranks_span(server: TrainingServer, job_id: str, attempt: int) -> tuple[float, float | None]:
    """Epoch seconds the attempt's ranks were started and exited (the supervisor's ``state.json``)."""
    state = msgspec.json.decode((server.state_dir() / job_id / f"a{attempt}" / "state.json").read_bytes())
    return float(state["started_at"]), None if state["finished_at"] is None else float(state["finished_at"])
