"""Cancel a request's work when its client goes away, without a task per request.

Watching the ASGI `receive` channel needs a task. Almost every cancellation worth
making is of a long generation, so one sweeper, ticking every `tick_s`, arms a
watcher only for requests that have already run `after_s`; short requests never
cost more than two dict operations. `after_s` must stay well above the gateway's
own queueing delay under load (tens of ms at high concurrency), or every request
gets a watcher task again exactly when CPU is scarce.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import msgspec

from gateway.asgi import Receive

__all__ = ["DisconnectWatch", "Sweeper"]


class DisconnectWatch(msgspec.Struct):
    """One request's state: set `responded` before the final send, so the end of
    the response itself is not mistaken for a disconnect."""

    receive: Receive
    task: asyncio.Task[None]
    started: float
    watcher: asyncio.Task[None] | None = None
    responded: bool = False
    disconnected: bool = False

    def arm(self) -> None:
        if self.watcher is None and not self.responded:
            self.watcher = asyncio.create_task(self._watch())

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.cancel()

    async def _watch(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                if not self.responded:
                    self.disconnected = True
                    self.task.cancel()
                return


class Sweeper:
    def __init__(self, after_s: float = 0.5, tick_s: float = 0.1) -> None:
        self.after_s = after_s
        self.tick_s = tick_s
        self._pending: dict[int, DisconnectWatch] = {}  # by id(); insertion order = start order
        self._task: asyncio.Task[None] | None = None

    def watch(self, receive: Receive, task: asyncio.Task[None], started: float) -> DisconnectWatch:
        """Track a request that began at `started` (a `time.perf_counter()` reading)."""
        w = DisconnectWatch(receive, task, started)
        self._pending[id(w)] = w
        return w

    def done(self, w: DisconnectWatch) -> None:
        self._pending.pop(id(w), None)
        w.close()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="llmops-disconnect-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            deadline = time.perf_counter() - self.after_s
            while self._pending:
                key, w = next(iter(self._pending.items()))
                if w.started > deadline:
                    break  # the rest started later still
                del self._pending[key]
                w.arm()
