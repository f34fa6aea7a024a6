"""Per-backend circuit breaker: closed → open after N consecutive failures →
half-open after a cooldown (exactly one probe) → closed on success.

Kept synchronous and lock-free: the gateway runs on one event loop, so state
changes between awaits are atomic.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    __slots__ = ("_clock", "_opened_at", "_probing", "cooldown_s", "failures", "on_change", "state", "threshold")

    def __init__(
        self,
        threshold: int = 5,
        cooldown_s: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.state = BreakerState.CLOSED
        self.failures = 0
        self._opened_at = 0.0
        self._probing = False
        self._clock = clock
        self.on_change = on_change

    def available(self) -> bool:
        """Could a request go through now? No side effects."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            return self._clock() - self._opened_at >= self.cooldown_s
        return not self._probing

    def acquire(self) -> bool:
        """Claim the right to send; in half-open only one probe is let through."""
        if self.state is BreakerState.CLOSED:
            return True
        if not self.available():
            return False
        self._set(BreakerState.HALF_OPEN)
        self._probing = True
        return True

    def record_success(self) -> None:
        self.failures = 0
        self._probing = False
        if self.state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self.failures += 1
        self._probing = False
        if self.state is BreakerState.HALF_OPEN or self.failures >= self.threshold:
            self._opened_at = self._clock()
            self._set(BreakerState.OPEN)

    def release(self) -> None:
        """The attempt ended without a verdict (e.g. the client went away)."""
        self._probing = False

    def _set(self, state: BreakerState) -> None:
        if state is not self.state:
            self.state = state
            if self.on_change is not None:
                self.on_change(state)
