"""Waiting for a condition in tests by polling it, never by a fixed sleep: shared by the local runtimes' tests
(serving and training) and the training module's, whose processes change state on their own schedule."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["until"]

T = TypeVar("T")


async def until(check: Callable[[], Awaitable[T | None]], timeout_s: float = 20.0, what: str = "condition",
                *, poll_s: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; fail with the last value after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
