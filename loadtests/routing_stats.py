"""The routing benchmark's numbers: one run's summary from its records, counters and load samples, and the
table of medians over rounds with the issue's targets. Pure functions, unit-tested without load."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loadtests.routing_driver import Record, Sample

__all__ = [
    "MODES", "TARGETS", "RunResult", "Target", "load_max_over_mean", "longest_over_bound", "percentile",
    "results_table", "share_max_over_mean", "summarize", "target_rows",
]

MODES = ("random", "least_inflight", "vllm_queue", "prefix_affinity")
BASELINE = "vllm_queue"


def percentile(values: Sequence[float], q: float) -> float | None:
    """The `q`-th percentile (0..100), linear between the closest ranks (numpy's default); None if empty."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def share_max_over_mean(counts: Sequence[float]) -> float | None:
    """The busiest replica's count over the mean count (1.0 = perfectly even); None when nothing ran."""
    if not counts or sum(counts) <= 0:
        return None
    return max(counts) / (sum(counts) / len(counts))


def load_max_over_mean(samples: Sequence[Sample]) -> float | None:
    """The mean, over samples with any load, of the busiest replica's load over the mean load."""
    ratios = [r for s in samples if (r := share_max_over_mean(s.loads)) is not None]
    return statistics.fmean(ratios) if ratios else None


def longest_over_bound(samples: Sequence[Sample], epsilon: float, interval_s: float) -> float:
    """The longest stretch (s) in which one replica's load stayed above ceil((1 + epsilon) x mean load).

    A stretch runs from its first sample over the bound to the first later sample that is not (a stretch
    still open at the end lasts until the last sample plus `interval_s`)."""
    longest = 0.0
    width = max((len(s.loads) for s in samples), default=0)
    for i in range(width):
        began: float | None = None
        for s in samples:
            mean = sum(s.loads) / len(s.loads)
            over = s.loads[i] > math.ceil((1 + epsilon) * mean)
            if over and began is None:
                began = s.t
            elif not over and began is not None:
                longest = max(longest, s.t - began)
                began = None
        if began is not None:
            longest = max(longest, samples[-1].t + interval_s - began)
    return longest


@dataclass(frozen=True)
class RunResult:
    """One (round, workload, mode) run over its measured window."""

    workload: str
    mode: str
    round: int
    requests: int  # completed within the window
    errors: int  # failed within the window
    window_s: float
    ttft_p50_s: float | None
    ttft_p90_s: float | None
    hit_rate: float | None  # the replicas' prefix-cache hits / queries (tokens) over the window
    share_max_over_mean: float | None  # requests each replica took over the window: max / mean
    load_max_over_mean: float | None  # sampled running + waiting: mean of max / mean
    longest_over_s: float  # longest stretch of one replica above ceil((1 + eps) x mean load)
    gateway_cpu_us: float | None  # gateway CPU per completed request
    gateway_cpu_share: float | None  # gateway CPU s / window s (1.0 = one core busy)

    @property
    def throughput(self) -> float:
        return self.requests / self.window_s if self.window_s > 0 else 0.0


def _delta(after: Sequence[Mapping[str, Any]], before: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    return [float(a[key]) - float(b[key]) for a, b in zip(after, before, strict=True)]


def summarize(workload: str, mode: str, round_: int, records: Sequence[Record], window: tuple[float, float],
              before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]], samples: Sequence[Sample],
              cpu_s: tuple[float | None, float | None], *, epsilon: float, interval_s: float) -> RunResult:
    """`records` ending inside `window` count; `before`/`after` are the replicas' /sim/stats at its ends, and
    `cpu_s` the gateway's CPU seconds there."""
    t0, t1 = window
    inside = [r for r in records if t0 <= r.end <= t1]
    done = [r for r in inside if r.ok]
    ttfts = [r.ttft_s for r in done if r.ttft_s is not None]
    queries, hits = sum(_delta(after, before, "prompt_tokens")), sum(_delta(after, before, "cached_tokens"))
    cpu = cpu_s[1] - cpu_s[0] if cpu_s[0] is not None and cpu_s[1] is not None else None
    return RunResult(
        workload=workload, mode=mode, round=round_, requests=len(done), errors=len(inside) - len(done),
        window_s=t1 - t0, ttft_p50_s=percentile(ttfts, 50), ttft_p90_s=percentile(ttfts, 90),
        hit_rate=hits / queries if queries > 0 else None,
        share_max_over_mean=share_max_over_mean(_delta(after, before, "requests")),
        load_max_over_mean=load_max_over_mean(samples),
        longest_over_s=longest_over_bound(samples, epsilon, interval_s),
        gateway_cpu_us=cpu * 1e6 / len(done) if cpu is not None and done else None,
        gateway_cpu_share=cpu / (t1 - t0) if cpu is not None and t1 > t0 else None,
    )


def _median(values: Sequence[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def _f(value: float | None, digits: int = 2, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _ratios(results: Sequence[RunResult], workload: str, mode: str,
            value: Callable[[RunResult], float | None]) -> list[float]:
    """Per round, `value` of `mode` over `value` of the baseline: the runs of one round are neighbours in time."""
    by = {(r.round, r.mode): r for r in results if r.workload == workload}
    out = []
    for (round_, m), r in sorted(by.items()):
        base = by.get((round_, BASELINE))
        if m != mode or base is None:
            continue
        a, b = value(r), value(base)
        if a is not None and b:
            out.append(a / b)
    return out


def _p90(r: RunResult) -> float | None:
    return r.ttft_p90_s


def _cpu(r: RunResult) -> float | None:
    return r.gateway_cpu_us


def results_table(results: Sequence[RunResult]) -> str:
    """Markdown: per workload x mode, medians over rounds, with the p90 TTFT and CPU ratios vs vllm_queue."""
    head = ("| workload | mode | requests | errors | req/s | TTFT p50 ms | TTFT p90 ms | prefix hit rate "
            "| requests max/mean | load max/mean | longest over bound s | gateway CPU µs/req | gateway CPU "
            f"| p90 TTFT / {BASELINE} | CPU / {BASELINE} |")
    lines = [head, "|" + "---|" * 2 + "---:|" * 13]
    for workload in dict.fromkeys(r.workload for r in results):
        for mode in MODES:
            runs = [r for r in results if r.workload == workload and r.mode == mode]
            if not runs:
                continue

            def med(value: Callable[[RunResult], float | None], runs: list[RunResult] = runs) -> float | None:
                return _median([value(r) for r in runs])

            p90 = _median(_ratios(results, workload, mode, _p90))
            cpu = _median(_ratios(results, workload, mode, _cpu))
            lines.append(
                f"| {workload} | {mode} | {_f(med(lambda r: r.requests), 0)} | {_f(med(lambda r: r.errors), 0)} "
                f"| {_f(med(lambda r: r.throughput), 1)} | {_f(med(lambda r: r.ttft_p50_s), 0, 1000)} "
                f"| {_f(med(lambda r: r.ttft_p90_s), 0, 1000)} | {_pct(med(lambda r: r.hit_rate))} "
                f"| {_f(med(lambda r: r.share_max_over_mean))} | {_f(med(lambda r: r.load_max_over_mean))} "
                f"| {_f(med(lambda r: r.longest_over_s), 1)} | {_f(med(_cpu), 0)} "
                f"| {_pct(med(lambda r: r.gateway_cpu_share))} | {_f(p90)} | {_f(cpu)} |")
    return "\n".join(lines)


@dataclass(frozen=True)
class Target:
    """One of the issue's targets: `mode`'s value over the baseline's in `workload`, at most `limit`."""

    name: str
    workload: str
    value: Callable[[RunResult], float | None]
    limit: float


TARGETS = (
    Target("p90 TTFT, prefix_affinity / vllm_queue", "shared", _p90, 0.5),
    Target("p90 TTFT, prefix_affinity / vllm_queue", "random", _p90, 1.1),
    Target("gateway CPU per request, prefix_affinity / vllm_queue", "shared", _cpu, 1.05),
    Target("gateway CPU per request, prefix_affinity / vllm_queue", "random", _cpu, 1.05),
)


def target_rows(results: Sequence[RunResult]) -> tuple[str, bool]:
    """Markdown: each target's median ratio over rounds (and range) with PASS/FAIL; whether all passed."""
    lines = ["| target | workload | median (range) over rounds | limit | verdict |", "|---|---|---:|---:|---|"]
    passed = True
    for t in TARGETS:
        ratios = _ratios(results, t.workload, "prefix_affinity", t.value)
        if not ratios:
            lines.append(f"| {t.name} | {t.workload} | - | ≤ {t.limit:g} | SKIP |")
            continue
        m = statistics.median(ratios)
        ok = m <= t.limit
        passed &= ok
        lines.append(f"| {t.name} | {t.workload} | {m:.2f} ({min(ratios):.2f} to {max(ratios):.2f}) "
                     f"| ≤ {t.limit:g} | {'PASS' if ok else 'FAIL'} |")
    return "\n".join(lines), passed
