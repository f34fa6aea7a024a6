"""No orphans: a control plane killed with SIGKILL takes its server processes with it (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from tests.adapters.serving.local_helpers import alive, wait_dead

ROOT = Path(__file__).resolve().parents[3]

# A stand-in control plane: applies one endpoint, prints its server's pid once ready, then idles.
PARENT = """
import asyncio, sys
from pathlib import Path
from adapters.serving.local import LocalRuntime
from adapters.serving.settings import load_serving_settings
from tests.adapters.serving.local_helpers import make_spec, wait_status

async def main() -> None:
    runtime = LocalRuntime(load_serving_settings({}), workdir=Path(sys.argv[1]))
    spec = make_spec(1)
    await runtime.apply(spec, "stable")
    status = await wait_status(runtime, spec, timeout_s=30)
    print(status.details["pid"], flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


async def test_killed_control_plane_leaves_no_server(tmp_path: Path) -> None:
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PARENT, str(tmp_path), cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    try:
        line = await asyncio.wait_for(parent.stdout.readline(), 60)  # type: ignore[union-attr]
        child = int(line)
        assert alive(child)
    finally:
        parent.kill()  # SIGKILL: no cleanup code of the parent runs
        await parent.wait()
    try:
        await wait_dead(child, timeout_s=10)
    finally:
        if alive(child):  # the test failed: do not leave the orphan behind
            os.kill(child, signal.SIGKILL)
