"""The request watchdog: deadlines cancel the request task, and only our own cancellations become timeouts."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.watchdog import Watchdog


async def _never() -> dict[str, str]:
    await asyncio.sleep(3600)
    return {"type": "http.request"}


async def _attempt(dog: Watchdog, first_byte_s: float, work_s: float) -> str:
    """Mimics the relay: one attempt under a deadline, its cancellation turned into an outcome."""
    task = asyncio.current_task()
    assert task is not None
    w = dog.watch(_never, task, time.perf_counter())
    try:
        dog.expect(w, first_byte_s, 60)
        try:
            await asyncio.sleep(work_s)
        except asyncio.CancelledError:
            if w.take_timeout():
                return "timeout"
            raise
        w.settled()
        await asyncio.sleep(0.1)  # no deadline applies any more: this must not be cut short
        return "ok"
    finally:
        dog.done(w)


@pytest.fixture
async def dog():
    d = Watchdog(after_s=10, tick_s=0.01)
    await d.start()
    yield d
    await d.stop()


async def test_deadline_cancels_and_becomes_a_timeout(dog: Watchdog) -> None:
    t0 = time.perf_counter()
    assert await _attempt(dog, first_byte_s=0.05, work_s=5) == "timeout"
    assert time.perf_counter() - t0 < 1
    assert asyncio.current_task().cancelling() == 0  # the cancellation was swallowed, not left pending


async def test_settled_attempt_is_not_cancelled(dog: Watchdog) -> None:
    assert await _attempt(dog, first_byte_s=0.05, work_s=0.01) == "ok"


async def test_many_requests_only_the_late_ones_time_out(dog: Watchdog) -> None:
    fast = [asyncio.create_task(_attempt(dog, 0.3, 0.01)) for _ in range(20)]
    slow = [asyncio.create_task(_attempt(dog, 0.05, 5)) for _ in range(20)]
    assert await asyncio.gather(*fast) == ["ok"] * 20
    assert await asyncio.gather(*slow) == ["timeout"] * 20
    assert not dog._inflight and not dog._unarmed  # every watch was released


async def test_outside_cancellation_is_not_taken_for_a_timeout(dog: Watchdog) -> None:
    task = asyncio.create_task(_attempt(dog, first_byte_s=30, work_s=5))
    await asyncio.sleep(0.05)
    task.cancel()  # e.g. server shutdown: must propagate, not turn into an upstream timeout
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_disconnect_wins_over_timeout(dog: Watchdog) -> None:
    task = asyncio.current_task()
    assert task is not None
    w = dog.watch(_never, task, time.perf_counter())
    w.timed_out = w.disconnected = True
    assert w.take_timeout() is False
    dog.done(w)
