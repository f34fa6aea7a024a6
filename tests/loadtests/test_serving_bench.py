"""The serving benchmark's "traffic moved" rule, its table and its section of docs/benchmarks.md (the live run
itself is the end-to-end test's machinery, tests/control/serving/test_end_to_end_local.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from loadtests.docsection import write_section
from loadtests.serving_bench import Outcome, Round, _section, serving_table, until_moved


def _scripted(outcomes: list[Outcome], step_s: float = 0.01) -> tuple[list[float], Callable[[], Outcome]]:
    """A probe answering `outcomes` in turn, each `step_s` apart (a fake clock would hide the rule's use of
    the send time); the send times it saw."""
    sent: list[float] = []

    def probe() -> Outcome:
        sent.append(time.monotonic())
        time.sleep(step_s)
        return outcomes.pop(0)

    return sent, probe


def test_moved_is_the_start_of_the_final_unbroken_run_and_failures_are_counted() -> None:
    sent, probe = _scripted(["other", "wanted", "error", "other", "wanted", "wanted", "wanted"])
    started = time.monotonic()
    moved_s, errors = until_moved(probe, started, settle=3, within_s=5)
    # the lone "wanted" at [1] does not count: the run that ended the wait starts at [4]
    assert moved_s == pytest.approx(sent[4] - started, abs=0.005) and errors == 1


def test_moved_times_out_when_the_run_never_completes() -> None:
    _, probe = _scripted(["wanted", "other"] * 50, step_s=0.001)
    with pytest.raises(TimeoutError, match="not moved"):
        until_moved(probe, time.monotonic(), settle=2, within_s=0.05)


def test_table_and_section(tmp_path: Path) -> None:
    rounds = [Round(0.8, 1.0, 0.05, 0), Round(1.2, 3.0, 0.07, 2), Round(0.9, 1.1, 0.06, 0)]
    table = serving_table(rounds)
    assert "| deploy call → first 200 chat through the gateway | 0.90 | 1.20 |" in table
    assert "| 1.10 | 3.00 |" in table and "| 0.06 | 0.07 |" in table
    assert "Rounds: 3. Requests that failed during the moves: 2." in table
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n<!-- other:start -->\nkept\n<!-- other:end -->\n")
    for _ in range(2):  # rewritten in place, not appended twice
        write_section(doc, "serving", _section(table, "cmd --rounds 3", 20))
    text = doc.read_text()
    assert text.count("<!-- serving:start") == 1 and "kept" in text and "cmd --rounds 3" in text
    assert text.rstrip().endswith("<!-- serving:end -->")
