"""Processes named by pid *and* start time, so a pid the kernel handed to someone else is never signalled.

A supervisor or rank is recorded as ``(pid, start)``, ``start`` being field 22 of ``/proc/<pid>/stat`` (clock
ticks after boot). A pid whose start differs is another process; a zombie counts as gone (it runs nothing, and
orphans may stay zombies for good where PID 1 does not reap). Standard library only: the supervisor imports it.
Without ``/proc`` (not Linux) the start is 0 for any live pid, which weakens the check to ``kill(pid, 0)``.
"""

from __future__ import annotations

import os
import signal

__all__ = ["running", "signal_group", "signal_name", "signal_process", "start_time"]

_HAS_PROC = os.path.isdir("/proc/self")


def start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks after boot; None when no such process runs (or it is a zombie)."""
    if pid <= 0:
        return None
    if not _HAS_PROC:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data.rsplit(b")", 1)[1].split()  # the command name, in parentheses, may hold spaces
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def running(pid: int | None, start: int | None) -> bool:
    """``pid`` runs and is the process recorded with ``start``."""
    return pid is not None and start is not None and start_time(pid) == start


def signal_process(pid: int | None, start: int | None, sig: int) -> bool:
    """Signal the recorded process; False when it is gone (or the pid now belongs to another process)."""
    if pid is None or not running(pid, start):
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def signal_group(pgid: int | None, leader_start: int | None, sig: int) -> bool:
    """Signal the process group a recorded rank leads, its children included.

    The leader may be gone while its children still run; then the group is still ours, since the kernel does
    not reuse an id a live process group holds. A leader that runs with another start time means the pid was
    reused: left alone.
    """
    if pgid is None or pgid <= 0:
        return False
    now = start_time(pgid)
    if now is not None and now != leader_start:
        return False
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def signal_name(number: int) -> str:
    """``SIGKILL`` for 9; ``SIG<n>`` for a number this platform does not name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"
