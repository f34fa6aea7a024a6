"""``LocalRuntime``: the embedded default serving runtime; each slot is a supervised server process here.

Each slot (``stable``, ``canary``) of an endpoint runs one process on a free loopback port
(``commands.plan_server`` picks the mock test double or a real small model). ``apply`` returns at once;
readiness is followed in the background (``process.ServerProcess``).

Surge: a new revision applied to a slot whose process is ready starts next to it. ``status`` keeps
reporting the old process (its base URL, its revision, ready) until the new one is ready; then the slot
switches to the new one and the old process drains for ``drain_s`` (the gateway follows the route change
within seconds; requests it still sends the old URL are answered) before it is stopped. If the new revision
fails, the old one keeps serving: ``status`` stays ``ready`` on the old revision, with the new one's
``reason`` and a message naming it, and ``details["rollout"]``. A slot whose process is not ready is replaced
at once. Applying the revision a slot already runs (or is rolling out) is a no-op; applying the running
revision while another is rolling out cancels the rollout.

Nothing survives the control plane: children die with it (``PR_SET_PDEATHSIG``), and a new control plane
finds every slot ``absent`` (the serving module applies them again). A local slot never scales: one process,
``min_replicas`` and ``max_replicas`` notwithstanding.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp

from adapters.objectstore.base import ObjectStore
from adapters.objectstore.errors import ObjectNotFound, ObjectStoreError
from adapters.serving.base import DeleteReport, DeploymentSpec, RuntimeFailure, RuntimeStatus, Slot
from adapters.serving.local.commands import ServerPlan, child_env, plan_server, redact_argv, redact_text
from adapters.serving.local.logs import ProcessLogs
from adapters.serving.local.process import ProcessOptions, ServerProcess, StartFailure, free_port
from adapters.serving.settings import ServingSettings

__all__ = ["DEFAULT_DRAIN_S", "LocalRuntime"]

_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]{0,38}[a-z0-9])?")
DEFAULT_DRAIN_S = 10.0  # reconcile interval + the gateway's control refresh (5 s) + margin
_Key = tuple[str, Slot]


@dataclass
class _SlotState:
    current: ServerProcess | None = None  # what the slot serves (or is starting, when nothing served before)
    pending: ServerProcess | None = None  # a new revision starting next to a ready current one
    draining: dict[ServerProcess, asyncio.Task[None]] = field(default_factory=dict)

    def processes(self) -> list[ServerProcess]:
        return [p for p in (self.current, self.pending, *self.draining) if p is not None]


def _unit(endpoint_name: str, slot: Slot) -> str:
    return endpoint_name if slot == "stable" else f"{endpoint_name}-canary"


def _phase(proc: ServerProcess) -> Literal["progressing", "ready", "failed"]:
    if proc.state == "ready":
        return "ready"
    return "failed" if proc.state in ("failed", "stopped") else "progressing"


class LocalRuntime:
    """Server processes on this machine behind ``adapters.serving.base.ServingRuntime``."""

    name: Literal["kubernetes", "local"] = "local"

    def __init__(self, settings: ServingSettings, *, workdir: Path, objectstore: ObjectStore | None = None,
                 drain_s: float = DEFAULT_DRAIN_S, stop_grace_s: float = 5.0, max_restarts: int = 3,
                 restart_backoff_s: float = 0.5) -> None:
        self._settings = settings
        self._workdir = Path(workdir)
        self._objects = objectstore
        self._drain_s = drain_s
        self._options = ProcessOptions(ready_timeout_s=settings.local_ready_timeout_s, max_restarts=max_restarts,
                                       backoff_s=restart_backoff_s, stop_grace_s=stop_grace_s)
        self._slots: dict[_Key, _SlotState] = {}
        self._session: aiohttp.ClientSession | None = None
        # One thread starts every child (see process.py): off the event loop, and alive until aclose.
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmops-local-spawn")
        self._closed = False

    # -- the protocol -----------------------------------------------------------------------------

    def render(self, spec: DeploymentSpec, slot: Slot) -> list[dict[str, Any]]:
        plan = self._plan(spec)
        doc: dict[str, Any] = {"kind": "LocalProcess", "name": _unit(spec.endpoint_name, slot), "slot": slot,
                               "revision": spec.revision, "server": plan.kind, "image": spec.image,
                               "command": redact_argv(plan.argv)}
        if plan.failure:
            doc["error"] = plan.failure
        return [doc]

    async def apply(self, spec: DeploymentSpec, slot: Slot) -> list[dict[str, Any]]:
        if self._closed:
            raise RuntimeFailure("the local runtime is shut down")
        if not _DNS_1035.fullmatch(spec.endpoint_name):
            raise RuntimeFailure("the endpoint name is not a DNS-1035 label")  # it names files under workdir
        manifests = self.render(spec, slot)
        try:
            (self._workdir / "logs").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RuntimeFailure(f"cannot use the local serving directory: {exc.strerror}") from None
        state = self._slots.setdefault((spec.endpoint_id, slot), _SlotState())
        current, pending = state.current, state.pending
        if pending is not None and pending.revision == spec.revision:
            return manifests  # already rolling out
        if pending is not None:  # another revision was rolling out: it gives way
            state.pending = None
            self._stop_later(state, pending)
        if current is not None and current.revision == spec.revision:
            return manifests
        proc = self._process(spec, slot, self._plan(spec))
        if current is not None and current.state == "ready":
            state.pending = proc
            proc.on_ready = lambda ready: self._switch(spec.endpoint_id, slot, ready)
        else:
            state.current = proc
            if current is not None:
                self._stop_later(state, current)
        proc.start()
        return manifests

    async def status(self, endpoint_id: str, endpoint_name: str, slot: Slot) -> RuntimeStatus:
        state = self._slots.get((endpoint_id, slot))
        if state is None or state.current is None:
            return RuntimeStatus(phase="absent")
        current, pending = state.current, state.pending
        details = current.details()
        reason, message = current.reason, current.message
        if pending is not None:
            details["rollout"] = {"revision": pending.revision, "phase": _phase(pending), "reason": pending.reason,
                                  "message": pending.message, **pending.details()}
            if pending.state == "failed":
                reason, message = pending.reason, f"revision {pending.revision} failed: {pending.message}"
            else:
                message = f"revision {pending.revision} is starting next to revision {current.revision}"
        if state.draining:
            details["draining"] = [p.pid for p in state.draining if p.alive]
        ready = current.state == "ready"
        return RuntimeStatus(phase=_phase(current), reason=reason, message=message, ready_replicas=int(ready),
                             desired_replicas=1, base_url=current.base_url, revision=current.revision,
                             details=details)

    async def delete(self, endpoint_id: str, endpoint_name: str, slot: Slot | None = None) -> DeleteReport:
        deleted: list[str] = []
        gone: list[str] = []
        failed: dict[str, str] = {}
        for one in (slot,) if slot is not None else ("stable", "canary"):
            state = self._slots.pop((endpoint_id, one), None)
            procs = state.processes() if state is not None else []
            if not procs:
                gone.append(f"LocalProcess/{_unit(endpoint_name, one)}")
                continue
            for task in state.draining.values() if state is not None else ():
                task.cancel()
            results = await asyncio.gather(*(p.stop() for p in procs), return_exceptions=True)
            for proc, result in zip(procs, results, strict=True):
                if isinstance(result, BaseException):
                    failed[f"process {proc.pid}"] = f"could not stop it: {type(result).__name__}"
                elif result[0] == "deleted":
                    deleted.append(result[1])
                else:
                    gone.append(result[1])
        return DeleteReport(deleted=deleted, already_gone=gone, failed=failed)

    async def aclose(self) -> None:
        """Stop every process (SIGTERM, SIGKILL after the grace) and forget every slot."""
        self._closed = True
        states, self._slots = list(self._slots.values()), {}
        for state in states:
            for task in state.draining.values():
                task.cancel()
        procs = [p for state in states for p in state.processes()]
        await asyncio.gather(*(p.stop() for p in procs), return_exceptions=True)
        self._spawner.shutdown(wait=False)
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # -- internals --------------------------------------------------------------------------------

    def _plan(self, spec: DeploymentSpec) -> ServerPlan:
        return plan_server(spec, self._settings, workdir=self._workdir, has_objectstore=self._objects is not None)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        return self._session

    def _process(self, spec: DeploymentSpec, slot: Slot, plan: ServerPlan) -> ServerProcess:
        name = f"{_unit(spec.endpoint_name, slot)}-r{spec.revision}"
        prepare = None
        if plan.model_key is not None and plan.model_path is not None:
            key, path = plan.model_key, plan.model_path
            prepare = lambda: self._fetch_model(key, path)  # noqa: E731
        return ServerProcess(
            revision=spec.revision, argv=plan.argv, port=free_port(), env=child_env(), cwd=str(self._workdir),
            logs=ProcessLogs.under(self._workdir / "logs", name), options=self._options, session=self._http,
            server=plan.kind, prepare=prepare, unrunnable=plan.failure, spawner=self._spawner)

    def _switch(self, endpoint_id: str, slot: Slot, ready: ServerProcess) -> None:
        """The rolling-out process is ready: it becomes the slot's, and the old one drains."""
        state = self._slots.get((endpoint_id, slot))
        if state is None or state.pending is not ready:
            return  # superseded or deleted meanwhile
        old, state.current, state.pending = state.current, ready, None
        if old is not None:
            old.retire()
            state.draining[old] = asyncio.get_running_loop().create_task(self._drain(state, old))

    async def _drain(self, state: _SlotState, proc: ServerProcess) -> None:
        try:
            await asyncio.sleep(self._drain_s)
            await proc.stop()
        finally:
            state.draining.pop(proc, None)

    def _stop_later(self, state: _SlotState, proc: ServerProcess) -> None:
        """Stop a process that serves no traffic, without making ``apply`` wait for it."""
        proc.retire()
        state.draining[proc] = asyncio.get_running_loop().create_task(self._stop_now(state, proc))

    async def _stop_now(self, state: _SlotState, proc: ServerProcess) -> None:
        try:
            await proc.stop()
        finally:
            state.draining.pop(proc, None)

    async def _fetch_model(self, key: str, path: Path) -> None:
        """Copy the model file from the object store once (kept under ``workdir/models`` for later revisions)."""
        if await asyncio.to_thread(path.is_file):
            return
        assert self._objects is not None
        tmp = path.with_name(path.name + ".part")
        try:
            await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
            f = await asyncio.to_thread(open, tmp, "wb")
            chunks = self._objects.open(key)
            try:
                async for chunk in chunks:
                    await asyncio.to_thread(f.write, chunk)
            finally:
                f.close()
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    await aclose()
            await asyncio.to_thread(tmp.replace, path)
        except ObjectNotFound:
            raise StartFailure("ModelNotFound", f"model file {key!r} is not in the object store") from None
        except (ObjectStoreError, OSError) as exc:
            why = redact_text(str(exc))
            raise StartFailure("ModelFetchFailed", f"could not fetch model file {key!r}: {why}") from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
