"""Failed-auth audit aggregation: a flood of refused requests cannot fill the audit log.

Denials are grouped per ``(reason, source address)`` in windows of ``window_s``:
the first denial of a window is written at once, as before; the rest are only
counted, and when the window closes one aggregate ``auth.denied`` row carries
their ``count`` (in ``after``). A steady flood from one address thus writes two
rows per window instead of one per request, and costs no database round-trip
per request.

Memory is bounded: at most ``max_windows`` windows are open; denials that would
open one more share a single overflow window (reason and source ``"(many)"``).
``DenialStats`` counts every denial by status for Prometheus
(``llmops_admin_auth_denials_total``), aggregated or not.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client.core import CounterMetricFamily

__all__ = ["OVERFLOW", "DenialStats", "DenialWindows", "Window"]

OVERFLOW = ("(many)", "(many)")


@dataclass
class Window:
    """One open window: the first denial was written; ``count`` more were not (yet)."""

    status_code: int
    resource_id: str
    actor_name: str  # of the first denial (401s are "anonymous"; a 403's reason names its key)
    first_at: datetime
    last_at: datetime
    count: int = 0
    request_ids: list[str] = field(default_factory=list)  # of the counted ones, a few for tracing


class DenialWindows:
    """The open windows, keyed by ``(reason, source)``; pure bookkeeping, no I/O and no clock of its own."""

    def __init__(self, *, max_windows: int = 10_000) -> None:
        self.max_windows = max_windows
        self._open: dict[tuple[str, str], Window] = {}

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, reason: str, source: str, *, at: datetime, status_code: int, resource_id: str,
              actor_name: str, request_id: str) -> tuple[tuple[str, str], bool]:
        """``(key, first)``: ``first`` means "write this denial now, and close ``key`` in window_s"."""
        key = (reason, source)
        if key not in self._open and len(self._open) >= self.max_windows:
            key = OVERFLOW
        window = self._open.get(key)
        if window is None:
            self._open[key] = Window(status_code=status_code, resource_id=resource_id, actor_name=actor_name,
                                     first_at=at, last_at=at)
            return key, True
        window.count += 1
        window.last_at = at
        if len(window.request_ids) < 5:
            window.request_ids.append(request_id)
        return key, False

    def close(self, key: tuple[str, str]) -> Window | None:
        """End ``key``'s window; the window when denials were counted in it (an aggregate to write)."""
        window = self._open.pop(key, None)
        return window if window is not None and window.count else None

    def open_keys(self) -> list[tuple[str, str]]:
        return list(self._open)


class DenialStats:
    """Denials by HTTP status, as a Prometheus collector (register it on the registry /metrics serves)."""

    def __init__(self) -> None:
        self.by_status: dict[int, int] = {}

    def count(self, status_code: int) -> None:
        self.by_status[status_code] = self.by_status.get(status_code, 0) + 1

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("llmops_admin_auth_denials", "Admin API requests refused (401/403), "
                                     "whether or not each got its own audit row.", labels=["status"])
        for status, n in sorted(self.by_status.items()):
            family.add_metric([str(status)], n)
        yield family

    def describe(self) -> list[CounterMetricFamily]:
        return list(self.collect())
