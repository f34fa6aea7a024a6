"""The prefix-aware routing benchmark: its pure helpers (percentiles, the over-bound streak, the spreads, the
workloads' messages, the table and its targets) and one tiny live run into a temporary doc."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from loadtests import routing_bench
from loadtests.routing_driver import Record, Sample
from loadtests.routing_stats import (
    RunResult,
    load_max_over_mean,
    longest_over_bound,
    percentile,
    results_table,
    share_max_over_mean,
    summarize,
    target_rows,
)
from loadtests.routing_workload import Conversation, RandomUser, SharedUser, Workload, WorkloadCfg, system_prompt

COLUMNS = ("workload", "mode", "requests", "errors", "req/s", "TTFT p50 ms", "TTFT p90 ms", "prefix hit rate",
           "requests max/mean", "load max/mean", "longest over bound s", "gateway CPU µs/req", "gateway CPU",
           "p90 TTFT / vllm_queue", "CPU / vllm_queue")


def test_percentile_is_linear_between_ranks() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 90) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([4.0, 1.0, 3.0, 2.0, 5.0], 90) == pytest.approx(4.6)  # order of the input does not matter
    assert percentile(list(map(float, range(101))), 90) == pytest.approx(90.0)


def _samples(rows: list[tuple[int, ...]], step: float = 0.25) -> list[Sample]:
    return [Sample(i * step, row) for i, row in enumerate(rows)]


def test_longest_over_bound_takes_the_longest_stretch_of_one_replica() -> None:
    # mean 3, bound ceil(1.25 x 3) = 4: replica 0 is over at 0 and 0.25 (2 samples), then at 1.0 alone
    rows: list[tuple[int, ...]] = [(5, 2, 2), (5, 2, 2), (3, 3, 3), (3, 3, 3), (5, 2, 2), (3, 3, 3)]
    assert longest_over_bound(_samples(rows), 0.25, 0.25) == pytest.approx(0.5)
    # replica 2's stretch is still open at the end: it lasts to the last sample plus one interval
    rows = [(3, 3, 3), (2, 2, 5), (2, 2, 5), (2, 2, 5)]
    assert longest_over_bound(_samples(rows), 0.25, 0.25) == pytest.approx(0.75)
    # at the bound is not over it; an idle fleet is never over
    assert longest_over_bound(_samples([(4, 2, 3), (0, 0, 0)]), 0.25, 0.25) == 0.0
    assert longest_over_bound([], 0.25, 0.25) == 0.0
    # a wider epsilon tolerates more: mean 3, ceil(1.8 x 3) = 6 > 5
    assert longest_over_bound(_samples([(5, 2, 2)] * 4), 0.8, 0.25) == 0.0


def test_spread_is_max_over_mean() -> None:
    assert share_max_over_mean([10, 10, 10, 10]) == 1.0
    assert share_max_over_mean([40, 0, 0, 0]) == 4.0
    assert share_max_over_mean([0, 0]) is None
    assert load_max_over_mean(_samples([(2, 2), (3, 1), (0, 0)])) == pytest.approx((1.0 + 1.5) / 2)


def _shared(**kw: object) -> Workload:
    return Workload("shared", WorkloadCfg(customers=3, context_tokens=200, **kw))  # type: ignore[arg-type]


def test_shared_turn_two_sends_turn_one_and_its_reply_back() -> None:
    user = SharedUser(_shared(turns=(3, 3)), 0)
    first = user.next_messages()
    assert [m["role"] for m in first] == ["system", "user"]
    assert first[0]["content"] in user.w.systems
    assert 200 <= len(first[1]["content"]) <= 400  # 50-100 tokens of 4 characters
    user.answered("the reply")
    second = user.next_messages()
    assert second[:2] == first and second[2] == {"role": "assistant", "content": "the reply"}
    assert second[3]["role"] == "user" and second[3]["content"] != first[1]["content"]
    user.answered("again")
    third = user.next_messages()
    assert third[:4] == second and len(third) == 6
    user.answered("last")
    assert user.next_messages()[0]["role"] == "system" and len(user.next_messages()) == 2  # a new conversation


def test_a_failed_turn_starts_a_new_conversation() -> None:
    user = SharedUser(_shared(turns=(5, 5)), 1)
    user.next_messages()
    user.answered(None)
    assert len(user.next_messages()) == 2


def test_conversation_counts_its_turns() -> None:
    c = Conversation(0, 2, [{"role": "system", "content": "s"}])
    asked = c.ask("q")
    c.answered(asked, "a")
    assert c.turns_left == 1 and c.messages[-1] == {"role": "assistant", "content": "a"}


def test_contexts_differ_from_their_first_characters_and_are_deterministic() -> None:
    a, b = system_prompt(0, 24_000), system_prompt(1, 24_000)
    assert len(a) == len(b) == 24_000
    assert a[:64] != b[:64]  # not even a simulator block in common
    assert system_prompt(0, 24_000) == a and system_prompt(0, 24_000, seed=1) != a


def test_random_prompts_are_unique_and_sized() -> None:
    w = Workload("random", WorkloadCfg(random_tokens=(10, 20)))
    seen = set()
    for n in range(3):
        user = RandomUser(w, n)
        for _ in range(5):
            (m,) = user.next_messages()
            assert 40 <= len(m["content"]) <= 80
            seen.add(m["content"][:30])
    assert len(seen) == 15
    assert RandomUser(w, 0).next_messages() == RandomUser(w, 0).next_messages()  # the same in every run


def _stats(requests: list[int], prompt: int, cached: int) -> list[dict[str, int]]:
    return [{"requests": r, "prompt_tokens": prompt, "cached_tokens": cached} for r in requests]


def test_summarize_counts_the_window_only() -> None:
    records = [Record(0.0, 0.5, True, 0.1), Record(1.0, 1.5, True, 0.2, 100, 50), Record(1.2, 1.8, True, 0.4),
               Record(1.4, 1.9, False, error="502"), Record(2.5, 3.5, True, 9.0)]
    r = summarize("shared", "prefix_affinity", 0, records, (1.0, 3.0), _stats([1, 1], 100, 0),
                  _stats([3, 5], 1100, 500), _samples([(2, 2), (4, 0)]), (10.0, 10.5), epsilon=0.25,
                  interval_s=0.25)
    assert (r.requests, r.errors, r.window_s) == (2, 1, 2.0)
    assert r.ttft_p50_s == pytest.approx(0.3) and r.ttft_p90_s == pytest.approx(0.38)
    assert r.hit_rate == pytest.approx(0.5)  # 2 x 500 hit of 2 x 1000 queried
    assert r.share_max_over_mean == pytest.approx(4 / 3)  # 2 and 4 requests
    assert r.gateway_cpu_us == pytest.approx(250_000) and r.gateway_cpu_share == pytest.approx(0.25)
    assert r.longest_over_s == pytest.approx(0.25) and r.throughput == 1.0


def _result(workload: str, mode: str, round_: int, p90: float, cpu: float) -> RunResult:
    return RunResult(workload, mode, round_, 100, 0, 10.0, p90 / 2, p90, 0.5, 1.1, 1.2, 0.5, cpu, 0.1)


def test_table_has_every_column_and_targets_take_per_round_ratios() -> None:
    results = []
    for round_ in range(3):
        results += [_result("shared", "vllm_queue", round_, 1.0 + round_, 1000),
                    _result("shared", "prefix_affinity", round_, 0.2 * (1 + round_), 1000 + 40 * round_),
                    _result("random", "vllm_queue", round_, 1.0, 1000),
                    _result("random", "prefix_affinity", round_, 1.2, 1000),
                    _result("random", "random", round_, 2.0, 900)]
    table = results_table(results)
    head = table.splitlines()[0]
    assert [c.strip() for c in head.strip("|").split("|")] == list(COLUMNS)
    rows = table.splitlines()[2:]
    assert len(rows) == 5 and all(r.count("|") == len(COLUMNS) + 1 for r in rows)
    assert "| shared | prefix_affinity | 100 | 0 | 10.0 | 200 | 400 | 50% |" in table
    assert rows[2].startswith("| random | random |") and rows[2].endswith("| 2.00 | 0.90 |")  # ratios to vllm_queue
    targets, passed = target_rows(results)
    assert "| p90 TTFT, prefix_affinity / vllm_queue | shared | 0.20 (0.20 to 0.20) | ≤ 0.5 | PASS |" in targets
    assert "| random | 1.20 (1.20 to 1.20) | ≤ 1.1 | FAIL |" in targets
    assert "| shared | 1.04 (1.00 to 1.08) | ≤ 1.05 | PASS |" in targets
    assert not passed


def test_rotation_puts_each_mode_first_in_turn() -> None:
    orders = routing_bench.rotation(["a", "b", "c"], 4)
    assert [o[0] for o in orders] == ["a", "b", "c", "a"] and all(sorted(o) == ["a", "b", "c"] for o in orders)


def test_tiny_live_run_writes_its_section(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n")
    started = time.monotonic()
    assert routing_bench.main([
        "--replicas", "2", "--rounds", "1", "--duration", "1.5", "--warmup", "0.5", "--modes",
        "vllm_queue,prefix_affinity", "--customers", "4", "--context-tokens", "400", "--random-tokens", "100-400",
        "--users", "4", "--think", "0.05", "--output-tokens", "8", "--decode-tokens-per-s", "400",
        "--prefill-tokens-per-s", "20000", "--gateway-cpu", "-1", "--load-cpu", "-1", "--doc", str(doc),
    ]) == 0
    assert time.monotonic() - started < 50
    text = doc.read_text()
    assert text.count("<!-- routing:start") == 1 and "## Prefix-aware routing (issue 16)" in text
    assert "--replicas 2 --rounds 1" in text and "`cache_blocks` 75" in text  # 1.5 x 4 x 25 / 2
    rows = [line for line in text.splitlines() if line.startswith(("| shared |", "| random |"))]
    assert len(rows) == 4
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == len(COLUMNS)
        assert int(cells[2].replace(",", "")) > 0 and cells[3] == "0"  # requests completed, none failed
        assert "-" not in (cells[6], cells[11])  # a TTFT and a CPU reading
    assert "| p90 TTFT, prefix_affinity / vllm_queue | shared |" in text
