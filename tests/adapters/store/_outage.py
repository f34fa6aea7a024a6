"""Freeze a test PostgreSQL server (SIGSTOP): connections stay open and nothing answers, like a hung host."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

from tests.servers import PostgresServer

__all__ = ["frozen"]


def _server_pids(server: PostgresServer) -> list[int]:
    """The postmaster and every backend it forked."""
    postmaster = int((server.data_dir / "postmaster.pid").read_text().splitlines()[0])
    pids = [postmaster]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == postmaster:
                pids.append(int(stat.parent.name))
    return pids


@contextlib.contextmanager
def frozen(server: PostgresServer) -> Iterator[None]:
    """SIGSTOP the whole server: connections stay open, nothing answers (a hung host, not a dead one)."""
    pids = _server_pids(server)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
