"""Measure several already-running servers side by side with wrk, interleaved.

The machine is shared, so background load drifts over a run. Interleaving
(for each concurrency, every target in turn) exposes all series to the same
drift, and `rounds > 1` keeps, per point, the round with the highest req/s:
interference from other processes only ever subtracts throughput, so the best
round is the least disturbed one (the same reason `timeit` reports a minimum).
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from loadtests.wrk import WrkError, WrkResult, run_wrk

__all__ = ["Series", "Target", "best_result", "sweep"]


@dataclass(frozen=True)
class Target:
    """A server to load: `url` is scheme://host:port, `body` the JSON each request POSTs."""

    key: str
    label: str
    url: str
    body: str
    path: str = "/v1/chat/completions"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Series:
    """One target's results by concurrency; `note` explains a skipped or partial series."""

    key: str
    label: str
    points: dict[int, WrkResult] = field(default_factory=dict)
    note: str = ""


def best_result(results: Sequence[WrkResult]) -> WrkResult:
    """The least disturbed run (highest req/s): a real run with its own latencies, not a blend."""
    if not results:
        raise ValueError("no results")
    return max(results, key=lambda r: r.rps)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sweep(
    targets: Sequence[Target],
    concurrencies: Sequence[int],
    duration_s: float,
    *,
    wrk_cpus: Sequence[int] | None = None,
    rounds: int = 1,
    warmup_s: float = 2.0,
) -> list[Series]:
    """Warm every target up, then wrk each (concurrency, target) pair `rounds` times; keep the best."""
    series = {t.key: Series(t.key, t.label) for t in targets}
    runs: dict[tuple[str, int], list[WrkResult]] = {}
    for t in targets:
        try:
            run_wrk(
                t.url,
                t.body,
                connections=16,
                duration_s=warmup_s,
                cpus=wrk_cpus,
                path=t.path,
                headers=t.headers,
            )
        except WrkError as exc:
            series[t.key].note = f"warm-up failed: {exc}"
    for r in range(rounds):
        for c in concurrencies:
            for t in targets:
                if series[t.key].note:
                    continue
                try:
                    res = run_wrk(
                        t.url,
                        t.body,
                        connections=c,
                        duration_s=duration_s,
                        cpus=wrk_cpus,
                        path=t.path,
                        headers=t.headers,
                    )
                except WrkError as exc:
                    series[t.key].note = f"wrk failed at c={c}: {exc}"
                    continue
                runs.setdefault((t.key, c), []).append(res)
                _log(
                    f"  round {r + 1}/{rounds} c={c:<3} {t.label:<40} {res.rps:>9.0f} req/s "
                    f"p50 {res.p50_ms:7.2f} ms  p99 {res.p99_ms:7.2f} ms  errors {res.errors}"
                )
    for (key, c), results in runs.items():
        series[key].points[c] = best_result(results)
        if rounds > 1:
            spread = statistics.pstdev(x.rps for x in results) / max(1.0, statistics.mean(x.rps for x in results))
            if spread > 0.15:
                series[key].note = (series[key].note + f" c={c} varied {spread:.0%} across rounds.").strip()
    return list(series.values())
