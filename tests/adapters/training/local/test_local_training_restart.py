"""Attempts outlive the control plane: a new runtime on the same directory adopts them; a lost supervisor shows."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from adapters.training.base import AttemptRef, AttemptStatus
from adapters.training.local import LocalTrainingRuntime
from tests.adapters.training.local.helpers import (
    FINAL,
    SETTINGS,
    alive,
    local_runtime,
    make_spec,
    wait_dead,
    wait_file,
    wait_phase,
)

ROOT = Path(__file__).resolve().parents[4]
WAIT_FOR_GO = ("import pathlib, time\npathlib.Path('started').touch()\n"
               "while not pathlib.Path('go').exists(): time.sleep(0.02)\nprint('finished after restart')")

# A stand-in control plane in its own process: submits one attempt, prints its supervisor's pid, then idles.
PARENT = """
import asyncio, sys
from pathlib import Path
from adapters.training.local import LocalTrainingRuntime
from tests.adapters.training.local.helpers import SETTINGS, make_spec

async def main() -> None:
    runtime = LocalTrainingRuntime(SETTINGS, Path(sys.argv[1]))
    await runtime.submit(make_spec(sys.argv[2]))
    print((await runtime.status("job_local1", 1)).details["supervisorPid"], flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


async def _follow(runtime: LocalTrainingRuntime, seen: list[AttemptStatus]) -> None:
    async for status in runtime.watch():
        seen.append(status)
        if status.phase in FINAL:
            return


async def test_new_runtime_adopts_a_running_attempt_and_follows_it(tmp_path: Path) -> None:
    spec = make_spec(WAIT_FOR_GO)
    work = tmp_path / spec.job_id / "a1" / "work"
    async with local_runtime(tmp_path) as first:
        await first.submit(spec)
        await wait_file(work / "started")
        before = await first.status(spec.job_id, 1)
    assert before.phase == "running"
    supervisor = before.details["supervisorPid"]
    assert alive(supervisor) and all(alive(pid) for pid in before.details["pids"])  # closing stopped nothing

    async with local_runtime(tmp_path) as second:
        assert await second.active() == [AttemptRef(job_id=spec.job_id, attempt=1)]
        assert await second.status(spec.job_id, 1) == before
        seen: list[AttemptStatus] = []
        follower = asyncio.create_task(_follow(second, seen))
        await wait_phase(second, spec, ("running",))
        (work / "go").touch()
        await asyncio.wait_for(follower, 10)
    assert seen[0] == before  # the watch reports what it finds first
    assert (seen[-1].phase, seen[-1].exit_code) == ("succeeded", 0)
    assert seen[-1].details["supervisorPid"] == supervisor
    assert "[rank 0] finished after restart" in await second.logs(spec.job_id, 1)


async def test_attempt_outlives_a_control_plane_killed_with_sigkill(tmp_path: Path) -> None:
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PARENT, str(tmp_path), WAIT_FOR_GO, cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    try:
        line = await asyncio.wait_for(parent.stdout.readline(), 30)  # type: ignore[union-attr]
        supervisor = int(line)
    finally:
        parent.kill()
        await parent.wait()
    spec = make_spec(WAIT_FOR_GO)
    async with local_runtime(tmp_path) as runtime:
        st = await wait_phase(runtime, spec, ("running",))
        assert st.details["supervisorPid"] == supervisor and alive(supervisor)
        (tmp_path / spec.job_id / "a1" / "work" / "go").touch()
        done = await wait_phase(runtime, spec)
        assert (done.phase, done.exit_code) == ("succeeded", 0)


async def test_sigkilled_supervisor_is_lost_and_takes_its_ranks(tmp_path: Path) -> None:
    spec = make_spec("import pathlib, time\npathlib.Path('started').touch()\ntime.sleep(60)", nodes=2)
    async with local_runtime(tmp_path) as runtime:
        await runtime.submit(spec)
        st = await wait_phase(runtime, spec, ("running",))
        await wait_file(tmp_path / spec.job_id / "a1" / "work" / "started")
        ranks = st.details["pids"]
        assert len(ranks) == 2 and all(alive(pid) for pid in ranks)
        seen: list[AttemptStatus] = []
        follower = asyncio.create_task(_follow(runtime, seen))
        os.kill(st.details["supervisorPid"], signal.SIGKILL)
        await wait_dead(ranks, timeout_s=5)  # PR_SET_PDEATHSIG: nobody but the kernel killed them
        lost = await runtime.status(spec.job_id, 1)
        assert (lost.phase, lost.reason, lost.exit_code) == ("failed", "SupervisorLost", None)
        await asyncio.wait_for(follower, 5)
        assert seen[-1].reason == "SupervisorLost"  # the watch notices without any file changing
        await runtime.cleanup(spec.job_id, 1)
        assert await runtime.active() == []


async def test_watch_reports_removal_and_ends_on_aclose(tmp_path: Path) -> None:
    spec = make_spec("pass")
    runtime = LocalTrainingRuntime(SETTINGS, tmp_path)
    await runtime.submit(spec)
    await wait_phase(runtime, spec)
    seen: list[AttemptStatus] = []

    async def collect() -> None:
        async for status in runtime.watch():
            seen.append(status)

    watcher = asyncio.create_task(collect())
    await asyncio.sleep(0)  # let the first poll run before the removal
    while not seen:
        await asyncio.sleep(0.02)
    await runtime.cleanup(spec.job_id, 1)
    while len(seen) < 2:
        await asyncio.sleep(0.02)
    await runtime.aclose()
    await asyncio.wait_for(watcher, 2)  # ends on aclose
    assert [s.phase for s in seen] == ["succeeded", "absent"]
