"""``LocalTrainingRuntime``: the embedded default; each attempt is a supervised process group on this machine.

Unlike a local serving process, an attempt outlives the control plane: ``submit`` starts a detached supervisor
(``supervise.py``) that owns the ranks and records the attempt in ``<state_dir>/<job_id>/a<attempt>/state.json``.
Everything the runtime knows is on disk, so a new runtime object on the same directory (a restarted control
plane) finds every attempt with ``active()`` and follows it with ``status()`` and ``watch()``; ``aclose`` stops
watching and leaves attempts running.

``status`` trusts ``state.json`` while its supervisor lives (pid and start time, so a reused pid is not taken
for it); an attempt still ``pending`` or ``running`` whose supervisor is gone is ``failed`` with
``SupervisorLost`` (its ranks died with it: ``PR_SET_PDEATHSIG``). The job token reaches the ranks through the
supervisor's environment only: it is in no file, no ``render`` and no status. Logs are shown with anything
shaped like a job token masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import msgspec

from adapters.training.base import AttemptRef, AttemptStatus, LaunchSpec, RuntimeFailure
from adapters.training.contract import JOB_TOKEN_PREFIX
from adapters.training.local.environment import THREAD_VARS, TORCHRUN_VARS, cpu_threads, resolve_command, safe_env
from adapters.training.local.files import (
    FINAL_PHASES,
    AttemptPaths,
    attempt_paths,
    list_attempts,
    read_json,
    tail_lines,
    valid_job_id,
    write_json,
)
from adapters.training.local.procs import running, signal_group, signal_process
from adapters.training.settings import TrainingSettings

__all__ = ["WATCH_INTERVAL_S", "LocalTrainingRuntime"]

WATCH_INTERVAL_S = 0.2
_LAUNCH_TIMEOUT_S = 30.0  # the launcher exits once the supervisor has recorded itself: ~0.1 s
_CANCEL_MARGIN_S = 2.0  # past the grace, for the supervisor to reap its ranks and record Cancelled
_POLL_S = 0.05
_TOKEN = re.compile(re.escape(JOB_TOKEN_PREFIX) + r"[A-Za-z0-9_-]+")
_Key = tuple[str, int]


def _mask(text: str) -> str:
    return _TOKEN.sub(JOB_TOKEN_PREFIX + "***", text)


class LocalTrainingRuntime:
    """Attempts as supervised process groups here, behind ``adapters.training.base.TrainingRuntime``."""

    name: Literal["kubernetes", "local"] = "local"

    def __init__(self, settings: TrainingSettings, state_dir: Path, *, python: str | None = None) -> None:
        self._settings = settings
        self._dir = Path(state_dir).resolve()  # absolute: the supervisor runs with the attempt dir as its cwd
        self._python = python or settings.local_python or sys.executable  # runs the trainers
        self._closed = asyncio.Event()
        self._launching: set[_Key] = set()
        self._locks: dict[_Key, asyncio.Lock] = {}

    # -- the protocol -----------------------------------------------------------------------------

    def render(self, spec: LaunchSpec) -> list[dict[str, Any]]:
        res = spec.resources
        env_names = {*safe_env(), *THREAD_VARS, *spec.env, *TORCHRUN_VARS} - set(spec.secret_env)
        return [{
            "kind": "LocalTrainingAttempt", "name": f"{spec.job_name}-a{spec.attempt}", "jobId": spec.job_id,
            "attempt": spec.attempt, "jobType": spec.job_type, "image": spec.image,
            "command": resolve_command(spec.command, self._python),
            "directory": str(self._paths(spec.job_id, spec.attempt).root),
            "env": sorted(env_names), "secretEnv": sorted(spec.secret_env), "nodes": res.nodes,
            "limits": {"cpu": res.cpu_limit, "threads": cpu_threads(res.cpu_limit), "memory": res.memory_limit,
                       "gpusPerNode": res.gpus_per_node},
            "deadlineS": spec.deadline_s, "labels": dict(spec.labels)}]

    async def submit(self, spec: LaunchSpec) -> list[dict[str, Any]]:
        if self._closed.is_set():
            raise RuntimeFailure("the local training runtime is shut down")
        if not valid_job_id(spec.job_id) or spec.attempt < 1:
            raise RuntimeFailure("the job id or attempt cannot name a local attempt directory")
        if not spec.command:
            raise RuntimeFailure("the command is empty")
        if spec.resources.nodes < 1:
            raise RuntimeFailure("nodes must be at least 1")
        manifests = self.render(spec)
        key = (spec.job_id, spec.attempt)
        async with self._locks.setdefault(key, asyncio.Lock()):
            self._launching.add(key)
            try:
                await asyncio.to_thread(self._launch, spec, self._paths(*key))
            finally:
                self._launching.discard(key)
                self._locks.pop(key, None)
        return manifests

    async def status(self, job_id: str, attempt: int) -> AttemptStatus:
        return await asyncio.to_thread(self._status, job_id, attempt)

    async def watch(self) -> AsyncIterator[AttemptStatus]:
        """Every attempt's status when first seen, then on each change, until ``aclose``.

        Each poll stats the state files; only an attempt whose file changed, or that is still pending or
        running (its supervisor may vanish), is read again. An attempt whose directory disappears yields
        ``absent`` once.
        """
        seen: dict[_Key, tuple[tuple[int, int, int] | None, AttemptStatus]] = {}
        while not self._closed.is_set():
            for change in await asyncio.to_thread(self._scan, seen):
                yield change
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), WATCH_INTERVAL_S)

    async def active(self) -> list[AttemptRef]:
        found = await asyncio.to_thread(list_attempts, self._dir)
        return [AttemptRef(job_id=job_id, attempt=attempt) for job_id, attempt in found]

    async def cancel(self, job_id: str, attempt: int, *, grace_s: float = 10.0) -> None:
        """SIGTERM the supervisor (it stops the ranks within ``grace_s`` and records ``Cancelled``); if it is
        still there ``grace_s`` + 2 s later, SIGKILL it and the ranks' process groups and record it here."""
        if not valid_job_id(job_id):
            return
        paths = self._paths(job_id, attempt)
        state = await asyncio.to_thread(read_json, paths.state)
        if not isinstance(state, dict) or state.get("phase") in FINAL_PHASES:
            return  # nothing started, or it ended already
        await asyncio.to_thread(write_json, paths.cancel, {"grace_s": grace_s, "requested_at": time.time()})
        pid, start = state.get("supervisor_pid"), state.get("supervisor_start")
        if signal_process(pid, start, signal.SIGTERM):
            await self._wait_gone(pid, start, grace_s + _CANCEL_MARGIN_S)
        if signal_process(pid, start, signal.SIGKILL):
            await self._wait_gone(pid, start, 5.0)
        await asyncio.to_thread(self._finish_cancelled, paths)

    async def logs(self, job_id: str, attempt: int, *, tail_lines: int = 200) -> str:
        if not valid_job_id(job_id):
            return ""
        return await asyncio.to_thread(self._logs, self._paths(job_id, attempt), tail_lines)

    async def cleanup(self, job_id: str, attempt: int) -> None:
        if not valid_job_id(job_id):
            return
        if (job_id, attempt) in self._launching:
            raise RuntimeFailure("the attempt is being started")
        await asyncio.to_thread(self._remove, self._paths(job_id, attempt))

    async def aclose(self) -> None:
        """Stop watching; attempts keep running (a restarted control plane adopts them)."""
        self._closed.set()

    # -- internals --------------------------------------------------------------------------------

    def _paths(self, job_id: str, attempt: int) -> AttemptPaths:
        return attempt_paths(self._dir, job_id, attempt)

    def _spec_doc(self, spec: LaunchSpec) -> dict[str, Any]:
        """``spec.json``: the spec without ``secret_env`` (its names only), and what the supervisor needs."""
        doc: dict[str, Any] = msgspec.to_builtins(spec)
        del doc["secret_env"]
        doc.update(argv=resolve_command(spec.command, self._python), secret_env_names=sorted(spec.secret_env),
                   nodes=spec.resources.nodes, threads=cpu_threads(spec.resources.cpu_limit),
                   grace_s=self._settings.cancel_grace_s, created_at=time.time())
        return doc

    def _launch(self, spec: LaunchSpec, paths: AttemptPaths) -> None:
        """Start the attempt's supervisor unless it has one (running or finished); blocking."""
        if read_json(paths.state) is not None:
            return
        try:
            paths.work.mkdir(parents=True, exist_ok=True)
            write_json(paths.spec, self._spec_doc(spec))
            env = {**safe_env(), **spec.secret_env}  # the only way the token travels
            with open(paths.supervisor_log, "ab") as log:
                launcher = subprocess.Popen(
                    [sys.executable, "-P", "-m", "adapters.training.local.supervise", str(paths.root)],
                    cwd=paths.root, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True)
        except OSError as exc:
            raise RuntimeFailure(f"cannot start the attempt in the local training directory: {exc.strerror}") \
                from None
        try:
            code = launcher.wait(_LAUNCH_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            launcher.kill()
            launcher.wait()
            raise RuntimeFailure("the attempt's supervisor did not start in time", retryable=True) from None
        if code != 0 or read_json(paths.state) is None:
            raise RuntimeFailure(f"the attempt's supervisor did not start (exit code {code}); "
                                 f"see {paths.supervisor_log}")

    def _status(self, job_id: str, attempt: int) -> AttemptStatus:
        if not valid_job_id(job_id):
            return AttemptStatus(job_id=job_id, attempt=attempt, phase="absent")
        paths = self._paths(job_id, attempt)
        state = read_json(paths.state)
        if isinstance(state, dict) and state.get("phase") not in FINAL_PHASES and not running(
                state.get("supervisor_pid"), state.get("supervisor_start")):
            state = read_json(paths.state)  # it may have recorded its end just before it exited
        if not isinstance(state, dict):
            launching = (job_id, attempt) in self._launching
            return AttemptStatus(job_id=job_id, attempt=attempt, phase="pending" if launching else "absent")
        return _to_status(job_id, attempt, state, paths)

    def _scan(self, seen: dict[_Key, tuple[tuple[int, int, int] | None, AttemptStatus]]) -> list[AttemptStatus]:
        changes: list[AttemptStatus] = []
        present = set(list_attempts(self._dir))
        for key in sorted(present):
            try:
                st = os.stat(self._paths(*key).state)
                signature: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
            except OSError:
                signature = None
            prior = seen.get(key)
            if prior is not None and prior[0] == signature and prior[1].phase in FINAL_PHASES:
                continue
            status = self._status(*key)
            if prior is None or prior[1] != status:
                changes.append(status)
            seen[key] = (signature, status)
        for key in [key for key in seen if key not in present]:
            del seen[key]
            changes.append(AttemptStatus(job_id=key[0], attempt=key[1], phase="absent"))
        return changes

    @staticmethod
    async def _wait_gone(pid: int | None, start: int | None, timeout_s: float) -> None:
        """Poll: the process is not our child (no exit event to wait for)."""
        deadline = time.monotonic() + timeout_s
        while running(pid, start):
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(_POLL_S)

    def _finish_cancelled(self, paths: AttemptPaths) -> None:
        """After the supervisor is gone: kill what is left of the ranks, and record Cancelled if it did not."""
        state = read_json(paths.state)
        if not isinstance(state, dict):
            return
        for rank in state.get("ranks", []):
            signal_group(rank.get("pid"), rank.get("start"), signal.SIGKILL)
        if state.get("phase") not in FINAL_PHASES:
            state.update(phase="failed", exit_code=None, reason="Cancelled", finished_at=time.time(),
                         message="cancelled; the supervisor did not stop in time and was killed")
            write_json(paths.state, state)

    def _logs(self, paths: AttemptPaths, lines: int) -> str:
        out = [f"[rank {rank}] {line}" for rank, path in paths.rank_logs() for line in tail_lines(path, lines)]
        out += [f"[supervisor] {line}" for line in tail_lines(paths.supervisor_log, lines)]
        return _mask("\n".join(out))

    def _remove(self, paths: AttemptPaths) -> None:
        state = read_json(paths.state)
        if isinstance(state, dict):
            if state.get("phase") not in FINAL_PHASES and running(state.get("supervisor_pid"),
                                                                   state.get("supervisor_start")):
                raise RuntimeFailure("the attempt is still running: cancel it first")
            for rank in state.get("ranks", []):
                signal_group(rank.get("pid"), rank.get("start"), signal.SIGKILL)  # orphans of a lost supervisor
        try:
            shutil.rmtree(paths.root)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise RuntimeFailure(f"cannot remove the attempt's directory: {exc.strerror}") from None
        with contextlib.suppress(OSError):
            paths.root.parent.rmdir()  # the job's directory, once its last attempt is gone


def _to_status(job_id: str, attempt: int, state: dict[str, Any], paths: AttemptPaths) -> AttemptStatus:
    phase = state.get("phase")
    pid, start = state.get("supervisor_pid"), state.get("supervisor_start")
    details: dict[str, Any] = {"directory": str(paths.root), "supervisorPid": pid, "pids": state.get("pids", []),
                               "ranks": [{"rank": r.get("rank"), "pid": r.get("pid"), "exitCode": r.get("exit_code")}
                                         for r in state.get("ranks", [])],
                               "masterPort": state.get("master_port")}
    common: dict[str, Any] = {"job_id": job_id, "attempt": attempt, "started_at": state.get("started_at"),
                              "details": details}
    if phase in FINAL_PHASES:
        return AttemptStatus(phase=phase, exit_code=state.get("exit_code"), reason=state.get("reason"),
                             message=_mask(str(state.get("message", ""))), finished_at=state.get("finished_at"),
                             **common)
    if phase in ("pending", "running") and running(pid, start):
        return AttemptStatus(phase=phase, **common)
    return AttemptStatus(phase="failed", reason="SupervisorLost",
                         message=f"the attempt's supervisor (pid {pid}) ended without recording an outcome",
                         **common)
