"""Per-request Prometheus series kept as plain Python numbers, exposed at scrape time.

prometheus-client's Counter/Histogram take a lock and walk label children on
every update; at thousands of requests per second that is a visible share of
the gateway's CPU. These series are only ever updated by the usage worker and
read by `/metrics`, both on the event loop, so a lock-free accumulator plus a
custom collector gives the same exposition for a fraction of the cost. Updates
come in batches (`observe_many`), one flat loop per batch with one dict lookup
per record.

With several workers (`shared_dir` set) each batch is also written through to
this worker's files in prometheus-client's multiprocess format, once per
touched (route, provider) pair, so `/metrics` on any worker sums every worker's
series exactly; `collect` then yields nothing (the multiprocess collector reads
the files instead).
"""

from __future__ import annotations

import math
import os
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = ["LATENCY_BUCKETS", "TTFT_BUCKETS", "Observation", "RequestStats"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

_REQUESTS = ("llmops_requests", "Chat requests by route, provider and HTTP status.")
_LATENCY = ("llmops_request_latency_seconds", "End-to-end request latency.")
_TTFT = ("llmops_time_to_first_token_seconds", "Time to the first streamed content token.")


class Observation(Protocol):
    """What one finished request contributes (a `gateway.metering.UsageRecord` is one)."""

    route: str
    provider: str
    status: int
    latency_s: float
    ttft_s: float | None


class _Series:
    """Everything one (route, provider) pair accumulates. Histogram counts are per bucket,
    the last slot being +Inf; `le` is inclusive, as Prometheus defines it (`bisect_left`)."""

    __slots__ = ("by_status", "latency", "latency_sum", "ttft", "ttft_sum")

    def __init__(self) -> None:
        self.by_status: dict[int, int] = {}
        self.latency = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.ttft = [0] * (len(TTFT_BUCKETS) + 1)
        self.ttft_sum = 0.0


def _cumulative(bounds: Sequence[float], counts: list[int]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip((*bounds, math.inf), counts, strict=True):
        running += n
        out.append((floatToGoString(bound), running))  # "30.0", as prometheus-client and the shared files write it
    return out


class _SharedFiles:
    """One worker's series in prometheus-client's multiprocess files (`counter_*`/`histogram_*`,
    named apart from the library's own files, which another writer owns). Values are written
    whole, not added, so a rewrite is idempotent; histogram buckets are per bucket, as the
    multiprocess collector expects, which makes them cumulative when it sums the workers."""

    def __init__(self, path: str) -> None:
        pid = os.getpid()
        self._counters = MmapedDict(os.path.join(path, f"counter_stats-{pid}.db"))
        self._histograms = MmapedDict(os.path.join(path, f"histogram_stats-{pid}.db"))
        self._keys: dict[tuple[str, ...], str] = {}

    def _key(self, metric: tuple[str, str], suffix: str, names: tuple[str, ...], values: tuple[str, ...]) -> str:
        cache = (metric[0], suffix, *values)
        key = self._keys.get(cache)
        if key is None:
            key = self._keys[cache] = mmap_key(metric[0], metric[0] + suffix, list(names), list(values), metric[1])
        return key

    def write(self, route: str, provider: str, s: _Series) -> None:
        put_c, put_h, key = self._counters.write_value, self._histograms.write_value, self._key
        for status, n in s.by_status.items():
            put_c(key(_REQUESTS, "_total", ("route", "provider", "status"), (route, provider, str(status))), n, 0.0)
        histograms: list[tuple[tuple[str, str], Sequence[float], list[int], float]] = [
            (_LATENCY, LATENCY_BUCKETS, s.latency, s.latency_sum)]
        if any(s.ttft):
            histograms.append((_TTFT, TTFT_BUCKETS, s.ttft, s.ttft_sum))
        for metric, bounds, counts, total in histograms:
            for bound, n in zip((*bounds, math.inf), counts, strict=True):
                le = floatToGoString(bound)
                put_h(key(metric, "_bucket", ("route", "provider", "le"), (route, provider, le)), n, 0.0)
            put_h(key(metric, "_sum", ("route", "provider"), (route, provider)), total, 0.0)


class RequestStats(Collector):
    def __init__(self, shared_dir: str | None = None) -> None:
        self._series: dict[tuple[str, str], _Series] = {}
        self._shared_dir = shared_dir
        self._shared: _SharedFiles | None = None  # opened on the first batch, in the worker that writes

    def observe_many(self, batch: Iterable[Observation]) -> None:
        series = self._series
        touched: set[tuple[str, str]] | None = set() if self._shared_dir is not None else None
        for r in batch:
            s = series.get((r.route, r.provider))
            if s is None:
                s = series[(r.route, r.provider)] = _Series()
            if touched is not None:
                touched.add((r.route, r.provider))
            s.by_status[r.status] = s.by_status.get(r.status, 0) + 1
            s.latency[bisect_left(LATENCY_BUCKETS, r.latency_s)] += 1
            s.latency_sum += r.latency_s
            if r.ttft_s is not None:
                s.ttft[bisect_left(TTFT_BUCKETS, r.ttft_s)] += 1
                s.ttft_sum += r.ttft_s
        if touched:
            self._write_shared(touched)

    def _write_shared(self, touched: set[tuple[str, str]]) -> None:
        if self._shared is None:
            assert self._shared_dir is not None
            self._shared = _SharedFiles(self._shared_dir)
        for route, provider in touched:
            self._shared.write(route, provider, self._series[(route, provider)])

    def collect(self) -> Iterator[Metric]:
        if self._shared_dir is not None:
            return  # the multiprocess collector reads what `observe_many` wrote
        requests = CounterMetricFamily(*_REQUESTS, labels=["route", "provider", "status"])
        latency = HistogramMetricFamily(*_LATENCY, labels=["route", "provider"])
        ttft = HistogramMetricFamily(*_TTFT, labels=["route", "provider"])
        for (route, provider), s in self._series.items():
            for status, n in s.by_status.items():
                requests.add_metric([route, provider, str(status)], n)
            latency.add_metric([route, provider], _cumulative(LATENCY_BUCKETS, s.latency), s.latency_sum)
            if any(s.ttft):
                ttft.add_metric([route, provider], _cumulative(TTFT_BUCKETS, s.ttft), s.ttft_sum)
        yield from (requests, latency, ttft)
