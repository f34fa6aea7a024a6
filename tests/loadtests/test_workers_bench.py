"""The workers benchmark's pure parts: the table and verdict, CPU summed over a process tree, arguments."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from loadtests.paired import PairedRun, process_cpu_s
from loadtests.workers_bench import _parse, tree_cpu_s, workers_table
from loadtests.wrk import WrkResult


def _wrk(rps: float) -> WrkResult:
    return WrkResult(requests=int(rps * 3), duration_s=3.0, rps=rps, p50_ms=1.0, p99_ms=2.0)


def _run(w1_rps: float, w2_rps: float, w1_cpu: float | None, w2_cpu: float | None) -> PairedRun:
    return PairedRun(_wrk(w1_rps), _wrk(w2_rps), w1_cpu, w2_cpu)


def test_table_gives_medians_ratios_and_per_core_projection() -> None:
    runs = [_run(1000, 1800, 250.0, 260.0), _run(1100, 1900, 200.0, 210.0), _run(900, 1700, 240.0, 250.0)]
    text = workers_table(runs)
    assert "3 pairs at c=64" in text
    assert "| --workers 1 | 1,000 | 240.0 | 4,167 |" in text
    assert "| --workers 2 | 1,800 | 250.0 | 4,000 |" in text
    assert "| 2 / 1 | 1.80 | 1.04 | 0.96 |" in text  # median of 1.8, 1.73, 1.89; 250/240
    assert "PASS: CPU per request with 2 workers" in text and "ratio 1.04" in text


def test_table_fails_past_ten_percent_and_skips_without_cpu() -> None:
    assert "FAIL:" in workers_table([_run(1000, 1500, 200.0, 230.0)])
    text = workers_table([_run(1000, 1500, None, None)])
    assert "SKIP:" in text and "| --workers 1 | 1,000 | - | - |" in text
    assert workers_table([]) == "(no runs)\n"


def test_tree_cpu_counts_children() -> None:
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\ninput()"
    child = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while (process_cpu_s(child.pid) or 0) < 0.25 and time.monotonic() < deadline:
            time.sleep(0.02)
        own = process_cpu_s(os.getpid())
        tree = tree_cpu_s(os.getpid())
        assert own is not None and tree is not None and tree >= own + 0.25
    finally:
        child.communicate(b"\n", timeout=10)
    assert tree_cpu_s(child.pid) is None  # reaped: unreadable


def test_arguments() -> None:
    args = _parse(["--pairs", "2", "--server-cpus", "1,2"])
    assert args.pairs == 2 and args.server_cpus == [1, 2] and args.concurrency == 64
    with pytest.raises(SystemExit):
        _parse(["--pairs", "0"])
