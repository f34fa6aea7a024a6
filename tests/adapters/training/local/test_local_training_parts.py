"""The local training runtime's pure parts: environments, process identity, the attempt's files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters.training.local.environment import cpu_threads, rank_env, resolve_command, safe_env
from adapters.training.local.files import (
    attempt_paths,
    list_attempts,
    read_json,
    tail_lines,
    valid_job_id,
    write_json,
)
from adapters.training.local.procs import running, signal_group, signal_process, start_time


@pytest.mark.parametrize(("quantity", "threads"), [("1", 1), ("4", 4), ("1.5", 2), ("500m", 1), ("2500m", 3),
                                                   ("0", 1), ("2000m", 2)])
def test_cpu_threads_is_the_ceiling_of_the_cpu_limit(quantity: str, threads: int) -> None:
    assert cpu_threads(quantity) == threads


def test_safe_env_passes_an_allow_list_only() -> None:
    env = safe_env({"PATH": "/bin", "HOME": "/h", "LANG": "C.UTF-8", "DATABASE_URL": "postgres://u:pw@h/db",
                    "LLMOPS_ADMIN_KEY": "k", "AWS_SECRET_ACCESS_KEY": "s", "PYTHONPATH": "/extra"})
    assert env["PATH"] == "/bin" and env["HOME"] == "/h" and env["LANG"] == "C.UTF-8"
    assert not {"DATABASE_URL", "LLMOPS_ADMIN_KEY", "AWS_SECRET_ACCESS_KEY"} & set(env)
    root = str(Path(__file__).resolve().parents[4])
    assert env["PYTHONPATH"] == f"{root}{os.pathsep}/extra" and env["PYTHONUNBUFFERED"] == "1"


def test_rank_env_layers() -> None:
    env = rank_env({"PATH": "/bin", "RANK": "9"}, {"OMP_NUM_THREADS": "1", "JOB": "x", "PATH": "/job"},
                   {"LLMOPS_JOB_TOKEN": "t", "JOB": "secret-wins"}, rank=1, world_size=3, master_port=2900, threads=4)
    assert env == {"PATH": "/job", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "4", "MKL_NUM_THREADS": "4",
                   "JOB": "secret-wins", "LLMOPS_JOB_TOKEN": "t", "RANK": "1", "NODE_RANK": "1", "LOCAL_RANK": "0",
                   "WORLD_SIZE": "3", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "2900", "NPROC_PER_NODE": "1"}


def test_resolve_command_replaces_a_bare_python_only() -> None:
    assert resolve_command(["python", "-m", "x"], "/venv/bin/python") == ["/venv/bin/python", "-m", "x"]
    assert resolve_command(["python3", "t.py"], "/p") == ["/p", "t.py"]
    assert resolve_command(["/usr/bin/python", "t.py"], "/p") == ["/usr/bin/python", "t.py"]
    assert resolve_command(["torchrun", "python"], "/p") == ["torchrun", "python"]


def test_process_identity_is_pid_and_start_time() -> None:
    me = start_time(os.getpid())
    assert me is not None and running(os.getpid(), me)
    assert not running(os.getpid(), me + 1)  # a reused pid: another process
    assert not signal_process(os.getpid(), me + 1, signal.SIGTERM)  # so it is not signalled
    assert not running(None, me) and start_time(0) is None and start_time(2**22 + 1) is None


def test_a_zombie_is_gone_and_a_group_outlives_its_leader() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    start = start_time(child.pid)
    deadline = time.monotonic() + 5
    while start_time(child.pid) is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not running(child.pid, start)  # exited, not reaped: a zombie counts as gone
    child.wait()
    # A leader that started a child and exited: signal_group still reaches the child.
    leader = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; p = subprocess.Popen([sys.executable,"
                               " '-c', 'import time; time.sleep(60)']); print(p.pid, flush=True)"],
                              stdout=subprocess.PIPE, start_new_session=True)
    assert leader.stdout is not None
    orphan = int(leader.stdout.readline())
    leader_start = start_time(leader.pid)
    leader.wait()
    try:
        assert start_time(orphan) is not None
        assert signal_group(leader.pid, leader_start, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while start_time(orphan) is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert start_time(orphan) is None
    finally:
        if start_time(orphan) is not None:
            os.kill(orphan, signal.SIGKILL)


def test_attempt_files(tmp_path: Path) -> None:
    assert valid_job_id("job_01HX-a.b") and not valid_job_id("../x") and not valid_job_id(".x")
    assert not valid_job_id("a/b") and not valid_job_id("") and not valid_job_id("x" * 101)
    paths = attempt_paths(tmp_path, "job1", 2)
    assert paths.root == tmp_path / "job1" / "a2"
    paths.root.mkdir(parents=True)
    (tmp_path / "job1" / "a0").mkdir()  # not an attempt: attempts count from 1
    (tmp_path / "job1" / "notes").mkdir()
    (tmp_path / ".tmp").mkdir()
    assert list_attempts(tmp_path) == [("job1", 2)]
    assert list_attempts(tmp_path / "missing") == []
    write_json(paths.state, {"phase": "running"})
    assert read_json(paths.state) == {"phase": "running"}
    assert sorted(p.name for p in paths.root.iterdir()) == ["state.json"]  # no temp file left
    assert read_json(paths.spec) is None
    paths.rank_log(10).write_text("ten\n")
    paths.rank_log(2).write_text("".join(f"line {i}\n" for i in range(1000)))
    assert [rank for rank, _ in paths.rank_logs()] == [2, 10]
    assert tail_lines(paths.rank_log(2), 2) == ["line 998", "line 999"]
    assert tail_lines(paths.rank_log(10), 5) == ["ten"] and tail_lines(paths.rank_log(3), 5) == []
