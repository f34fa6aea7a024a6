"""Per-request Prometheus series kept as plain dicts, exposed at scrape time.

prometheus-client's Counter/Histogram take a lock and walk label children on
every update; at thousands of requests per second that is a visible share of
the gateway's CPU. These series are only ever updated by the usage worker and
read by `/metrics`, both on the event loop, so a lock-free accumulator plus a
custom collector gives the same exposition for a fraction of the cost.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["LATENCY_BUCKETS", "TTFT_BUCKETS", "RequestStats"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _Histogram:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # last slot is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # `le` is inclusive, as Prometheus defines it
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, n in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


class RequestStats(Collector):
    def __init__(self) -> None:
        self.requests: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self.tokens: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self.latency: dict[tuple[str, str], _Histogram] = {}
        self.ttft: dict[tuple[str, str], _Histogram] = {}

    def observe(self, route: str, provider: str, status: int, latency_s: float, ttft_s: float | None,
                prompt_tokens: int, completion_tokens: int) -> None:
        key = (route, provider)
        self.requests[(route, provider, str(status))] += 1
        hist = self.latency.get(key)
        if hist is None:
            hist = self.latency[key] = _Histogram(LATENCY_BUCKETS)
        hist.observe(latency_s)
        if ttft_s is not None:
            hist = self.ttft.get(key)
            if hist is None:
                hist = self.ttft[key] = _Histogram(TTFT_BUCKETS)
            hist.observe(ttft_s)
        if prompt_tokens:
            self.tokens[(route, provider, "prompt")] += prompt_tokens
        if completion_tokens:
            self.tokens[(route, provider, "completion")] += completion_tokens

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "llmops_requests", "Chat requests by route, provider and HTTP status.",
            labels=["route", "provider", "status"],
        )
        for labels, n in self.requests.items():
            requests.add_metric(list(labels), n)
        yield requests
        tokens = CounterMetricFamily(
            "llmops_tokens", "Tokens by route, provider and kind (prompt|completion).",
            labels=["route", "provider", "kind"],
        )
        for labels, n in self.tokens.items():
            tokens.add_metric(list(labels), n)
        yield tokens
        for name, doc, series in (
            ("llmops_request_latency_seconds", "End-to-end request latency.", self.latency),
            ("llmops_time_to_first_token_seconds", "Time to the first streamed content token.", self.ttft),
        ):
            family = HistogramMetricFamily(name, doc, labels=["route", "provider"])
            for labels, hist in series.items():
                family.add_metric(list(labels), hist.cumulative(), hist.sum)
            yield family
