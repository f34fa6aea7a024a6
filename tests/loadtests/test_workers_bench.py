"""The workers benchmark's pure parts: the table and verdict, CPU summed over a process tree, arguments."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from loadtests.paired import process_cpu_s
from loadtests.workers_bench import Sample, _parse, tree_cpu_s, workers_table


def _round(w1: float, indep2: float, w2: float) -> list[Sample]:
    return [Sample("w1", w1, 4000.0), Sample("indep2", indep2, 3800.0), Sample("w2", w2, 3700.0)]


def test_table_gives_medians_ratios_and_per_core_projection() -> None:
    samples = [*_round(250.0, 280.0, 290.0), *_round(200.0, 230.0, 240.0), *_round(240.0, 270.0, 275.0)]
    text = workers_table(samples)
    assert "3 rounds" in text
    assert "| --workers 1, c=64 | 4,000 | 240.0 | 4,167 |" in text
    assert "| --workers 2, c=64 | 3,700 | 275.0 | 3,636 |" in text
    assert "two independent processes / one: 1.12" in text  # 270 / 240
    assert "`--workers 2` / two independent processes: 1.02" in text  # 275 / 270
    assert "FAIL: CPU per request with 2 workers" in text and "ratio 1.15" in text
    assert "PASS: --workers 2 costs" in text


def test_table_passes_within_ten_percent_and_needs_every_series() -> None:
    assert "PASS: CPU per request with 2 workers" in workers_table(_round(200.0, 205.0, 210.0))
    assert workers_table(_round(200.0, 205.0, 210.0)[:2]) == "(no runs)\n"
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
    args = _parse(["--rounds", "2", "--server-cpus", "1,2"])
    assert args.rounds == 2 and args.server_cpus == [1, 2] and args.duration == 3.0
    with pytest.raises(SystemExit):
        _parse(["--rounds", "0"])
