"""Prometheus metrics of the data plane, defined once.

Per-request series live in `RequestStats` (lock-free, see there). The rest are
rare events (errors, retries, reloads, breaker changes) on prometheus-client
metrics, with labelled children cached to skip `.labels()` lookups.

With several workers (`llmops serve --workers N`, gateway/workers.py) every
worker writes its series to per-process files in `PROMETHEUS_MULTIPROC_DIR`
(prometheus-client's multiprocess mode) and `/metrics`, whichever worker
answers it, sums the files: counters and histograms over every worker that
ever ran, `llmops_inflight_requests` over the live ones, `llmops_circuit_state`
as the highest state any live worker's breaker is in. The registry is then a
`_WorkersRegistry`: collectors registered on it that are not prometheus-client
metrics (the admin denial counts) are copied into those files by `publish`,
which each worker calls every second and before answering a scrape, as it does
for the in-flight gauge (a function of this process, unreadable from another).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, values
from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from gateway.request_stats import RequestStats
from gateway.usage_metrics import UsageMetrics

_M = TypeVar("_M", Counter, Gauge)

__all__ = ["MULTIPROC_ENV", "GatewayMetrics", "enable_multiprocess", "multiprocess_dir"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The shared metrics directory when this process is one of several workers, else None."""
    return os.environ.get(MULTIPROC_ENV) or None


def enable_multiprocess(path: str) -> None:
    """Switch prometheus-client to multiprocess mode (call before any metric exists, before forking).

    prometheus-client picks its value class when first imported, and the CLI has imported it
    by then (the admin commands' parser), so the choice is made again here."""
    os.environ[MULTIPROC_ENV] = path
    values.ValueClass = values.get_value_class()


class _FunctionGauge(Gauge):
    """A gauge whose `set_function` callback `publish` can also copy into the shared files."""

    read: Callable[[], float] | None = None

    def set_function(self, f: Callable[[], float]) -> None:
        self.read = f
        super().set_function(f)


class _WorkersRegistry(CollectorRegistry):
    """What /metrics collects with several workers: the sum of every worker's files.

    Custom collectors registered here (not prometheus-client metrics, which write the files
    themselves) are kept for `publish` to copy into this worker's file."""

    def __init__(self, path: str, publish: Callable[[], None]) -> None:
        super().__init__()
        self._files = MultiProcessCollector(None, path)
        self._publish = publish
        self.mirrored: list[Collector] = []

    def register(self, collector: Collector) -> None:
        self.mirrored.append(collector)

    def unregister(self, collector: Collector) -> None:
        self.mirrored.remove(collector)

    def collect(self) -> Iterator[Metric]:
        self._publish()  # this worker's own values are exact at scrape time
        yield from self._files.collect()


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.shared_dir = multiprocess_dir()
        self._shared: _WorkersRegistry | None = None
        if self.shared_dir is None:
            self.registry = registry or CollectorRegistry()
            r: CollectorRegistry | None = self.registry
        else:  # the metrics write their files themselves: registering them would count them twice
            self.registry = self._shared = _WorkersRegistry(self.shared_dir, self.publish)
            r = None
        self.stats = RequestStats(self.shared_dir)  # requests, latency, TTFT: updated once per request
        # tokens, cost, priced/unpriced and A/B variants, with bounded labels: a usage consumer (gateway/app.py)
        self.usage_stats = UsageMetrics(self.shared_dir)
        if r is not None:
            r.register(self.stats)
            r.register(self.usage_stats)
        self.upstream_errors = Counter(
            "llmops_upstream_errors", "Failed upstream attempts by provider and error type.",
            ["provider", "type"], registry=r,
        )
        self.retries = Counter(
            "llmops_retries", "Attempts beyond the first, by route and provider.", ["route", "provider"], registry=r,
        )
        self.inflight = _FunctionGauge("llmops_inflight_requests", "Chat requests in flight.", registry=r,
                                       multiprocess_mode="livesum")
        self.circuit = Gauge(
            "llmops_circuit_state", "Circuit breaker state per backend (0 closed, 1 open, 2 half-open).",
            ["provider", "backend"], registry=r, multiprocess_mode="livemax",
        )
        self.usage_dropped = Counter(
            "llmops_usage_records_dropped", "Usage records dropped because the sink queue was full.", registry=r,
        )
        self.reloads = Counter("llmops_config_reloads", "Config reloads by result.", ["result"], registry=r)
        # Routes with a queue bound (serving endpoints that scale from zero): KEDA scales on the gauge.
        self.route_queued = Gauge(
            "llmops_route_queued_requests", "Requests waiting for a replica of their route (scale from zero).",
            ["route"], registry=r, multiprocess_mode="livesum",
        )
        self.queue_timeouts = Counter(
            "llmops_route_queue_timeouts", "Queued requests failed because no replica became ready in time.",
            ["route"], registry=r,
        )
        self._children: dict[tuple[object, ...], Any] = {}
        self._mirror: MmapedDict | None = None
        self._mirror_keys: dict[tuple[str, str, tuple[tuple[str, str], ...]], str] = {}

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

    def queued(self, route: str) -> Gauge:
        """The route's queued-requests gauge (inc on entering the queue, dec on leaving it)."""
        return self._child(self.route_queued, route)

    def count_queue_timeout(self, route: str) -> None:
        self._child(self.queue_timeouts, route).inc()

    def set_circuit(self, provider: str, backend: str, state: int) -> None:
        self._child(self.circuit, provider, backend).set(state)

    def publish(self) -> None:
        """Copy this worker's scrape-time values into the shared files (no-op in one process)."""
        if self._shared is None or self.shared_dir is None:
            return
        if self.inflight.read is not None:
            self.inflight.set(self.inflight.read())
        if not self._shared.mirrored:
            return
        if self._mirror is None:  # `counter_` prefix: the multiprocess collector sums these over pids
            self._mirror = MmapedDict(os.path.join(self.shared_dir, f"counter_mirror-{os.getpid()}.db"))
        for collector in self._shared.mirrored:
            for family in collector.collect():
                for s in family.samples:
                    labels = tuple(sorted(s.labels.items()))
                    key = self._mirror_keys.get((family.name, s.name, labels))
                    if key is None:
                        key = mmap_key(family.name, s.name, [k for k, _ in labels], [v for _, v in labels],
                                       family.documentation)
                        self._mirror_keys[(family.name, s.name, labels)] = key
                    self._mirror.write_value(key, s.value, 0.0)
