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

from gateway.asgi import Receive

__all__ = ["DisconnectWatch", "Sweeper"]


class DisconnectWatch:
    """One request's state: set `responded` before the final send, so the end of
    the response itself is not mistaken for a disconnect."""

    __slots__ = ("_receive", "_task", "_watcher", "disconnected", "responded", "started")

    def __init__(self, receive: Receive, task: asyncio.Task[None], started: float) -> None:
        self._receive = receive
        self._task = task
        self._watcher: asyncio.Task[None] | None = None
        self.started = started
        self.responded = False
        self.disconnected = False

    def arm(self) -> None:
        if self._watcher is None and not self.responded:
            self._watcher = asyncio.create_task(self._watch())

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                if not self.responded:
                    self.disconnected = True
                    self._task.cancel()
                return


class Sweeper:
    def __init__(self, after_s: float = 0.5, tick_s: float = 0.1) -> None:
        self.after_s = after_s
        self.tick_s = tick_s
        self._pending: dict[DisconnectWatch, None] = {}  # insertion order = start order
        self._task: asyncio.Task[None] | None = None

    def watch(self, receive: Receive, task: asyncio.Task[None]) -> DisconnectWatch:
        w = DisconnectWatch(receive, task, asyncio.get_running_loop().time())
        self._pending[w] = None
        return w

    def done(self, w: DisconnectWatch) -> None:
        self._pending.pop(w, None)
        w.close()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="llmops-disconnect-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.tick_s)
            deadline = loop.time() - self.after_s
            while self._pending:
                w = next(iter(self._pending))
                if w.started > deadline:
                    break  # the rest started later still
                del self._pending[w]
                w.arm()
