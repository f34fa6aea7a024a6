"""Shared by the LocalRuntime tests: specs, a runtime with short timings, polling, and pid liveness."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from adapters.serving.base import DeploymentSpec, RuntimeStatus, Slot
from adapters.serving.local import LocalRuntime
from adapters.serving.settings import ServingSettings, load_serving_settings
from tests.polling import until

SETTINGS = load_serving_settings({})


def make_spec(revision: int = 1, *, endpoint_id: str = "ep_local1", name: str = "demo",
              **fields: Any) -> DeploymentSpec:
    values: dict[str, Any] = {
        "endpoint_id": endpoint_id, "endpoint_name": name, "revision": revision, "environment": "DEV",
        "model_id": "mdl_1", "model_name": "tiny", "model_version": revision, "model_uri": "tiny",
        "served_model_name": f"tiny-r{revision}", "image": SETTINGS.cpu_only_image, "use_gpu": False,
        "resources": SETTINGS.resources(False),
    }
    values.update(fields)
    return DeploymentSpec(**values)


@asynccontextmanager
async def local_runtime(tmp_path: Path, settings: ServingSettings | None = None,
                        **kwargs: Any) -> AsyncIterator[LocalRuntime]:
    options: dict[str, Any] = {"drain_s": 0.5, "stop_grace_s": 2.0, "max_restarts": 2, "restart_backoff_s": 0.1}
    options.update(kwargs)
    runtime = LocalRuntime(settings or load_serving_settings({}, local_ready_timeout_s=30.0),
                           workdir=tmp_path / "serving", **options)
    try:
        yield runtime
    finally:
        await runtime.aclose()


async def eventually(predicate: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition") -> None:
    async def check() -> bool:
        return predicate()

    await until(check, timeout_s, what)


async def wait_status(runtime: LocalRuntime, spec: DeploymentSpec, slot: Slot = "stable", *,
                      phase: str = "ready", revision: int | None = None, timeout_s: float = 20.0) -> RuntimeStatus:
    async def check() -> RuntimeStatus | None:
        st = await runtime.status(spec.endpoint_id, spec.endpoint_name, slot)
        ok = st.phase == phase and (revision is None or st.revision == revision)
        return st if ok else None

    return await until(check, timeout_s, f"{slot} {phase} r{revision}")


def read_log(path: str | Path) -> str:
    return Path(path).read_text()


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as dead: it serves nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def wait_dead(pid: int, timeout_s: float = 10.0) -> None:
    await eventually(lambda: not alive(pid), timeout_s, f"pid {pid} to exit")
