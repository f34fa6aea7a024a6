"""Child processes for load tests: start pinned, wait until listening, always stop.

Every benchmark server is a child in its own process group, so stopping it also
stops anything it forked (uvicorn reloader, litellm's workers) and nothing
outlives the run. Waits are bounded; a child that dies early fails fast with
the tail of its log instead of a timeout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["ProcessFailed", "cpu_prefix", "free_port", "start_process", "stop_process", "wait_for_port"]


class ProcessFailed(RuntimeError):
    """A child exited or never started listening; the message carries its log tail."""


# Captured at import: a caller may later narrow its own affinity (the bench pins itself to the load
# core), and that must not stop it from pinning children to the other core.
_USABLE_CPUS = frozenset(os.sched_getaffinity(0))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_prefix(cpus: Sequence[int] | None) -> list[str]:
    """`taskset -c …` when pinning is asked for and possible, else nothing."""
    if not cpus:
        return []
    wanted = [c for c in cpus if c in _USABLE_CPUS]
    if not wanted:
        return []
    return ["taskset", "-c", ",".join(str(c) for c in wanted)]


def start_process(
    argv: Sequence[str],
    *,
    cpus: Sequence[int] | None = None,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    cwd: str | Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` pinned to `cpus`, stdout+stderr into `log` (or discarded)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    out = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - closed in stop_process
    proc = subprocess.Popen(
        [*cpu_prefix(cpus), *argv],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=full_env,
        cwd=cwd,
        start_new_session=True,
    )
    proc._llmops_log = log  # type: ignore[attr-defined]
    proc._llmops_out = out  # type: ignore[attr-defined]
    return proc


def _log_tail(proc: subprocess.Popen[bytes], chars: int = 2000) -> str:
    log = getattr(proc, "_llmops_log", None)
    if log is None:
        return "(no log)"
    try:
        return Path(log).read_text(errors="replace")[-chars:]
    except OSError:
        return "(log unreadable)"


def wait_for_port(
    port: int,
    *,
    proc: subprocess.Popen[bytes] | None = None,
    timeout_s: float = 30.0,
    host: str = "127.0.0.1",
) -> None:
    """Poll until something accepts on `port`; raise if `proc` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ProcessFailed(f"process exited with {proc.returncode} before listening:\n{_log_tail(proc)}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    tail = _log_tail(proc) if proc is not None else ""
    raise ProcessFailed(f"nothing listening on {host}:{port} after {timeout_s:.0f}s\n{tail}")


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM the child's process group (its own session), then SIGKILL it if it lingers."""
    try:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=timeout_s)
        else:
            _signal_group(proc, signal.SIGKILL)  # the leader is gone; sweep what it left in its group
    finally:
        out = getattr(proc, "_llmops_out", None)
        if out is not None and out is not subprocess.DEVNULL:
            out.close()
