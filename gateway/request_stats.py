"""Per-request Prometheus series kept as plain Python numbers, exposed at scrape time.

prometheus-client's Counter/Histogram take a lock and walk label children on
every update; at thousands of requests per second that is a visible share of
the gateway's CPU. These series are only ever updated by the usage worker and
read by `/metrics`, both on the event loop, so a lock-free accumulator plus a
custom collector gives the same exposition for a fraction of the cost. Updates
come in batches (`observe_many`), one flat loop per batch with one dict lookup
per record.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["LATENCY_BUCKETS", "TTFT_BUCKETS", "Observation", "RequestStats"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Observation(Protocol):
    """What one finished request contributes (a `gateway.metering.UsageRecord` is one)."""

    route: str
    provider: str
    status: int
    latency_s: float
    ttft_s: float | None
    prompt_tokens: int
    completion_tokens: int


class _Series:
    """Everything one (route, provider) pair accumulates. Histogram counts are per bucket,
    the last slot being +Inf; `le` is inclusive, as Prometheus defines it (`bisect_left`)."""

    __slots__ = ("by_status", "completion_tokens", "latency", "latency_sum", "prompt_tokens", "ttft", "ttft_sum")

    def __init__(self) -> None:
        self.by_status: dict[int, int] = {}
        self.latency = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.ttft = [0] * (len(TTFT_BUCKETS) + 1)
        self.ttft_sum = 0.0
        self.prompt_tokens = 0
        self.completion_tokens = 0


def _cumulative(bounds: Sequence[float], counts: list[int]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip((*map(str, bounds), "+Inf"), counts, strict=True):
        running += n
        out.append((bound, running))
    return out


class RequestStats(Collector):
    def __init__(self) -> None:
        self._series: dict[tuple[str, str], _Series] = {}

    def observe_many(self, batch: Iterable[Observation]) -> None:
        series = self._series
        for r in batch:
            s = series.get((r.route, r.provider))
            if s is None:
                s = series[(r.route, r.provider)] = _Series()
            s.by_status[r.status] = s.by_status.get(r.status, 0) + 1
            s.latency[bisect_left(LATENCY_BUCKETS, r.latency_s)] += 1
            s.latency_sum += r.latency_s
            if r.ttft_s is not None:
                s.ttft[bisect_left(TTFT_BUCKETS, r.ttft_s)] += 1
                s.ttft_sum += r.ttft_s
            s.prompt_tokens += r.prompt_tokens
            s.completion_tokens += r.completion_tokens

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "llmops_requests", "Chat requests by route, provider and HTTP status.",
            labels=["route", "provider", "status"],
        )
        tokens = CounterMetricFamily(
            "llmops_tokens", "Tokens by route, provider and kind (prompt|completion).",
            labels=["route", "provider", "kind"],
        )
        latency = HistogramMetricFamily(
            "llmops_request_latency_seconds", "End-to-end request latency.", labels=["route", "provider"]
        )
        ttft = HistogramMetricFamily(
            "llmops_time_to_first_token_seconds", "Time to the first streamed content token.",
            labels=["route", "provider"],
        )
        for (route, provider), s in self._series.items():
            for status, n in s.by_status.items():
                requests.add_metric([route, provider, str(status)], n)
            if s.prompt_tokens:
                tokens.add_metric([route, provider, "prompt"], s.prompt_tokens)
            if s.completion_tokens:
                tokens.add_metric([route, provider, "completion"], s.completion_tokens)
            latency.add_metric([route, provider], _cumulative(LATENCY_BUCKETS, s.latency), s.latency_sum)
            if any(s.ttft):
                ttft.add_metric([route, provider], _cumulative(TTFT_BUCKETS, s.ttft), s.ttft_sum)
        yield from (requests, tokens, latency, ttft)
