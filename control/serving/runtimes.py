"""Which runtime the serving module drives, and whether this process drives it.

``make_runtime`` builds the runtime ``SERVING_RUNTIME`` names, importing it lazily (the Kubernetes client
is heavy and only needed there): ``local`` -> ``LocalRuntime`` with its processes' files under
``<data dir>/serving``, ``kubernetes`` -> ``KubernetesRuntime.from_settings``.

**Ownership.** Kubernetes keeps its state in the cluster, so every control-plane replica may apply, read and
delete, and does. Local server processes belong to the process that started them, and ``llmops serve
--workers N`` runs one control plane per worker: only the worker holding ``<data dir>/serving/runtime.lock``
(an ``flock``, released by the kernel when the process dies) drives the local runtime. The others write
records and leave applying, status and deleting to it; its reconciler is woken by the change feed. When the
owner dies its servers die with it (the runtime's parent-death signal), another worker takes the lock on
its next pass and starts them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO, cast

from adapters.adminapi import ModuleContext
from adapters.serving import ServingRuntime, Slot
from adapters.serving.settings import ServingSettings

__all__ = ["ApplyLog", "EndpointLocks", "Ownership", "RuntimeFactory", "make_runtime"]

RuntimeFactory = Callable[[ServingSettings, ModuleContext], ServingRuntime]


def make_runtime(settings: ServingSettings, ctx: ModuleContext) -> ServingRuntime:
    if settings.runtime == "kubernetes":
        from adapters.serving.kubernetes import KubernetesRuntime

        # cast: the protocol's ``name`` is a Literal of both kinds, each runtime's only its own
        return cast(ServingRuntime, KubernetesRuntime.from_settings(settings))
    from adapters.serving.local import LocalRuntime

    return cast(ServingRuntime, LocalRuntime(settings, workdir=ctx.data_dir / "serving",
                                             objectstore=ctx.object_store))


class Ownership:
    """Whether this process drives the runtime (always for Kubernetes; the lock holder for local)."""

    def __init__(self, runtime_name: str, lock_path: Path) -> None:
        self._shared = runtime_name != "local"
        self._path = lock_path
        self._file: IO[bytes] | None = None

    def held(self) -> bool:
        """True when this process drives the runtime; tries to take the lock when it does not yet."""
        if self._shared or self._file is not None:
            return True
        self._path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self._path, "ab")  # noqa: SIM115 - held open for the process's life as the lock
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n".encode())
        handle.flush()
        self._file = handle
        return True

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class ApplyLog:
    """When each (endpoint, slot, revision) was last handed to ``apply``, so the reconciler neither
    repeats an apply the request just made nor hammers a runtime that keeps losing one."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._at: dict[tuple[str, Slot, int], float] = {}
        self._clock = clock

    def note(self, endpoint_id: str, slot: Slot, revision: int) -> None:
        self._at[(endpoint_id, slot, revision)] = self._clock()

    def due(self, endpoint_id: str, slot: Slot, revision: int, every_s: float) -> bool:
        last = self._at.get((endpoint_id, slot, revision))
        return last is None or self._clock() - last >= every_s

    def forget(self, endpoint_id: str) -> None:
        for key in [k for k in self._at if k[0] == endpoint_id]:
            del self._at[key]


class EndpointLocks:
    """One asyncio lock per endpoint: a request's runtime calls and the reconciler's never interleave in
    this process (across replicas, idempotent applies and the orphan sweep settle it)."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def hold(self, endpoint_id: str) -> AsyncIterator[None]:
        async with self._locks.setdefault(endpoint_id, asyncio.Lock()):
            yield

    def forget(self, endpoint_id: str) -> None:
        """The endpoint is gone: do not keep a lock per deleted id."""
        self._locks.pop(endpoint_id, None)
