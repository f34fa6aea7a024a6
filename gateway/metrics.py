"""Prometheus metrics of the data plane, defined once.

Labelled children are cached in dicts: `.labels()` costs a lock and a tuple
lookup per call, which we avoid on the request path.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["GatewayMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "llmops_requests", "Chat requests by route, provider and HTTP status.",
            ["route", "provider", "status"], registry=r,
        )
        self.latency = Histogram(
            "llmops_request_latency_seconds", "End-to-end request latency.",
            ["route", "provider"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.ttft = Histogram(
            "llmops_time_to_first_token_seconds", "Time to the first streamed content token.",
            ["route", "provider"], buckets=_TTFT_BUCKETS, registry=r,
        )
        self.tokens = Counter(
            "llmops_tokens", "Tokens by route, provider and kind (prompt|completion).",
            ["route", "provider", "kind"], registry=r,
        )
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
        self._children: dict[tuple[object, ...], object] = {}

    def _child(self, metric: object, *labels: str) -> object:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = metric.labels(*labels)  # type: ignore[attr-defined]
            self._children[key] = child
        return child

    def count_request(self, route: str, provider: str, status: int, latency_s: float, ttft_s: float | None) -> None:
        self._child(self.requests, route, provider, str(status)).inc()  # type: ignore[attr-defined]
        self._child(self.latency, route, provider).observe(latency_s)  # type: ignore[attr-defined]
        if ttft_s is not None:
            self._child(self.ttft, route, provider).observe(ttft_s)  # type: ignore[attr-defined]

    def count_tokens(self, route: str, provider: str, prompt: int, completion: int) -> None:
        if prompt:
            self._child(self.tokens, route, provider, "prompt").inc(prompt)  # type: ignore[attr-defined]
        if completion:
            self._child(self.tokens, route, provider, "completion").inc(completion)  # type: ignore[attr-defined]

    def count_upstream_error(self, provider: str, kind: str) -> None:
        self._child(self.upstream_errors, provider, kind).inc()  # type: ignore[attr-defined]

    def count_retry(self, route: str, provider: str) -> None:
        self._child(self.retries, route, provider).inc()  # type: ignore[attr-defined]

    def set_circuit(self, provider: str, backend: str, state: int) -> None:
        self._child(self.circuit, provider, backend).set(state)  # type: ignore[attr-defined]
