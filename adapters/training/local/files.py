"""An attempt's directory and the files in it; what the runtime and the supervisor share on disk.

``<state_dir>/<job_id>/a<attempt>/``:

* ``spec.json``: the ``LaunchSpec`` minus ``secret_env`` (its names only), plus the resolved ``argv``, the
  thread count and the grace the supervisor uses;
* ``state.json``: the supervisor's record (``AttemptState``), replaced atomically (temp file + rename), so a
  reader sees the old or the new one, never half of one;
* ``cancel.json``: a cancel request (its grace), written by the runtime before it signals the supervisor;
* ``supervisor.log``: the supervisor's own lines (start, exits, stops; never an environment value);
* ``rank-<n>.log``: rank ``n``'s stdout and stderr, appended by the rank itself;
* ``lock``: held (``flock``) by the supervisor for its whole life, so two launches never both run;
* ``work/``: the ranks' working directory.

Standard library only: the supervisor imports it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict

__all__ = [
    "FINAL_PHASES",
    "AttemptPaths",
    "AttemptState",
    "RankState",
    "attempt_paths",
    "list_attempts",
    "read_json",
    "tail_lines",
    "valid_job_id",
    "write_json",
]

FINAL_PHASES = ("succeeded", "failed")
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_ATTEMPT = re.compile(r"a([1-9][0-9]{0,8})")
_RANK_LOG = re.compile(r"rank-([0-9]+)\.log")
_TAIL_CHUNK = 64 * 1024


class RankState(TypedDict):
    rank: int
    pid: int
    start: int | None  # procs.start_time when it was spawned
    exit_code: int | None  # 128 + n when signal n ended it, as a shell reports it


class AttemptState(TypedDict):
    phase: Literal["pending", "running", "succeeded", "failed"]
    supervisor_pid: int
    supervisor_start: int | None
    pids: list[int]
    ranks: list[RankState]
    master_port: int | None
    started_at: float | None  # epoch seconds the ranks were started
    finished_at: float | None
    exit_code: int | None  # the first failing rank's; 0 when every rank succeeded
    reason: str | None  # ProcessExited, DeadlineExceeded, Cancelled, Signal:<name>, SupervisorError
    message: str


@dataclass(frozen=True)
class AttemptPaths:
    root: Path

    @property
    def spec(self) -> Path:
        return self.root / "spec.json"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def cancel(self) -> Path:
        return self.root / "cancel.json"

    @property
    def supervisor_log(self) -> Path:
        return self.root / "supervisor.log"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    @property
    def work(self) -> Path:
        return self.root / "work"

    def rank_log(self, rank: int) -> Path:
        return self.root / f"rank-{rank}.log"

    def rank_logs(self) -> list[tuple[int, Path]]:
        """Every rank log present, rank 0 first."""
        try:
            names = os.listdir(self.root)
        except OSError:
            return []
        found = [(int(m.group(1)), self.root / name) for name in names if (m := _RANK_LOG.fullmatch(name))]
        return sorted(found)


def valid_job_id(job_id: str) -> bool:
    """A job id is one path component here: letters, digits, ``_``, ``-``, ``.``, not starting with a dot."""
    return _JOB_ID.fullmatch(job_id) is not None


def attempt_paths(state_dir: Path, job_id: str, attempt: int) -> AttemptPaths:
    """The attempt's directory; the caller has checked ``valid_job_id`` (a job id names a directory)."""
    return AttemptPaths(state_dir / job_id / f"a{attempt}")


def list_attempts(state_dir: Path) -> list[tuple[str, int]]:
    """``(job_id, attempt)`` of every attempt directory under ``state_dir``, sorted."""
    found: list[tuple[str, int]] = []
    try:
        jobs = list(os.scandir(state_dir))
    except OSError:
        return found
    for job in jobs:
        if not job.is_dir(follow_symlinks=False) or not valid_job_id(job.name):
            continue
        try:
            entries = list(os.scandir(job.path))
        except OSError:
            continue
        for entry in entries:
            m = _ATTEMPT.fullmatch(entry.name)
            if m and entry.is_dir(follow_symlinks=False):
                found.append((job.name, int(m.group(1))))
    return sorted(found)


def write_json(path: Path, value: Any) -> None:
    """Replace ``path`` atomically: readers (other processes) see the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, separators=(",", ":"))
    os.replace(tmp, path)


def read_json(path: Path) -> Any | None:
    """The decoded file; None when it is absent or not JSON (never half-written: see ``write_json``)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def tail_lines(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a text file (at most 64 KiB per line counted back), decoded leniently."""
    if lines <= 0:
        return []
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            size = min(end, _TAIL_CHUNK * max(1, lines // 64 + 1), 16 * 1024 * 1024)
            f.seek(end - size)
            data = f.read(size)
    except OSError:
        return []
    text = data.decode("utf-8", "replace")
    kept = text.splitlines()
    if size < end and kept:
        kept = kept[1:]  # the first line read is probably cut
    return kept[-lines:]
