"""LocalTrainingRuntime with real processes: small ``python -c`` ranks under a real supervisor."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from adapters.training.base import AttemptRef, RuntimeFailure, TrainingRuntime
from adapters.training.local import LocalTrainingRuntime
from tests.adapters.training.local.helpers import (
    SETTINGS,
    file_names,
    files_holding,
    local_runtime,
    make_spec,
    wait_dead,
    wait_file,
    wait_phase,
)

# A rank that records it started, then waits (polling) for the test to create ``go`` in its working directory.
WAIT_FOR_GO = ("import pathlib, time\npathlib.Path('started').touch()\n"
               "while not pathlib.Path('go').exists(): time.sleep(0.02)\nprint('went')")
# A rank that ignores SIGTERM, so only SIGKILL ends it.
STUBBORN = ("import pathlib, signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "pathlib.Path('armed').touch()\ntime.sleep(60)")


def _work(tmp_path: Path, job_id: str = "job_local1", attempt: int = 1) -> Path:
    return tmp_path / job_id / f"a{attempt}" / "work"


def test_is_a_training_runtime(tmp_path: Path) -> None:
    runtime: TrainingRuntime = LocalTrainingRuntime(SETTINGS, tmp_path)
    assert runtime.name == "local"


async def test_a_relative_state_dir_works_from_any_working_directory(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # `llmops serve` hands the runtime <data_dir>/training, relative to where it was started
    monkeypatch.chdir(tmp_path)
    spec = make_spec("print('ran')")
    async with local_runtime(Path("state")) as runtime:
        await runtime.submit(spec)
        st = await wait_phase(runtime, spec)
        assert (st.phase, st.exit_code) == ("succeeded", 0), st
    assert (tmp_path / "state" / spec.job_id / "a1" / "state.json").exists()


async def test_success_records_exit_0_timestamps_and_logs(tmp_path: Path) -> None:
    spec = make_spec("print('hello from', __import__('os').getcwd())")
    async with local_runtime(tmp_path) as runtime:
        assert (await runtime.status(spec.job_id, 1)).phase == "absent"
        before = time.time()
        manifests = await runtime.submit(spec)
        assert manifests == runtime.render(spec)
        st = await wait_phase(runtime, spec)
        assert (st.phase, st.exit_code, st.reason) == ("succeeded", 0, None)
        assert st.started_at is not None and st.finished_at is not None
        assert before <= st.started_at <= st.finished_at <= time.time()
        assert st.details["supervisorPid"] > 0 and len(st.details["pids"]) == 1
        assert st.details["ranks"][0]["exitCode"] == 0
        logs = await runtime.logs(spec.job_id, 1)
        assert f"[rank 0] hello from {_work(tmp_path)}" in logs.splitlines()
        assert await runtime.active() == [AttemptRef(job_id=spec.job_id, attempt=1)]


async def test_failing_rank_fails_the_attempt_with_its_exit_code(tmp_path: Path) -> None:
    spec = make_spec("import sys; print('bad input'); sys.exit(3)")
    async with local_runtime(tmp_path) as runtime:
        await runtime.submit(spec)
        st = await wait_phase(runtime, spec)
        assert (st.phase, st.exit_code, st.reason) == ("failed", 3, "ProcessExited")
        assert st.message == "rank 0 exited with code 3" and st.finished_at is not None


async def test_rank_ended_by_a_signal(tmp_path: Path) -> None:
    spec = make_spec("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    async with local_runtime(tmp_path) as runtime:
        await runtime.submit(spec)
        st = await wait_phase(runtime, spec)
        assert (st.phase, st.exit_code, st.reason) == ("failed", 137, "Signal:SIGKILL")


async def test_command_that_cannot_run(tmp_path: Path) -> None:
    spec = make_spec("", command=[str(tmp_path / "no-such-trainer")])
    async with local_runtime(tmp_path) as runtime:
        await runtime.submit(spec)
        st = await wait_phase(runtime, spec)
        assert (st.phase, st.exit_code, st.reason) == ("failed", 127, "ProcessExited")
        assert "cannot run" in st.message and "No such file" in st.message


async def test_deadline_stops_the_ranks(tmp_path: Path) -> None:
    spec = make_spec("import time; time.sleep(60)", deadline_s=0.5)
    async with local_runtime(tmp_path) as runtime:
        await runtime.submit(spec)
        st = await wait_phase(runtime, spec, timeout_s=10)
        assert (st.phase, st.exit_code, st.reason) == ("failed", None, "DeadlineExceeded")
        assert st.started_at is not None and st.finished_at is not None
        assert 0.5 <= st.finished_at - st.started_at < 5
        await wait_dead([st.details["supervisorPid"], *st.details["pids"]])


async def test_cancel_while_running_escalates_to_sigkill(tmp_path: Path) -> None:
    spec = make_spec(STUBBORN)
    async with local_runtime(tmp_path) as runtime:
        await runtime.submit(spec)
        await wait_file(_work(tmp_path) / "armed")
        running = await runtime.status(spec.job_id, 1)
        assert running.phase == "running"
        pids = [running.details["supervisorPid"], *running.details["pids"]]
        started = time.monotonic()
        await runtime.cancel(spec.job_id, 1, grace_s=0.3)
        assert time.monotonic() - started < 2.2  # before the runtime's own SIGKILL (grace + 2 s)
        st = await runtime.status(spec.job_id, 1)
        assert (st.phase, st.reason, st.exit_code) == ("failed", "Cancelled", None)
        assert st.message == "cancelled"
        await wait_dead(pids)
        await runtime.cancel(spec.job_id, 1)  # already over: nothing happens
        await runtime.cancel("job_never", 1)
        assert await runtime.status(spec.job_id, 1) == st


async def test_cancel_kills_a_supervisor_that_does_not_stop(tmp_path: Path) -> None:
    spec = make_spec(WAIT_FOR_GO)
    async with local_runtime(tmp_path) as runtime:
        await runtime.submit(spec)
        await wait_file(_work(tmp_path) / "started")
        running = await runtime.status(spec.job_id, 1)
        supervisor = running.details["supervisorPid"]
        os.kill(supervisor, signal.SIGSTOP)  # it cannot act on SIGTERM now
        await runtime.cancel(spec.job_id, 1, grace_s=0.1)
        st = await runtime.status(spec.job_id, 1)
        assert (st.phase, st.reason) == ("failed", "Cancelled")
        assert "killed" in st.message
        await wait_dead([supervisor, *running.details["pids"]])


async def test_two_ranks_get_torchrun_variables_and_both_log(tmp_path: Path) -> None:
    code = ("import os\nfor k in ('RANK', 'NODE_RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT',"
            " 'NPROC_PER_NODE', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'JOB_VAR'):\n    print(k, os.environ[k])")
    spec = make_spec(code, nodes=2, env={"JOB_VAR": "from-spec"})
    async with local_runtime(tmp_path) as runtime:
        await runtime.submit(spec)
        st = await wait_phase(runtime, spec)
        assert st.phase == "succeeded" and len(st.details["pids"]) == 2
        port = st.details["masterPort"]
        logs = (await runtime.logs(spec.job_id, 1)).splitlines()
        for rank in (0, 1):
            mine = {line.split()[2]: line.split()[3] for line in logs if line.startswith(f"[rank {rank}] ")}
            assert mine == {"RANK": str(rank), "NODE_RANK": str(rank), "LOCAL_RANK": "0", "WORLD_SIZE": "2",
                            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NPROC_PER_NODE": "1",
                            "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "JOB_VAR": "from-spec"}
        first_rank_1 = next(i for i, line in enumerate(logs) if line.startswith("[rank 1]"))
        assert all(line.startswith("[rank 0]") for line in logs[:first_rank_1])  # rank 0 first


async def test_one_failing_rank_stops_the_others(tmp_path: Path) -> None:
    code = "import os, sys, time\nif os.environ['RANK'] == '1': sys.exit(4)\ntime.sleep(60)"
    spec = make_spec(code, nodes=2)
    async with local_runtime(tmp_path) as runtime:
        started = time.monotonic()
        await runtime.submit(spec)
        st = await wait_phase(runtime, spec, timeout_s=10)
        assert time.monotonic() - started < 5
        assert (st.phase, st.exit_code, st.reason) == ("failed", 4, "ProcessExited")
        assert st.message == "rank 1 exited with code 4"
        assert [r["exitCode"] for r in st.details["ranks"]] == [128 + signal.SIGTERM, 4]
        await wait_dead(st.details["pids"])


async def test_secret_reaches_the_rank_only_through_its_environment(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    token = "ljt_" + "s3cr3t-Token_" * 3 + "abcd"
    monkeypatch.setenv("LLMOPS_ADMIN_KEY", "control-plane-secret")  # the control plane's: never passed on
    code = ("import hashlib, os, sys\n"
            "if 'LLMOPS_ADMIN_KEY' in os.environ: sys.exit(6)\n"
            "seen = hashlib.sha256(os.environ['LLMOPS_JOB_TOKEN'].encode()).hexdigest()\n"
            "sys.exit(0 if seen == os.environ['EXPECTED'] and os.environ['MLFLOW_TRACKING_TOKEN'] == "
            "os.environ['LLMOPS_JOB_TOKEN'] else 5)")
    spec = make_spec(code, env={"EXPECTED": hashlib.sha256(token.encode()).hexdigest()},
                     secret_env={"LLMOPS_JOB_TOKEN": token, "MLFLOW_TRACKING_TOKEN": token})
    async with local_runtime(tmp_path) as runtime:
        rendered = json.dumps(runtime.render(spec))
        assert token not in rendered and "s3cr3t" not in rendered
        [doc] = runtime.render(spec)
        assert doc["secretEnv"] == ["LLMOPS_JOB_TOKEN", "MLFLOW_TRACKING_TOKEN"]
        assert "EXPECTED" in doc["env"] and "LLMOPS_JOB_TOKEN" not in doc["env"]
        await runtime.submit(spec)
        st = await wait_phase(runtime, spec)
        assert (st.phase, st.exit_code) == ("succeeded", 0)
        assert "s3cr3t" not in repr(st)
    assert file_names(tmp_path) >= {"spec.json", "state.json", "rank-0.log", "supervisor.log"}
    assert files_holding(tmp_path, b"s3cr3t") == []


async def test_render_resolves_python_and_describes_limits(tmp_path: Path) -> None:
    runtime = LocalTrainingRuntime(SETTINGS, tmp_path, python="/opt/py/bin/python3")
    [doc] = runtime.render(make_spec("pass", nodes=3, deadline_s=60.0))
    assert doc["command"] == ["/opt/py/bin/python3", "-c", "pass"]
    assert (doc["kind"], doc["name"], doc["nodes"], doc["deadlineS"]) == ("LocalTrainingAttempt", "tiny-a1", 3, 60.0)
    assert doc["limits"] == {"cpu": "1500m", "threads": 2, "memory": "4Gi", "gpusPerNode": 0}
    assert {"RANK", "MASTER_PORT", "OMP_NUM_THREADS", "PYTHONPATH"} <= set(doc["env"])
    assert doc["directory"] == str(tmp_path / "job_local1" / "a1")
    assert runtime.render(make_spec("pass", command=["/usr/bin/env", "true"]))[0]["command"] == ["/usr/bin/env", "true"]


async def test_submit_is_idempotent(tmp_path: Path) -> None:
    spec = make_spec(WAIT_FOR_GO)
    async with local_runtime(tmp_path) as runtime:
        await asyncio.gather(runtime.submit(spec), runtime.submit(spec))
        first = await wait_phase(runtime, spec, ("running",))
        await runtime.submit(spec)
        again = await runtime.status(spec.job_id, 1)
        assert again.details["supervisorPid"] == first.details["supervisorPid"]
        (_work(tmp_path) / "go").touch()
        done = await wait_phase(runtime, spec)
        assert done.phase == "succeeded"
        await runtime.submit(spec)  # finished: left as it is
        assert await runtime.status(spec.job_id, 1) == done
    log = (tmp_path / spec.job_id / "a1" / "supervisor.log").read_text()
    assert log.count("started 1 rank(s)") == 1


async def test_logs_tail_rank_0_first_and_tokens_masked(tmp_path: Path) -> None:
    code = ("import os\nr = os.environ['RANK']\nfor i in range(500): print(f'rank {r} line {i}')\n"
            "print('leaked ljt_' + 'A' * 43)")
    spec = make_spec(code, nodes=2)
    async with local_runtime(tmp_path) as runtime:
        await runtime.submit(spec)
        await wait_phase(runtime, spec)
        logs = (await runtime.logs(spec.job_id, 1, tail_lines=3)).splitlines()
        assert logs[:6] == ["[rank 0] rank 0 line 498", "[rank 0] rank 0 line 499", "[rank 0] leaked ljt_***",
                            "[rank 1] rank 1 line 498", "[rank 1] rank 1 line 499", "[rank 1] leaked ljt_***"]
        assert all(line.startswith("[supervisor] ") for line in logs[6:]) and len(logs) <= 9
        assert await runtime.logs("job_none", 1) == ""


async def test_cleanup_refuses_a_running_attempt_then_removes_it(tmp_path: Path) -> None:
    spec = make_spec(WAIT_FOR_GO)
    async with local_runtime(tmp_path) as runtime:
        await runtime.submit(spec)
        await wait_phase(runtime, spec, ("running",))
        with pytest.raises(RuntimeFailure, match="still running"):
            await runtime.cleanup(spec.job_id, 1)
        (_work(tmp_path) / "go").touch()
        await wait_phase(runtime, spec)
        await runtime.cleanup(spec.job_id, 1)
        assert not (tmp_path / spec.job_id).exists()
        assert (await runtime.status(spec.job_id, 1)).phase == "absent"
        assert await runtime.active() == []
        await runtime.cleanup(spec.job_id, 1)  # already gone


async def test_bad_specs_are_refused(tmp_path: Path) -> None:
    async with local_runtime(tmp_path) as runtime:
        for bad in (make_spec("pass", job_id="../escape"), make_spec("pass", job_id=".hidden"),
                    make_spec("pass", command=[])):
            with pytest.raises(RuntimeFailure):
                await runtime.submit(bad)
        assert (await runtime.status("../escape", 1)).phase == "absent"
        assert file_names(tmp_path) == set()
    with pytest.raises(RuntimeFailure, match="shut down"):
        await runtime.submit(make_spec("pass"))
