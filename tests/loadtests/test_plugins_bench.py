"""The plug-in benchmark's table and verdict (issue 8: three no-op plug-ins keep ≥ 0.90x)."""

from __future__ import annotations

import pytest

from loadtests.paired import PairedRun
from loadtests.plugins_bench import _parse, plugins_table
from loadtests.wrk import WrkResult


def _run(none_rps: float, noop_rps: float, none_cpu: float | None, noop_cpu: float | None) -> PairedRun:
    def wrk(rps: float) -> WrkResult:
        return WrkResult(requests=int(rps * 3), duration_s=3.0, rps=rps, p50_ms=1.0, p99_ms=2.0)

    return PairedRun(wrk(none_rps), wrk(noop_rps), none_cpu, noop_cpu)


def test_verdict_is_on_the_median_paired_ratio() -> None:
    runs = [_run(1000, 950, 200.0, 210.0), _run(1000, 800, 200.0, 250.0), _run(1000, 920, 200.0, 215.0)]
    text = plugins_table(runs)
    assert "| noop3 / none | 0.92 |" in text  # median of 0.95, 0.80, 0.92
    assert "PASS:" in text and "ratio range 0.80 to 0.95" in text
    assert "FAIL:" in plugins_table([_run(1000, 850, 200.0, 240.0)])


def test_cpu_is_optional_and_pairs_must_be_positive() -> None:
    assert "| no plug-ins | 1,000 | - |" in plugins_table([_run(1000, 950, None, None)])
    assert plugins_table([]) == "(no runs)\n"
    with pytest.raises(SystemExit):
        _parse(["--pairs", "0"])
