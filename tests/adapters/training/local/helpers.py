"""Shared by the local training runtime tests: specs, a runtime with a short grace, polling, pid liveness."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from adapters.training.base import AttemptStatus, LaunchSpec, TrainingResources
from adapters.training.local import LocalTrainingRuntime
from adapters.training.settings import TrainingSettings
from tests.polling import until

SETTINGS = TrainingSettings(cancel_grace_s=0.5)
FINAL = ("succeeded", "failed")


def make_spec(code: str, *, job_id: str = "job_local1", attempt: int = 1, nodes: int = 1,
              **fields: Any) -> LaunchSpec:
    """A spec whose ranks run ``python -c code`` (``python`` resolves to the runtime's interpreter)."""
    values: dict[str, Any] = {
        "job_id": job_id, "job_name": "tiny", "attempt": attempt, "job_type": "finetune", "image": "unused",
        "command": ["python", "-c", code], "resources": TrainingResources(nodes=nodes, cpu_limit="1500m"),
    }
    values.update(fields)
    return LaunchSpec(**values)


@asynccontextmanager
async def local_runtime(state_dir: Path, settings: TrainingSettings = SETTINGS) -> AsyncIterator[LocalTrainingRuntime]:
    runtime = LocalTrainingRuntime(settings, state_dir)
    try:
        yield runtime
    finally:
        await runtime.aclose()


async def wait_phase(runtime: LocalTrainingRuntime, spec: LaunchSpec, phases: Iterable[str] = FINAL,
                     timeout_s: float = 20.0) -> AttemptStatus:
    wanted = tuple(phases)

    async def check() -> AttemptStatus | None:
        st = await runtime.status(spec.job_id, spec.attempt)
        return st if st.phase in wanted else None

    return await until(check, timeout_s, f"{spec.job_id}/a{spec.attempt} in {wanted}")


async def wait_file(path: Path, timeout_s: float = 20.0) -> None:
    async def check() -> bool:
        return await asyncio.to_thread(path.exists)

    await until(check, timeout_s, f"{path} to exist")


def alive(pid: int) -> bool:
    """Running, read straight from /proc (a zombie counts as dead: orphans may stay zombies here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def wait_dead(pids: Iterable[int], timeout_s: float = 10.0) -> None:
    pids = list(pids)

    async def check() -> bool:
        return not any(alive(pid) for pid in pids)

    await until(check, timeout_s, f"pids {pids} to exit")


def recorded_pids(state_dir: Path) -> list[int]:
    """Every supervisor and rank pid recorded under ``state_dir``."""
    pids: list[int] = []
    for path in state_dir.rglob("state.json"):
        state = json.loads(path.read_text())
        pids += [state.get("supervisor_pid", 0), *(rank["pid"] for rank in state.get("ranks", []))]
    return [pid for pid in pids if pid > 0]


def files_holding(root: Path, needle: bytes) -> list[Path]:
    """Every file under ``root`` whose bytes contain ``needle``."""
    return [path for path in root.rglob("*") if path.is_file() and needle in path.read_bytes()]


def file_names(root: Path) -> set[str]:
    return {path.name for path in root.rglob("*") if path.is_file()}


def kill_all(pids: Iterable[int]) -> None:
    for pid in pids:
        for kill in (os.killpg, os.kill):
            with suppress(ProcessLookupError, PermissionError):
                kill(pid, signal.SIGKILL)
