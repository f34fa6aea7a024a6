"""``python -m adapters.training.local.supervise <attempt dir>``: one attempt's supervisor, outliving the control plane.

The control plane starts this in a new session with stdin on ``/dev/null`` and waits for it to exit, which it
does at once: it forks the real supervisor (so the control plane is never its parent and never has to reap
it), which records itself in ``state.json`` (pid and start time) and only then lets the launcher exit. So
``submit`` returns with the attempt on disk, and a control plane that restarts finds it there.

The supervisor then runs ``nodes`` ranks of the spec's command, each the leader of its own process group,
with ``PR_SET_PDEATHSIG`` = SIGKILL so no rank outlives a supervisor killed with SIGKILL, and its output in
``rank-<n>.log``. It ends when

* every rank exited 0: ``succeeded``, exit code 0;
* a rank failed: the others are stopped (fail fast); ``failed``, that rank's exit code, reason
  ``ProcessExited`` (or ``Signal:<name>`` when a signal ended it, exit code 128 + n);
* the deadline passed: the ranks are stopped; ``failed``, ``DeadlineExceeded``;
* it got SIGTERM or SIGINT (a cancel; ``cancel.json`` carries the grace): the ranks are stopped;
  ``failed``, ``Cancelled``.

Stopping a rank is SIGTERM to its process group, then SIGKILL after the grace (``cancel_grace_s``). Nothing
secret is written: the job token reaches the ranks through this process's environment only. It waits on a
self-pipe that ``SIGCHLD`` and the stop signals write to, so it reacts at once and otherwise wakes once a second.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, Literal

from adapters.training.local.environment import rank_env
from adapters.training.local.files import AttemptPaths, AttemptState, RankState, read_json, write_json
from adapters.training.local.procs import signal_group, signal_name, start_time

__all__ = ["MAX_LOG_BYTES", "main"]

MAX_LOG_BYTES = 64 * 1024 * 1024  # per rank log; past it the log moves to rank-<n>.log.1 (one generation kept)
_PR_SET_PDEATHSIG = 1
_POLL_S = 1.0
_TRIM_EVERY_S = 5.0
_REAP_AFTER_KILL_S = 10.0
# Loaded before any fork: the rank's pre-exec step must not load a library.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _note(line: str) -> None:
    """One line in supervisor.log (this process's stdout)."""
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}", flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with(parent: int) -> Callable[[], None]:
    """The rank's step between fork and exec: SIGKILL when ``parent`` dies (survives exec)."""
    def setup() -> None:
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)  # the supervisor died before the flag was set
    return setup


class Supervisor:
    def __init__(self, paths: AttemptPaths, spec: dict[str, Any]) -> None:
        self.paths = paths
        self.command: list[str] = [str(arg) for arg in spec["argv"]]
        self.nodes = int(spec["nodes"])
        self.threads = int(spec["threads"])
        self.deadline_s: float | None = None if spec.get("deadline_s") is None else float(spec["deadline_s"])
        self.grace_s = float(spec["grace_s"])
        self.env: dict[str, str] = {str(k): str(v) for k, v in spec.get("env", {}).items()}
        self.secret_names: list[str] = [str(name) for name in spec.get("secret_env_names", [])]
        self.ranks: list[tuple[subprocess.Popen[bytes], RankState]] = []
        self.cancelled = False
        self._lock_fd: int | None = None
        self._wake_r = self._wake_w = -1
        me = os.getpid()
        self.state: AttemptState = {
            "phase": "pending", "supervisor_pid": me, "supervisor_start": start_time(me), "pids": [], "ranks": [],
            "master_port": None, "started_at": None, "finished_at": None, "exit_code": None, "reason": None,
            "message": ""}

    def run(self, ready_fd: int) -> int:
        try:
            if not self._lock() or read_json(self.paths.state) is not None:
                _note("this attempt has (or had) a supervisor already; leaving it alone")
                return 0
            self._install_signals()
            self._save()
        finally:
            os.write(ready_fd, b"1")  # the launcher exits: submit returns
            os.close(ready_fd)
        try:
            return self._supervise()
        except BaseException as exc:
            self._kill_all(signal.SIGKILL)
            self._finish(None, "SupervisorError", f"the supervisor failed: {type(exc).__name__}")
            raise

    # -- the attempt ------------------------------------------------------------------------------

    def _supervise(self) -> int:
        if self._cancel_requested():
            return self._finish(None, "Cancelled", "cancelled before the ranks started")
        self.paths.work.mkdir(exist_ok=True)
        port = _free_port()
        secrets = {name: os.environ[name] for name in self.secret_names if name in os.environ}
        base = {k: v for k, v in os.environ.items() if k not in secrets}
        started, now = time.time(), time.monotonic()
        for rank in range(self.nodes):
            env = rank_env(base, self.env, secrets, rank=rank, world_size=self.nodes, master_port=port,
                           threads=self.threads)
            try:
                self._spawn(rank, env)
            except OSError as exc:
                self._stop(self.grace_s)
                code = 126 if isinstance(exc, PermissionError) else 127  # as a shell reports it
                return self._finish(code, "ProcessExited", f"rank {rank}: cannot run {self.command[0]!r}: "
                                                           f"{exc.strerror}")
        self.state["phase"], self.state["started_at"], self.state["master_port"] = "running", started, port
        self.state["pids"] = [popen.pid for popen, _ in self.ranks]
        self.state["ranks"] = [rs for _, rs in self.ranks]
        self._save()
        _note(f"started {self.nodes} rank(s): pids {self.state['pids']}")
        deadline = None if self.deadline_s is None else now + self.deadline_s
        next_trim = now + _TRIM_EVERY_S
        while True:
            failure = self._reap()
            if failure is not None:
                return self._fail_fast(*failure)
            if all(popen.returncode is not None for popen, _ in self.ranks):
                self._kill_all(signal.SIGKILL)  # whatever a rank left running in its group
                return self._finish(0, None, "every rank exited with code 0")
            if self._cancel_requested():
                self._stop(self._cancel_grace())
                return self._finish(None, "Cancelled", "cancelled")
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                _note(f"the deadline of {self.deadline_s:g} s passed: stopping the ranks")
                self._stop(self.grace_s)
                return self._finish(None, "DeadlineExceeded", f"the deadline of {self.deadline_s:g} s passed")
            if now >= next_trim:
                self._trim_logs()
                next_trim = now + _TRIM_EVERY_S
            self._sleep(_POLL_S if deadline is None else min(_POLL_S, deadline - now))

    def _spawn(self, rank: int, env: dict[str, str]) -> None:
        with open(self.paths.rank_log(rank), "ab") as log:
            popen = subprocess.Popen(self.command, cwd=self.paths.work, env=env, stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=_die_with(os.getpid()))
        self.ranks.append((popen, {"rank": rank, "pid": popen.pid, "start": start_time(popen.pid),
                                   "exit_code": None}))

    def _reap(self) -> tuple[int, int] | None:
        """Record the ranks that exited; the first failing one as ``(rank, returncode)``."""
        failure = None
        for popen, rs in self.ranks:
            if rs["exit_code"] is not None or (rc := popen.poll()) is None:
                continue
            rs["exit_code"] = 128 - rc if rc < 0 else rc
            _note(f"rank {rs['rank']} (pid {popen.pid}) exited with code {rs['exit_code']}")
            if rc != 0 and failure is None:
                failure = (rs["rank"], rc)
        return failure

    def _fail_fast(self, rank: int, rc: int) -> int:
        if self.nodes > 1:
            _note(f"rank {rank} failed: stopping the other ranks")
        self._stop(self.grace_s)
        if rc < 0:
            name = signal_name(-rc)
            return self._finish(128 - rc, f"Signal:{name}", f"rank {rank} was ended by {name}")
        return self._finish(rc, "ProcessExited", f"rank {rank} exited with code {rc}")

    def _stop(self, grace_s: float) -> None:
        """SIGTERM every running rank's group, SIGKILL after ``grace_s``, reap them all."""
        for popen, rs in self.ranks:
            if popen.poll() is None:
                signal_group(popen.pid, rs["start"], signal.SIGTERM)
        end = time.monotonic() + grace_s
        while any(popen.poll() is None for popen, _ in self.ranks) and (left := end - time.monotonic()) > 0:
            self._sleep(min(_POLL_S, left))
        self._kill_all(signal.SIGKILL)
        for popen, _ in self.ranks:
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(_REAP_AFTER_KILL_S)
        self._reap()

    def _kill_all(self, sig: int) -> None:
        for popen, rs in self.ranks:
            signal_group(popen.pid, rs["start"], sig)

    def _finish(self, exit_code: int | None, reason: str | None, message: str) -> int:
        phase: Literal["succeeded", "failed"] = "succeeded" if exit_code == 0 and reason is None else "failed"
        self.state["phase"], self.state["exit_code"], self.state["reason"] = phase, exit_code, reason
        self.state["message"], self.state["finished_at"] = message, time.time()
        self._save()
        _note(f"{phase}: {message}")
        return 0

    # -- plumbing ---------------------------------------------------------------------------------

    def _save(self) -> None:
        write_json(self.paths.state, self.state)

    def _lock(self) -> bool:
        """Hold the attempt's lock for life: a second launch of the same attempt finds it taken."""
        fd = os.open(self.paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, self._on_child)  # a Python handler, so the wakeup fd hears of it
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)

    def _on_child(self, signum: int, frame: FrameType | None) -> None:
        pass  # the wakeup fd did the work

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.cancelled = True

    def _cancel_requested(self) -> bool:
        # cancel.json alone counts too: a control plane that died between writing it and signalling.
        return self.cancelled or self.paths.cancel.exists()

    def _cancel_grace(self) -> float:
        request = read_json(self.paths.cancel)
        try:
            return max(0.0, float(request["grace_s"]))  # type: ignore[index]
        except (TypeError, KeyError, ValueError):
            return self.grace_s

    def _sleep(self, timeout_s: float) -> None:
        select.select([self._wake_r], [], [], max(0.0, timeout_s))
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 512):
                pass

    def _trim_logs(self) -> None:
        for _, path in self.paths.rank_logs():
            try:
                if path.stat().st_size > MAX_LOG_BYTES:
                    shutil.copyfile(path, path.with_name(path.name + ".1"))
                    os.truncate(path, 0)  # the rank appends (O_APPEND): its next line lands at the new end
            except OSError:
                continue


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m adapters.training.local.supervise <attempt dir>", file=sys.stderr)
        return 2
    paths = AttemptPaths(Path(args[0]).resolve())
    spec = read_json(paths.spec)
    if not isinstance(spec, dict):
        _note(f"no readable {paths.spec}")
        return 2
    sys.stdout.flush()
    sys.stderr.flush()
    ready_r, ready_w = os.pipe()
    if os.fork():  # the launcher: exit once the supervisor has recorded itself (1 if it died first)
        os.close(ready_w)
        os._exit(0 if os.read(ready_r, 1) == b"1" else 1)
    os.close(ready_r)
    os.setsid()  # the supervisor leads its own session: no terminal, no group shared with the launcher
    return Supervisor(paths, spec).run(ready_w)


if __name__ == "__main__":
    sys.exit(main())
