"""``ScriptedRuntime``: an in-memory ``TrainingRuntime`` whose attempts a test moves by hand (a test double: no
process, no cluster). The real runtimes have their own tests (tests/adapters/training).

What a runtime has lives in a ``Cluster``, which outlives the runtime objects, as Kubernetes or the local
runtime's state directory do: a restart test closes one runtime and makes another on the same cluster.
``cluster.move(job, attempt, phase, ...)`` changes an attempt and tells every open runtime's ``watch()``
(``cluster.quiet = True``: the watch hears nothing, so only the supervisor's poll can notice). ``refusals``
are raised by the next submits, in order; ``down`` makes reads and cancels fail as an unreachable API would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from adapters.training.base import AttemptPhase, AttemptRef, AttemptStatus, LaunchSpec, RuntimeFailure

__all__ = ["Cluster", "FakeAttempt", "ScriptedRuntime"]


@dataclass
class FakeAttempt:
    spec: LaunchSpec
    phase: AttemptPhase = "pending"
    exit_code: int | None = None
    reason: str | None = None
    message: str = ""
    logs: str = ""
    cleaned: bool = False
    started_at: float | None = None  # epoch seconds its processes started, as the real runtimes report


@dataclass
class Cluster:
    attempts: dict[tuple[str, int], FakeAttempt] = field(default_factory=dict)
    submits: list[LaunchSpec] = field(default_factory=list)  # every submit call that created an attempt
    refusals: list[RuntimeFailure] = field(default_factory=list)
    cancels: list[tuple[str, int]] = field(default_factory=list)
    cleanups: list[tuple[str, int]] = field(default_factory=list)
    quiet: bool = False
    down: bool = False  # status, active and cancel raise a retryable RuntimeFailure (the API is unreachable)
    stall: bool = False  # status waits until cancelled, and turns the cancel into an error (as a driver may)
    listeners: list[asyncio.Queue[AttemptStatus | None]] = field(default_factory=list)

    def attempt(self, job_id: str, number: int) -> FakeAttempt:
        return self.attempts[(job_id, number)]

    def status(self, job_id: str, number: int) -> AttemptStatus:
        found = self.attempts.get((job_id, number))
        if found is None or found.cleaned:
            return AttemptStatus(job_id=job_id, attempt=number, phase="absent")
        return AttemptStatus(job_id=job_id, attempt=number, phase=found.phase, exit_code=found.exit_code,
                             reason=found.reason, message=found.message, started_at=found.started_at)

    def move(self, job_id: str, number: int, phase: AttemptPhase, *, exit_code: int | None = None,
             reason: str | None = None, message: str = "", started_at: float | None = None) -> None:
        found = self.attempts[(job_id, number)]
        found.phase, found.exit_code, found.reason, found.message = phase, exit_code, reason, message
        found.started_at = started_at if started_at is not None else found.started_at
        self.tell(job_id, number)

    def lose(self, job_id: str, number: int) -> None:
        """The attempt vanishes (a node and its pods gone) without an event."""
        del self.attempts[(job_id, number)]

    def tell(self, job_id: str, number: int) -> None:
        if not self.quiet:
            for queue in self.listeners:
                queue.put_nowait(self.status(job_id, number))


class ScriptedRuntime:
    def __init__(self, cluster: Cluster | None = None, *, name: Literal["local", "kubernetes"] = "local") -> None:
        self.cluster = cluster or Cluster()
        self.name = name
        self.closed = False
        self._queue: asyncio.Queue[AttemptStatus | None] = asyncio.Queue()
        self.cluster.listeners.append(self._queue)

    def render(self, spec: LaunchSpec) -> list[dict[str, Any]]:
        return [{"kind": "FakeAttempt", "jobId": spec.job_id, "attempt": spec.attempt, "command": spec.command,
                 "env": sorted(spec.env), "secretEnv": sorted(spec.secret_env)}]

    async def submit(self, spec: LaunchSpec) -> list[dict[str, Any]]:
        if self.cluster.refusals:
            raise self.cluster.refusals.pop(0)
        key = (spec.job_id, spec.attempt)
        if key not in self.cluster.attempts:
            self.cluster.attempts[key] = FakeAttempt(spec=spec)
            self.cluster.submits.append(spec)
            self.cluster.tell(*key)
        return self.render(spec)

    def _check(self) -> None:
        if self.cluster.down:
            raise RuntimeFailure("connection refused", retryable=True)

    async def status(self, job_id: str, attempt: int) -> AttemptStatus:
        self._check()
        if self.cluster.stall:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                raise RuntimeFailure("connection reset") from None
        return self.cluster.status(job_id, attempt)

    async def watch(self) -> AsyncIterator[AttemptStatus]:
        while not self.closed:
            item = await self._queue.get()
            if item is None:
                return
            yield item

    async def active(self) -> list[AttemptRef]:
        self._check()
        return [AttemptRef(job_id=j, attempt=n) for (j, n), a in self.cluster.attempts.items() if not a.cleaned]

    async def cancel(self, job_id: str, attempt: int, *, grace_s: float = 10.0) -> None:
        self._check()
        self.cluster.cancels.append((job_id, attempt))
        found = self.cluster.attempts.get((job_id, attempt))
        if found is not None and found.phase in ("pending", "running"):
            self.cluster.move(job_id, attempt, "failed", reason="Cancelled", message="stopped")

    async def logs(self, job_id: str, attempt: int, *, tail_lines: int = 200) -> str:
        found = self.cluster.attempts.get((job_id, attempt))
        return "\n".join((found.logs if found else "").splitlines()[-tail_lines:])

    async def cleanup(self, job_id: str, attempt: int) -> None:
        self.cluster.cleanups.append((job_id, attempt))
        found = self.cluster.attempts.get((job_id, attempt))
        if found is not None:
            found.cleaned = True

    async def aclose(self) -> None:
        self.closed = True
        self._queue.put_nowait(None)
        if self._queue in self.cluster.listeners:
            self.cluster.listeners.remove(self._queue)
