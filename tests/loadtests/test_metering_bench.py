"""The metering benchmark's table, verdict and docs section (issue 9: metering on keeps ≥ 0.90x)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.metering_bench import _parse, metering_table, write_doc
from loadtests.paired import PairedRun
from loadtests.wrk import WrkResult


def _run(off_rps: float, on_rps: float, off_cpu: float | None, on_cpu: float | None) -> PairedRun:
    def wrk(rps: float) -> WrkResult:
        return WrkResult(requests=int(rps * 3), duration_s=3.0, rps=rps, p50_ms=1.0, p99_ms=2.0)

    return PairedRun(wrk(off_rps), wrk(on_rps), off_cpu, on_cpu)


def test_verdict_is_on_the_median_paired_ratio() -> None:
    runs = [_run(1000, 950, 200.0, 210.0), _run(1000, 800, 200.0, 250.0), _run(1000, 920, 200.0, 215.0)]
    text = metering_table(runs)
    assert "| on / off | 0.92 |" in text and "| metering on (postgresql) | 920 |" in text
    assert "PASS:" in text and "ratio range 0.80 to 0.95" in text
    assert "FAIL:" in metering_table([_run(1000, 850, 200.0, 240.0)], "sqlite")
    assert metering_table([]) == "(no runs)\n"


def test_doc_section_is_replaced_not_duplicated(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nkept\n\n<!-- other:start -->\nx\n<!-- other:end -->\n")
    write_doc(doc, metering_table([_run(1000, 950, 200.0, 210.0)]), "cmd one", "postgresql", (10, 12, 12))
    write_doc(doc, metering_table([_run(1000, 990, 200.0, 201.0)]), "cmd two", "postgresql", (20, 21, 21))
    text = doc.read_text()
    assert text.count("<!-- metering:start") == 1 and text.count("<!-- metering:end -->") == 1
    assert "cmd two" in text and "cmd one" not in text and "| on / off | 0.99 |" in text
    assert "kept" in text and "<!-- other:start -->" in text
    assert "answered 20 requests; its database held 21 usage records and rollups summing to 21" in text


def test_pairs_must_be_positive() -> None:
    with pytest.raises(SystemExit):
        _parse(["--pairs", "0"])
