"""The evaluation benchmark's pure parts: its dataset file, the bodies of its calls (the worker's, exactly),
the CPU reading, the round order, the table and its section of docs/benchmarks.md. The live run itself is the
end-to-end tests' machinery (tests/control/evaluation/test_end_to_end.py uses the same helpers)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import msgspec
import pytest

from control.evaluation.prompts import chat_body, from_row
from loadtests.docsection import write_section
from loadtests.eval_bench import (
    CallsRound,
    EvalRound,
    _section,
    bench_table,
    chat_bodies,
    group_cpu_s,
    jsonl,
    qa_rows,
    rotation,
)


def _eval(wall_s: float, cpu_s: float, items: int = 1000) -> EvalRound:
    return EvalRound(items=items, wall_s=wall_s, generation_s=wall_s / 2, gateway_cpu_s=cpu_s,
                     gateway_cpu_generation_s=cpu_s / 2, mock_cpu_s=0.1, failed=0)


def _calls(wall_s: float, serve_cpu_s: float = 0.0, client_cpu_s: float = 0.2) -> CallsRound:
    return CallsRound(calls=1000, wall_s=wall_s, client_cpu_s=client_cpu_s, serve_cpu_s=serve_cpu_s,
                      mock_cpu_s=0.1, errors=1)


def test_jsonl_is_one_utf8_object_a_line_with_non_latin_text_kept() -> None:
    rows = [{"input": "你好", "reference": "привет"}, {"input": "a\nb", "reference": "\"q\""}]
    raw = jsonl(rows)
    assert "你好".encode() in raw and b"\\u" not in raw  # not escaped: the file is what a user would upload
    assert [json.loads(line) for line in raw.decode().splitlines()] == rows
    assert raw.endswith(b"\n") and raw.count(b"\n") == 2


def test_direct_bodies_are_what_the_worker_sends_for_each_row() -> None:
    rows = qa_rows(5)
    params = {"max_tokens": 4}
    mapping = {"input": "input", "reference": "reference"}
    sent = [msgspec.json.decode(b) for b in chat_bodies(rows, "mock-model", params)]
    assert sent == [chat_body("mock-model", from_row(row, mapping), params) for row in rows]
    assert len({r["input"] for r in qa_rows(50)}) == 50  # every row its own prompt


def test_rotation_puts_each_side_first_in_turn() -> None:
    assert rotation(4) == [("eval", "gateway", "direct"), ("gateway", "direct", "eval"),
                           ("direct", "eval", "gateway"), ("eval", "gateway", "direct")]
    assert rotation(0) == []


def test_group_cpu_counts_this_process_group_and_grows_with_work() -> None:
    before = group_cpu_s(os.getpgid(0))
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:  # burn 50 ms of CPU, bounded by CPU time itself
        pass
    after = group_cpu_s(os.getpgid(0))
    assert after - before >= 0.03  # clock ticks are 10 ms
    assert group_cpu_s(2**22 + 12345) == 0.0  # no such group: nothing counted


def test_table_reports_medians_per_item_the_paired_wall_ratios_and_the_workers_own_cpu() -> None:
    evals = [_eval(10.0, 5.0), _eval(6.0, 4.0), _eval(8.0, 6.0)]
    gateways = [_calls(2.0, serve_cpu_s=0.5), _calls(1.0, serve_cpu_s=0.4), _calls(4.0, serve_cpu_s=1.0)]
    directs = [_calls(1.0, serve_cpu_s=0.01), _calls(0.5), _calls(2.0)]
    table = bench_table(evals, gateways, directs)
    assert "| wall, whole run (s) | 8.00 | 2.00 | 1.00 |" in table
    assert "| items/s, whole run | 125 | 500 | 1,000 |" in table  # median of 100, 167, 125 items/s
    assert "whole run (gateway, worker, scoring) | 5.00 | 0.50 | 0.00 |" in table  # 5 s / 1,000 items
    assert "`llmops serve`, generation only | 2.50 | | |" in table
    assert "| CPU ms/item, the client (this bench's aiohttp loop) | | 0.20 | 0.20 |" in table
    # per round: 10/1, 6/0.5, 8/2 -> median 10, range 4 to 12; generation 5/1, 3/0.5, 4/2; gateway 2, 2, 2
    assert "straight to the mock 10.00 (range 4.00 to 12.00) (generation only 5.00 (range 2.00 to 6.00))" in table
    assert "through the gateway over straight to the mock 2.00 (range 2.00 to 2.00)" in table
    # the worker's own: generation CPU per item minus the gateway's per call, per round: 2.5-0.5, 2-0.4, 3-1
    assert "minus the gateway's per call): 2.00 ms" in table
    assert "failed calls: 6" in table


def test_table_needs_one_round_of_each_side_per_round() -> None:
    with pytest.raises(ValueError, match="one round of each side per round"):
        bench_table([_eval(1.0, 1.0)], [_calls(1.0)], [])
    with pytest.raises(ValueError):
        bench_table([], [], [])


def test_section_replaces_its_own_part_of_the_doc_only(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n<!-- other:start -->\nkept\n<!-- other:end -->\n", encoding="utf-8")
    command = ".venv/bin/python -m loadtests.eval_bench --items 1000 --doc docs/benchmarks.md"
    write_section(doc, "evaluation", _section("| first |", command, 1000, 16))
    write_section(doc, "evaluation", _section("| second |", command, 1000, 16))
    text = doc.read_text(encoding="utf-8")
    assert text.count("<!-- evaluation:start") == 1 and "| second |" in text and "| first |" not in text
    assert "kept" in text and command in text
    assert "## Evaluation: 1,000 items at concurrency 16 through `llmops serve`" in text
