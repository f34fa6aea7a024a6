"""Prometheus metrics of the data plane, defined once.

Per-request series live in `RequestStats` (lock-free, see there). The rest are
rare events (errors, retries, reloads, breaker changes) on prometheus-client
metrics, with labelled children cached to skip `.labels()` lookups.
"""

from __future__ import annotations

from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.request_stats import RequestStats

_M = TypeVar("_M", Counter, Gauge)

__all__ = ["GatewayMetrics"]


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.stats = RequestStats()  # requests, latency, TTFT, tokens: updated once per request
        r.register(self.stats)
        self.upstream_errors = Counter(
            "llmops_upstream_errors", "Failed upstream attempts by provider and error type.",
            ["provider", "type"], registry=r,
        )
        self.retries = Counter(
            "llmops_retries", "Attempts beyond the first, by route and provider.", ["route", "provider"], registry=r,
        )
        self.inflight = Gauge("llmops_inflight_requests", "Chat requests in flight.", registry=r)
        self.circuit = Gauge(
            "llmops_circuit_state", "Circuit breaker state per backend (0 closed, 1 open, 2 half-open).",
            ["provider", "backend"], registry=r,
        )
        self.usage_dropped = Counter(
            "llmops_usage_records_dropped", "Usage records dropped because the sink queue was full.", registry=r,
        )
        self.reloads = Counter("llmops_config_reloads", "Config reloads by result.", ["result"], registry=r)
        self._children: dict[tuple[object, ...], Any] = {}

    def _child(self, metric: _M, *labels: str) -> _M:
        key = (id(metric), *labels)
        child: _M | None = self._children.get(key)
        if child is None:
            child = metric.labels(*labels)
            self._children[key] = child
        return child

    def count_upstream_error(self, provider: str, kind: str) -> None:
        self._child(self.upstream_errors, provider, kind).inc()

    def count_retry(self, route: str, provider: str) -> None:
        self._child(self.retries, route, provider).inc()

    def set_circuit(self, provider: str, backend: str, state: int) -> None:
        self._child(self.circuit, provider, backend).set(state)
