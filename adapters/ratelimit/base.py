"""The rate-limiter protocol both backends implement, and the one error they raise.

Contract: ``reserve(demand)`` checks every bucket, slot and spend of one request and, only when
all pass, takes them, atomically with respect to every other replica sharing the backend; the
``Verdict`` says which check refused otherwise. ``settle(settlements)`` returns what each request
reserved and did not use (or charges what it used beyond), releases its concurrency slots and adds
its metered cost to the spend; it answers the budget alerts each settlement crossed for the first
time this period. Reservations a caller never settles expire after their ``ttl_s``.

``BackendUnavailable`` is the only exception either method raises on purpose (connection lost,
timeout, script failure): the caller decides what a request does then (``on_backend_error``).
Cancelling ``reserve`` after it was sent may still leave the reservation taken; settle it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from policies.limits import Demand, Fired, Settlement, Verdict

__all__ = ["BackendUnavailable", "RateLimiter"]


class BackendUnavailable(Exception):
    """The shared backend could not answer; the message says why (never a URL or password)."""


class RateLimiter(Protocol):
    name: str

    async def reserve(self, demand: Demand) -> Verdict: ...

    async def settle(self, settlements: Sequence[Settlement]) -> list[list[Fired]]: ...

    def status(self) -> dict[str, Any]:
        """For ``/readyz``: the backend's kind and state, nothing secret."""
        ...

    async def aclose(self) -> None: ...
