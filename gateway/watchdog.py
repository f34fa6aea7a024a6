"""One background task watches every in-flight chat request, so the hot path arms
no task and no timer of its own.

Each tick (`tick_s`) it does two jobs:

- **Client disconnects.** Watching the ASGI `receive` channel needs a task. Almost
  every cancellation worth making is of a long generation, so a watcher task is
  armed only for requests that have already run `after_s`; short requests never
  cost more than a few dict operations. `after_s` must stay well above the
  gateway's own queueing delay under load (tens of ms at high concurrency), or
  every request gets a watcher task again exactly when CPU is scarce.
- **Upstream deadlines.** The relay writes each attempt's deadlines on the
  request's watch: first byte, total, and once a stream flows, the longest
  silence between chunks. A request past its deadline has its task cancelled
  and is marked `timed_out`; the relay turns that cancellation into an
  `UpstreamTimeout`, which is retried like any other. aiohttp's own read timeout
  re-arms a libuv timer on every socket read, which cost more than the rest of
  the relay; here a deadline is two float stores, and the tick scans the
  in-flight requests only when one may be due. Deadlines fire up to one tick late.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

import msgspec

from gateway.asgi import Receive

__all__ = ["RequestWatch", "Watchdog"]

_NEVER = math.inf


class RequestWatch(msgspec.Struct):
    """One request's state. Set `responded` before the final send, so the end of the
    response itself is not mistaken for a disconnect."""

    receive: Receive
    task: asyncio.Task[None]
    started: float
    watcher: asyncio.Task[None] | None = None
    responded: bool = False
    disconnected: bool = False
    timed_out: bool = False
    deadline: float = _NEVER  # the current attempt's first byte, else its end
    silence_s: float = _NEVER  # once streaming: the longest allowed gap between chunks
    progress_at: float = 0.0  # when the last chunk arrived

    def arm(self) -> None:
        if self.watcher is None and not self.responded:
            self.watcher = asyncio.create_task(self._watch())

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.cancel()

    def streaming(self, attempt_end: float, silence_s: float) -> None:
        """The first chunk is in: from now on bound the gaps and the attempt's end.
        Both lie after the first-byte deadline set before, so the watchdog's next
        scan is still early enough."""
        self.deadline = attempt_end
        self.silence_s = silence_s
        self.progress_at = time.perf_counter()

    def settled(self) -> None:
        """No upstream call is pending any more: no deadline applies."""
        self.deadline = self.silence_s = _NEVER

    def take_timeout(self) -> bool:
        """After a CancelledError: was it our deadline (and not the client leaving)?
        If so, swallow the cancellation so the request can answer or retry."""
        if not self.timed_out or self.disconnected:
            return False
        self.timed_out = False
        self.task.uncancel()
        return True

    async def _watch(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                if not self.responded:
                    self.disconnected = True
                    self.task.cancel()
                return


class Watchdog:
    def __init__(self, after_s: float = 0.5, tick_s: float = 0.05) -> None:
        self.after_s = after_s
        self.tick_s = tick_s
        # Keyed by id(): Structs are not hashable. Insertion order = start order.
        self._unarmed: dict[int, RequestWatch] = {}
        self._inflight: dict[int, RequestWatch] = {}
        self._next_check = _NEVER  # no deadline can pass before this
        self._task: asyncio.Task[None] | None = None

    def watch(self, receive: Receive, task: asyncio.Task[None], started: float) -> RequestWatch:
        """Track a request that began at `started` (a `time.perf_counter()` reading)."""
        w = RequestWatch(receive, task, started)
        self._unarmed[id(w)] = self._inflight[id(w)] = w
        return w

    def done(self, w: RequestWatch) -> None:
        key = id(w)
        self._unarmed.pop(key, None)
        self._inflight.pop(key, None)
        w.close()

    def expect(self, w: RequestWatch, first_byte_s: float, total_s: float) -> float:
        """An attempt starts now: set its first-byte deadline. Returns when the attempt must end."""
        now = time.perf_counter()
        w.deadline = now + min(first_byte_s, total_s)
        w.silence_s = _NEVER
        if w.deadline < self._next_check:
            self._next_check = w.deadline
        return now + total_s

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="llmops-request-watchdog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            now = time.perf_counter()
            self._arm_watchers(now - self.after_s)
            if now >= self._next_check:
                self._cancel_overdue(now)

    def _arm_watchers(self, started_before: float) -> None:
        while self._unarmed:
            key, w = next(iter(self._unarmed.items()))
            if w.started > started_before:
                break  # the rest started later still
            del self._unarmed[key]
            w.arm()

    def _cancel_overdue(self, now: float) -> None:
        next_check = _NEVER
        for w in self._inflight.values():
            due = min(w.deadline, w.progress_at + w.silence_s)
            if due < now:
                w.settled()
                w.timed_out = True
                w.task.cancel()
            elif due < next_check:
                next_check = due
        self._next_check = next_check
